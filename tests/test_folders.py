"""What a folder run takes as input: a run's own outputs never, symlinked folders once, unreadable folders named,
hidden files only when asked for, one path given as a plain string, and --resume's tables keeping every image.

Real folders, real symlinks, the shipped MobileNetV2 through the real CLI; the unreadable-folder case drops
root's permission override with setpriv, so it holds when the tests run as root.
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODELS
from onnx_gig import ExplainOptions, collect_inputs, explain_many

PHOTOS = MODELS / "images"
STEPS = 2


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "onnx_gig.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def two_photos(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(PHOTOS / "chelsea.png", folder / "cat.png")
    shutil.copy(PHOTOS / "coffee.png", folder / "cup.png")
    return folder


def test_one_path_as_a_plain_string_or_path_is_one_input(tmp_path):
    folder = two_photos(tmp_path / "p")
    for given in (str(folder), folder, str(folder / "cat.png")):
        files, missing = collect_inputs(given)
        assert not missing and [f.name for f in files] == (["cat.png"] if str(given).endswith(".png")
                                                          else ["cat.png", "cup.png"])


def test_explain_many_takes_one_folder_as_a_string(demo_gig, tmp_path):
    folder = two_photos(tmp_path / "p")
    got = list(explain_many(demo_gig, str(folder), ExplainOptions(steps=STEPS), device="cpu", workers=1))
    assert [Path(r.path).name for r in got] == ["cat.png", "cup.png"] and all(r.ok for r in got)


@pytest.mark.parametrize("again", ["--resume", "--force"])
def test_an_out_dir_inside_the_input_folder_is_never_an_input(demo_gig, tmp_path, again):
    """A re-run (resumed or forced) over a folder that holds its own --out-dir explains the photos only."""
    folder = two_photos(tmp_path / "p")
    out = folder / "explained"
    for extra in ([], [again]):
        r = run_cli("explain", demo_gig, folder, "--out-dir", out, "--steps", STEPS, "--npy", *extra)
        assert r.returncode == 0, r.stderr
        assert [Path(row["image"]).name for row in rows(out)] == ["cat.png", "cup.png"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "cat.npy", "cat_gig.png", "cup.npy", "cup_gig.png", "results.csv", "results.html", "results.jsonl"]


def test_photos_in_the_out_dir_are_still_inputs_and_a_glob_skips_the_figures_too(demo_gig, tmp_path):
    """Only the files a run recorded are left out: a photo the user keeps in the output folder is explained."""
    folder = two_photos(tmp_path / "p")
    shutil.move(folder / "cup.png", two_photos(folder / "sub") / "mine.png")
    for args in ([folder], [str(folder / "**" / "*.png"), "--resume"]):
        r = run_cli("explain", demo_gig, *args, "--out-dir", folder / "sub", "--steps", STEPS)
        assert r.returncode == 0, r.stderr
        assert sorted(Path(row["image"]).relative_to(folder).as_posix() for row in rows(folder / "sub")) == [
            "cat.png", "sub/cat.png", "sub/cup.png", "sub/mine.png"]


def test_the_out_dir_being_the_input_folder_skips_the_figures_it_wrote(demo_gig, tmp_path):
    folder = two_photos(tmp_path / "p")
    for extra in ([], ["--resume"]):
        r = run_cli("explain", demo_gig, ".", "--steps", STEPS, *extra, cwd=folder)  # default --out-dir: "."
        assert r.returncode == 0, r.stderr
        assert [Path(row["image"]).name for row in rows(folder)] == ["cat.png", "cup.png"]
    assert "2 explained (2 of them by the earlier run)" in r.stdout
    assert not list(folder.glob("*_gig_gig.png"))


def test_symlinked_folders_are_followed_once_and_loops_end(tmp_path):
    real = two_photos(tmp_path / "real")
    top = tmp_path / "top"
    top.mkdir()
    shutil.copy(PHOTOS / "camera.png", top / "own.png")
    (top / "linked").symlink_to(real, target_is_directory=True)
    (top / "again").symlink_to(real, target_is_directory=True)  # the same real folder twice
    (real / "loop").symlink_to(top, target_is_directory=True)  # a cycle back to the top
    (top / "dangling.png").symlink_to(tmp_path / "gone.png")  # named, so its read error is shown
    files, missing = collect_inputs([top])
    names = [f.relative_to(top).as_posix() for f in files]
    assert names == ["again/cat.png", "again/cup.png", "dangling.png", "own.png"]
    assert not missing


def test_a_glob_takes_hidden_files_it_names_and_the_shortest_path_through_a_loop(tmp_path):
    folder = two_photos(tmp_path / "p")
    shutil.copy(PHOTOS / "camera.png", folder / ".dot.png")
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    assert [f.name for f in collect_inputs([folder]).files] == ["cat.png", "cup.png"]  # a walk skips hidden names
    files, missing = collect_inputs([str(folder / ".*.png")])
    assert [f.name for f in files] == [".dot.png"] and not missing
    files, _ = collect_inputs([str(folder / "**" / "*.png")])
    assert [f.relative_to(folder).as_posix() for f in files] == ["cat.png", "cup.png"]


def test_an_unreadable_folder_is_named_and_the_rest_still_found(tmp_path):
    """Without root's permission override (setpriv), a folder that cannot be listed is reported, not lost, and
    one that can be listed but not entered gives its files, whose reads then fail by name."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop root's permission override")
    top = tmp_path / "top"
    two_photos(top / "ok")
    two_photos(top / "locked")
    two_photos(top / "listonly")
    (top / "locked").chmod(0)
    (top / "listonly").chmod(0o644)
    code = ("import json, sys; from onnx_gig import collect_inputs; f, m = collect_inputs([sys.argv[1]]); "
            "print(json.dumps([[str(p) for p in f], m]))")
    try:
        r = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all",
                            sys.executable, "-c", code, str(top)], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    finally:
        (top / "locked").chmod(0o755)
        (top / "listonly").chmod(0o755)
    if r.returncode != 0 and "setpriv" in r.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {r.stderr.strip()[:200]}")
    assert r.returncode == 0, r.stderr
    import json

    files, missing = json.loads(r.stdout)
    assert [Path(f).relative_to(top).as_posix() for f in files] == [
        "listonly/cat.png", "listonly/cup.png", "ok/cat.png", "ok/cup.png"]
    assert len(missing) == 1 and missing[0][0].endswith("locked") and "cannot read this folder" in missing[0][1]


