"""``--resume``: an interrupted folder run finished as one run would have written it, images added later, and
what a run record refuses. Real folders, the shipped MobileNetV2, real sessions, the real CLI."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODELS, interrupt_folder_run, photo_folder
from onnx_gig import ExplainOptions, ResultWriter, collect_inputs, explain_many
from onnx_gig.errors import InputError
from onnx_gig.fileio import uninterrupted
from onnx_gig.journal import RECORD

STEPS = 4
PHOTOS = MODELS / "images"
OPTIONS = ExplainOptions(steps=STEPS)


def photos(folder: Path, n: int) -> Path:
    """``n`` photos p00.png... (the shipped three in turn) and a corrupt one, broken.png."""
    folder.mkdir(parents=True)
    shipped = sorted(PHOTOS.glob("*.png"))
    for i in range(n):
        shutil.copy(shipped[i % len(shipped)], folder / f"p{i:02d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return folder


def run(model, inputs, out: Path, *, stop_after: int | None = None, resume: bool = False, npy: bool = False,
        options: ExplainOptions = OPTIONS) -> ResultWriter:
    """A folder run as the CLI does it; ``stop_after`` images in, it dies as Ctrl-C would stop it."""
    listing = collect_inputs(inputs)
    w = ResultWriter(out, options=options, npy=npy, inputs=[str(f) for f in listing.files], model=model,
                     resume=resume)
    with w:
        left, _ = w.pending(listing)
        if left.files:
            for r in explain_many(model, left, options):
                w.write(w.reindex(r))
                if stop_after is not None and w.written - w.resumed >= stop_after:
                    raise KeyboardInterrupt
    return w


def table(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def same_rows(a: list[dict], b: list[dict]) -> None:
    assert [r["image"] for r in a] == [r["image"] for r in b]
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            try:
                assert float(x[k]) == pytest.approx(float(y[k]), rel=1e-5, abs=1e-6), k
            except ValueError:
                assert x[k] == y[k], k


def stamps(out: Path) -> dict[str, tuple[int, int]]:
    """Each output file's (inode, mtime_ns): unchanged means never rewritten."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir() if p.suffix in (".png", ".npy")}


def test_resume_finishes_an_interrupted_run_as_one_run_would(demo_gig, tmp_path):
    src = photos(tmp_path / "in", 5)
    ref = run(demo_gig, [src], tmp_path / "ref", npy=True)
    assert (ref.explained, len(ref.failures)) == (5, 1)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(demo_gig, [src], out, stop_after=3, npy=True)  # broken.png (failed), p00, p01
    assert not (out / "results.csv").exists()  # no table from an interrupted run
    lines = (out / RECORD).read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["steps"] == STEPS  # the fingerprint, then one line per image
    before = stamps(out)
    assert len(before) == 4  # 2 figures, 2 .npy

    w = run(demo_gig, [src], out, resume=True, npy=True)
    assert (w.resumed, w.explained, len(w.failures)) == (2, 5, 1)  # the failed file was tried again
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "ref"))
    same_rows(table(out), table(tmp_path / "ref"))
    after = stamps(out)
    assert {k: after[k] for k in before} == before  # what the first run wrote was kept, not redone


class CtrlCWhileDrawing(ResultWriter):
    """A writer that gets a real SIGINT while it draws its second figure, as a user's Ctrl-C would land."""

    def figure(self, result):
        if self.written == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return super().figure(result)


def test_ctrl_c_while_an_image_is_written_lands_after_its_record_line(demo_gig, tmp_path):
    src = photos(tmp_path / "in", 3)
    listing = collect_inputs([src])
    out = tmp_path / "out"
    w = CtrlCWhileDrawing(out, options=OPTIONS, inputs=[str(f) for f in listing.files], model=demo_gig)
    results = explain_many(demo_gig, listing, OPTIONS)
    with pytest.raises(KeyboardInterrupt):
        with w:
            for r in results:
                w.write(r)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is Python's own again
    figures = sorted(p.name for p in out.glob("*_gig.png"))
    lines = [json.loads(x) for x in (out / RECORD).read_text().splitlines()[1:]]
    # broken.png failed first; the image being drawn when Ctrl-C came was finished, recorded, then the run stopped
    assert len(lines) == 2 and len(figures) == 1 and [x["row"]["figure"] for x in lines if x["row"]["figure"]] == figures
    again = ResultWriter(out, options=OPTIONS, inputs=[str(f) for f in listing.files], model=demo_gig, resume=True)
    assert again.resumed == 1  # the failure is tried again; the figure is never redone


