"""The PatternNet paper's signal-quality measure rho (Eq. 1, Fig. 3) on the trained digits model.

Patterns are fitted on the first half of models/digits_train.npz, the regression v of Eq. 1 on
the second half, and rho is measured on models/digits_test.npz, as the paper splits ImageNet.
Prints rho per layer (mean over the layer's neurons) for random directions, S_w, S_a and S_a+-.

    python benchmarks/signal_quality.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from nnxplain import patterns as P
from nnxplain.signal_quality import signal_quality

MODELS = Path(__file__).resolve().parent.parent / "models"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    model = MODELS / "digits_cnn.onnx"
    train, test = np.load(MODELS / "digits_train.npz")["x"], np.load(MODELS / "digits_test.npz")["x"]
    fit_part, regress_part = train[:len(train) // 2], train[len(train) // 2:]
    fitted = {t: P.fit(model, fit_part, t) for t in P.PATTERN_TYPES}
    rho = signal_quality(model, {"random": "random", "S_w": "weights", "S_a": fitted["linear"],
                                 "S_a+-": (fitted["relu"], fitted["relu.negative"])}, regress_part, test)
    layers = list(rho["S_w"])
    width = max(map(len, layers))
    print(f"{'layer':<{width}} " + " ".join(f"{name:>7}" for name in rho))
    for layer in layers:
        print(f"{layer:<{width}} " + " ".join(f"{rho[name][layer]:>7.3f}" for name in rho))
    if args.json:
        Path(args.json).write_text(json.dumps(rho, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
