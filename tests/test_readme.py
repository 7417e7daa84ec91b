"""Every code block of the README runs as written: the shell blocks (the Quick start and the pictures
after it, in one shell, against the bundled models), the Python block, and each method file compiled on
the bundled digits model. Blocks tagged `text` are synopses; the test command block is what CI runs.
The blocks write into a temporary folder (TMPDIR points at pytest's), never into the repository."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnxplain
from nnxplain.methods import parse_method
from nnxplain.runtime import session

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SETUP = 'python3 -m venv .venv && .venv/bin/pip install -q . && export PATH="$PWD/.venv/bin:$PATH" && '


def blocks():
    """(language, text, the line before the block) for every fenced block."""
    found = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```$", README, re.M | re.S):
        before = README[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        found.append((match.group(1), match.group(2), before))
    return found


def test_every_block_has_a_known_kind():
    kinds = [lang for lang, _, _ in blocks()]
    assert kinds and set(kinds) <= {"sh", "python", "toml", "text"}, kinds
    assert kinds.count("sh") == 3 and kinds.count("python") == 1 and kinds.count("toml") == 3


def shell_script():
    """The shell blocks but the test command, in order; the Quick start's setup (a fresh virtual
    environment and `pip install .`) is this test's own environment."""
    script = [block for lang, block, before in blocks() if lang == "sh" and before != "<!-- test command -->"]
    assert script[0].startswith(SETUP), "the Quick start sets up .venv and puts it on PATH first"
    script[0] = script[0][len(SETUP):]
    return "set -euo pipefail\n" + "".join(script)


def test_shell_blocks_run_and_leave_the_repository_clean(tmp_path):
    before = _untracked()
    env = {**os.environ, "TMPDIR": str(tmp_path),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", shell_script()], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "nnxplain: warning" not in done.stderr and "onnxruntime" not in done.stderr, done.stderr
    out = Path(re.search(r"files in (\S+)", done.stdout).group(1))
    assert out.parent == tmp_path
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(["patterns.npz", "explainer.onnx", "explanation.npy", "gradient.png",
                              "guided_backprop.png", "lrp.epsilon.png", "deep_taylor.png", "grid.png",
                              "prototypes.png", "prototypes.npy"])
    assert np.load(out / "explanation.npy").shape == (360, 1, 8, 8)
    assert np.load(out / "prototypes.npy").shape == (10, 1, 8, 8)
    assert "(12 inputs x 5 methods)" in done.stdout
    assert _untracked() == before, "the README's commands write nothing into the repository"


def test_python_block_runs(tmp_path):
    [code] = [block for lang, block, _ in blocks() if lang == "python"]
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    [out] = [folder for folder in tmp_path.iterdir() if (folder / "explainer.onnx").exists()]
    assert sorted(p.name for p in out.iterdir()) == ["explainer.onnx", "patterns.npz"]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_method_files_work_on_the_digits_model(index, tmp_path):
    text = [block for lang, block, _ in blocks() if lang == "toml"][index]
    path = tmp_path / "my_method.toml"
    path.write_text(text)
    model = nnxplain.compile(ROOT / "models" / "digits_cnn.onnx", [str(path)])
    x = np.load(ROOT / "models" / "digits_test.npz")["x"][:4]
    feeds = {"input": x}
    sess = session(model)
    from nnxplain.sampling import noise_feeds
    feeds.update(noise_feeds(sess, x))
    r = sess.run(["my_method"], feeds)[0]
    assert r.shape == x.shape and np.isfinite(r).all() and np.abs(r).max() > 0
    assert parse_method(__import__("tomllib").loads(text), "my_method").description


def _untracked() -> set[str]:
    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                          text=True)
    return set(done.stdout.splitlines()) if done.returncode == 0 else set()
