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


def test_every_picture_and_link_in_the_readme_is_in_git():
    """docs/chelsea_gig.png, the README's first picture, was once kept out of git by '*_gig.png' in .gitignore."""
    import re

    readme = (ROOT / "README.md").read_text()
    targets = {t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", readme) if "://" not in t}
    assert "docs/chelsea_gig.png" in targets
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split())
    missing = [t for t in sorted(targets) if t and t not in tracked and not (ROOT / t).is_dir()]
    assert not missing, missing
