"""The README's support matrix is what `nnxplain support` says today: `python -m models.support_matrix
--check` exits non-zero when it is stale, and this test runs it, so CI fails on a stale matrix."""
import subprocess
import sys
from pathlib import Path

from models.support_matrix import BEGIN, END, updated

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_support_matrix_is_current():
    result = subprocess.run([sys.executable, "-m", "models.support_matrix", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr + "\nregenerate it: python -m models.support_matrix"


def test_a_changed_matrix_is_written_between_the_markers_only():
    text = f"intro\n{BEGIN}\n| old | table |\n{END}\noutro\n"
    assert updated(text, "| new |") == f"intro\n{BEGIN}\n| new |\n{END}\noutro\n"
    assert updated(updated(text, "| new |"), "| new |") == updated(text, "| new |"), "current: unchanged"
