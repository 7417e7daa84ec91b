"""The method files are package data: a wheel built from the repository, installed (not editable) in a
fresh virtual environment, finds every one of them, includes resolve, and an LRP method compiles.

This builds a wheel and installs it with its runtime dependencies into a new venv (about 20 s when
pip's cache is warm; pip needs the package index the rest of the suite was installed from)."""
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = sorted(p.name for p in (ROOT / "rules").glob("*.toml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, text=True, timeout=300)
    (path,) = out.glob("nnxplain-*.whl")
    return path


def test_wheel_holds_every_rule_file(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    packaged = sorted(Path(n).name for n in names if n.startswith("nnxplain/rules/") and n.endswith(".toml"))
    assert packaged == RULE_FILES and len(RULE_FILES) > 25


def test_installed_wheel_finds_its_methods(wheel, tmp_path):
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    installed = subprocess.run(pip + [str(wheel)], capture_output=True, text=True, timeout=600)  # with its dependencies
    assert installed.returncode == 0, installed.stderr[-2000:]
    script = (
        "import nnxplain, pathlib, sys\n"
        "assert 'site-packages' in nnxplain.__file__, nnxplain.__file__\n"
        "print('\\n'.join(nnxplain.methods()))\n"
        "m = nnxplain.compile(sys.argv[1], ['epsilon_gamma_box', 'lrp.sequential_preset_b_flat'],"
        " params={'low': -1.0, 'high': 1.0})\n"
        "print('outputs', [o.name for o in m.graph.output])\n"
    )
    done = subprocess.run([str(python), "-c", script, str(ROOT / "models" / "digits_cnn.onnx")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[:-1] == sorted(n[:-len(".toml")] for n in RULE_FILES if not n.startswith("_"))
    assert lines[-1] == "outputs ['logits', 'epsilon_gamma_box', 'lrp.sequential_preset_b_flat']"
