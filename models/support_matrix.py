"""The support matrices: every model of the zoo and every architecture (both exports) times every
built-in method, and the same for the modern zoo (models/modern.py: transformers and today's CNNs), by
the logic of `nnxplain support` (nnxplain.support.each_method_support). Writes each Markdown table into
README.md between its markers, and the reasons for what does not apply below it.

    python -m models.support_matrix            # rewrite the README section
    python -m models.support_matrix --check    # exit 1 if the README section is out of date
"""
from __future__ import annotations

import sys
from pathlib import Path

from nnxplain.load import load
from nnxplain.methods import available, load_method
from nnxplain.support import each_method_support

from . import archs, modern, zoo

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- support matrix: begin (python -m models.support_matrix) -->", "<!-- support matrix: end -->"
MODERN_BEGIN = "<!-- modern support matrix: begin (python -m models.support_matrix) -->"
MODERN_END = "<!-- modern support matrix: end -->"


def models():
    """(column label, path): the classic architectures (d: the dynamo export), then the zoo."""
    for name in archs.ARCHS:
        for exporter in archs.EXPORTERS:
            yield name + (" d" if exporter == "dynamo" else ""), archs.path(name, exporter)
    yield "keras_cnn", archs.ARCH_DIR / "keras_cnn.onnx"
    for name in archs.PARTIAL:
        yield name, archs.path(name, "legacy")
    for name in zoo.MODELS:
        yield name, zoo.MODELS_DIR / f"{name}.onnx"


def modern_models():
    """(column label, path): the modern zoo, each architecture's legacy then dynamo (d) export."""
    for name in modern.BUILDERS:
        for suffix, mark in (("", ""), (".dynamo", " d")):
            yield name + mark, modern.MODERN_DIR / f"{name}{suffix}.onnx"


def verdicts_of(path) -> list[tuple[bool, str]]:
    """(applicable, note) of every built-in method on one model."""
    return [(ok, note) for _, ok, note in each_method_support(load(path), [load_method(m) for m in available()])]


def matrix(columns):
    """methods, labels, {method name: [cell per model]}, {reason: number} for the (label, path) columns"""
    from concurrent.futures import ProcessPoolExecutor
    methods = [load_method(m) for m in available()]
    labels, paths = zip(*columns)
    with ProcessPoolExecutor() as pool:  # the models in parallel: each prepares once and builds every method
        rows = list(pool.map(verdicts_of, paths))
    verdicts = {m.name: [row[i] for row in rows] for i, m in enumerate(methods)}
    # reasons numbered by how often they occur (then by first occurrence): the numbers stay put as methods come
    reasons = [note for row in verdicts.values() for ok, note in row if not ok]
    order = sorted(dict.fromkeys(reasons), key=lambda note: (-reasons.count(note), reasons.index(note)))
    notes = {note: i + 1 for i, note in enumerate(order)}
    cells = {name: ["✓" if ok else f"✗{notes[note]}" for ok, note in row] for name, row in verdicts.items()}
    return methods, labels, cells, notes


def table(columns, legend: str) -> str:
    methods, labels, cells, notes = matrix(columns)
    lines = ["| method | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    lines += [f"| `{m.name}` | " + " | ".join(cells[m.name]) + " |" for m in methods]
    lines.append("")
    lines.append("✓: applies (given its required parameters: `lrp.alpha_beta` alpha or beta, `deep_taylor.bounded`, `deep_taylor.bounded.conservative` "
                 "and `epsilon_gamma_box` low and high; `pattern.net` and `pattern.attribution` fitted patterns). "
                 "`d`: the dynamo export" + legend + "." + (" ✗n: does not apply, because (`nnxplain support` says):" if notes else ""))
    for note, key in notes.items():
        lines.append(f"{key}. {note}")
    return "\n".join(lines)


def updated(text: str, matrix: str, begin: str = BEGIN, end: str = END) -> str:
    """The README text with `matrix` between the markers `begin` and `end`."""
    if begin not in text or end not in text:
        raise SystemExit(f"{README}: the markers {begin} ... {end} are missing")
    before, rest = text.split(begin, 1)
    _, after = rest.split(end, 1)
    return f"{before}{begin}\n{matrix}\n{end}{after}"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    text = README.read_text()
    new = updated(text, table(models(), "; `keras_cnn`: converted from Keras by tf2onnx"))
    new = updated(new, table(modern_models(), ""), MODERN_BEGIN, MODERN_END)
    if "--check" in argv:
        if new != text:
            print("README.md: the support matrix is out of date (python -m models.support_matrix)")
            return 1
        print("README.md: the support matrix is current")
        return 0
    README.write_text(new)
    print(f"wrote the support matrix into {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