def test_a_second_ctrl_c_is_not_held():
    """A write stalled on a full or remote disk can still be stopped: the second Ctrl-C lands at once."""
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append(1)  # held: the block goes on
            os.kill(os.getpid(), signal.SIGINT)
            reached.append(2)
    assert reached == [1] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resume_adds_new_images_and_redoes_what_is_gone_or_failed(demo_gig, tmp_path):
    src = photos(tmp_path / "in", 3)
    out = tmp_path / "out"
    first = run(demo_gig, [src], out)
    assert len(first.failures) == 1
    shutil.copy(PHOTOS / "camera.png", src / "broken.png")  # the corrupt file was fixed
    (src / "new").mkdir()
    shutil.copy(PHOTOS / "coffee.png", src / "new" / "p01.png")  # a new image whose stem is taken
    shutil.copy(PHOTOS / "chelsea.png", src / "new" / "p02.png")  # ... by an image to be redone
    (out / "p02_gig.png").unlink()  # a figure that went missing
    kept = stamps(out)
    os.utime(src / "p00.png", ns=(1, 1))  # a photo replaced since (its modification time changed)

    listing = collect_inputs([src])
    w = ResultWriter(out, options=OPTIONS, inputs=[str(f) for f in listing.files], model=demo_gig, resume=True)
    left, todo = w.pending(listing)
    assert sorted(Path(f).relative_to(src).as_posix() for f in left.files) == [
        "broken.png", "new/p01.png", "new/p02.png", "p00.png", "p02.png"]
    with w:
        for r in explain_many(demo_gig, left, OPTIONS):
            w.write(w.reindex(r))
    assert (w.resumed, w.explained, len(w.failures)) == (1, 6, 0)
    rows = {Path(r["image"]).relative_to(src).as_posix(): r for r in table(out)}
    figures = {k: r["figure"] for k, r in rows.items()}
    assert figures == {"broken.png": "broken_gig.png", "new/p01.png": "p01-2_gig.png", "new/p02.png": "p02-2_gig.png",
                       "p00.png": "p00_gig.png", "p01.png": "p01_gig.png", "p02.png": "p02_gig.png"}  # names kept
    assert rows["broken.png"]["error"] == ""
    now = stamps(out)
    assert now["p01_gig.png"] == kept["p01_gig.png"] and now["p00_gig.png"] != kept["p00_gig.png"]
    assert (out / "p02_gig.png").is_file()


def test_a_run_record_refuses_other_settings_and_names_damage(demo_gig, tmp_path):
    src = photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    run(demo_gig, [src], out)
    names = [str(f) for f in collect_inputs([src]).files]
    with pytest.raises(InputError, match=r"holds an earlier run .*--resume finishes it"):
        ResultWriter(out, options=OPTIONS, inputs=names, model=demo_gig)
    with pytest.raises(InputError, match=r"other settings \(steps: 4 then, 5 now\)"):
        ResultWriter(out, options=ExplainOptions(steps=5), inputs=names, model=demo_gig, resume=True)
    copy = tmp_path / "copy_gig.onnx"
    shutil.copy(demo_gig, copy)  # the same model elsewhere (another node's mount): its contents decide
    assert ResultWriter(out, options=OPTIONS, inputs=names, model=copy, resume=True).resumed == 2
    from onnx_gig import convert

    other = convert(MODELS / "mobilenet_v2.onnx", tmp_path / "ig_gig.onnx", method="ig").path
    with pytest.raises(InputError, match=r"other settings \(model_sha256: "):
        ResultWriter(out, options=OPTIONS, inputs=names, model=other, resume=True)
    assert ResultWriter(out, options=ExplainOptions(steps=STEPS, cmap="inferno", baseline="Zeros"), inputs=names,
                        model=demo_gig, resume=True).resumed == 2  # the defaults spelt out draw the same
    with pytest.raises(InputError, match="give one of them"):
        ResultWriter(out, options=OPTIONS, inputs=names, model=demo_gig, resume=True, overwrite=True)

    record = out / RECORD
    lines = record.read_text().splitlines()
    record.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])  # a kill cut the last line short
    w = run(demo_gig, [src], out, resume=True)
    assert (w.resumed, w.written) == (1, 3)  # that image ran again; the rest was taken over
    assert run(demo_gig, [src], out, resume=True).resumed == 2  # and the record reads cleanly again after
    lines = record.read_text().splitlines()
    record.write_text(lines[0] + "\n{oops\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(InputError, match=r"line 2 is damaged; --force starts the run over"):
        ResultWriter(out, options=OPTIONS, inputs=names, model=demo_gig, resume=True)
    record.write_text(lines[0] + '\n{"input": "x", "row": {}}\n')  # no name: a line not written by onnx-gig
    with pytest.raises(InputError, match=r"line 2 is damaged"):
        ResultWriter(out, options=OPTIONS, inputs=names, model=demo_gig, resume=True)
    w = ResultWriter(out, options=OPTIONS, inputs=names, model=demo_gig, overwrite=True)  # --force starts over
    assert w.resumed == 0 and w.pending(collect_inputs([src]))[1] == [0, 1, 2]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "onnx_gig.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_cli_resume_after_ctrl_c_writes_the_rest_once(demo_gig, tmp_path):
    src = photo_folder(tmp_path / "in", 10)
    out = tmp_path / "out"
    interrupt_folder_run(["explain", demo_gig, src, "--out-dir", out, "--steps", "8", "--max-memory", "1G"], out)
    before = stamps(out)
    assert 0 < len(before) < 10 and not (out / "results.csv").exists()

    again = run_cli("explain", demo_gig, src, "--out-dir", out, "--steps", "8")
    assert again.returncode == 2 and "--resume finishes it" in again.stderr  # never silently redone
    done = run_cli("explain", demo_gig, src, "--out-dir", out, "--steps", "8", "--resume")
    assert done.returncode == 0, done.stderr
    assert f"10 explained ({len(before)} of them by the earlier run)" in done.stdout
    rows = table(out)
    assert [Path(r["image"]).name for r in rows] == [f"p{i:02d}.png" for i in range(10)]
    assert all(r["error"] == "" and (out / r["figure"]).is_file() for r in rows)
    after = stamps(out)
    assert len(after) == 10 and {k: after[k] for k in before} == before
    gone = run_cli("explain", tmp_path / "nope_gig.onnx", src, "--out-dir", out, "--resume")
    assert gone.returncode == 2 and len(gone.stderr.strip().splitlines()) == 1 and "nope_gig.onnx" in gone.stderr
    nothing = run_cli("explain", demo_gig, src, "--out-dir", out, "--steps", "8", "--resume")
    assert nothing.returncode == 0 and "10 explained (10 of them by the earlier run)" in nothing.stdout
    assert stamps(out) == after
