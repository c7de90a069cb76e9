"""The README's promises that can drift: the ops table and the two commands."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ops_table_is_generated_from_the_registry():
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "ops_table.py"), "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "pip install -e '.[test]' && python -m pytest -q"
    assert command in readme and command in ci