def test_resume_with_other_inputs_keeps_every_explained_image_in_the_tables(demo_gig, tmp_path):
    out = tmp_path / "out"
    first = run_cli("explain", demo_gig, PHOTOS / "coffee.png", PHOTOS / "camera.png", "--out-dir", out,
                    "--steps", STEPS)
    assert first.returncode == 0, first.stderr
    second = run_cli("explain", demo_gig, PHOTOS / "chelsea.png", PHOTOS / "coffee.png", "--out-dir", out,
                     "--steps", STEPS, "--resume")
    assert second.returncode == 0, second.stderr
    got = rows(out)
    assert [Path(r["image"]).name for r in got] == ["chelsea.png", "coffee.png", "camera.png"]
    assert all(r["figure"] and (out / r["figure"]).is_file() for r in got)


def test_no_figures_writes_the_tables_and_npy_only(demo_gig, tmp_path):
    """--no-figures: a dataset's attributions without a picture each; the same rows and arrays as with them."""
    folder = two_photos(tmp_path / "p")
    plain, with_figs = tmp_path / "plain", tmp_path / "figs"
    p = run_cli("explain", demo_gig, folder, "--no-figures", "--npy", "--out-dir", plain, "--steps", STEPS)
    q = run_cli("explain", demo_gig, folder, "--npy", "--out-dir", with_figs, "--steps", STEPS)
    assert p.returncode == q.returncode == 0, p.stderr + q.stderr
    assert "wrote 2 .npy files, results.csv" in p.stdout and "figure" not in p.stdout.split(" in ")[0]
    assert sorted(f.name for f in plain.iterdir() if not f.name.startswith(".")) == [
        "cat.npy", "cup.npy", "results.csv", "results.html", "results.jsonl"]
    a, b = rows(plain), rows(with_figs)
    assert [r["figure"] for r in a] == ["", ""] and all(r["figure"] for r in b)
    for ra, rb in zip(a, b):
        assert (ra["image"], ra["target"], ra["probability"]) == (rb["image"], rb["target"], rb["probability"])
    for n in ("cat.npy", "cup.npy"):
        assert (plain / n).read_bytes() == (with_figs / n).read_bytes()
    again = run_cli("explain", demo_gig, folder, "--no-figures", "--npy", "--out-dir", plain, "--steps", STEPS,
                    "--resume")
    assert again.returncode == 0 and "2 of them by the earlier run" in again.stdout, again.stderr
    one = run_cli("explain", demo_gig, folder / "cat.png", "--no-figures", "--steps", STEPS, cwd=tmp_path)
    assert one.returncode == 2 and "--no-figures is for folder runs" in one.stderr, one.stderr
    assert not (tmp_path / "results.csv").exists() and not (tmp_path / "cat_gig.png").exists()


def test_a_file_name_that_is_not_utf8_is_explained_recorded_and_resumed(demo_gig, tmp_path):
    """Linux file names are bytes: b'bad\\xff.png' (Python's str holds it as a surrogate) used to stop the run
    with an internal error when the record and tables were written. They now hold JSON's \\udcff escape."""
    folder = two_photos(tmp_path / "p")
    bad = os.path.join(os.fsencode(folder), b"bad\xff.png")
    shutil.copy(PHOTOS / "camera.png", bad)
    out = tmp_path / "out"
    p = run_cli("explain", demo_gig, folder, "--out-dir", out, "--steps", STEPS)
    assert p.returncode == 0, p.stderr
    got = rows(out)
    assert len(got) == 3 and os.fsdecode(bad) not in [r["image"] for r in got]  # the CSV holds the escape instead
    assert any(r["image"].endswith("bad\\udcff.png") and r["target"] for r in got)
    again = run_cli("explain", demo_gig, folder, "--out-dir", out, "--steps", STEPS, "--resume")
    assert again.returncode == 0 and "3 of them by the earlier run" in again.stdout, again.stderr
