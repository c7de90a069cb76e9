"""The run record of a folder run, ``DIR/.onnx-gig-run.jsonl``: what ``--resume`` needs to finish a job.

A run over thousands of images gets interrupted: Ctrl-C, a preempted machine, a lost Ray head. Its figures
are complete (written atomically), but the tables are written at the end. The record keeps one line per
image as soon as its files are written, so a second run with ``--resume`` skips what is done, explains the
rest (earlier failures too: a file may have been fixed) and writes the tables as if one run had done it all.
It stays after a finished run, so ``--resume`` also adds images that appeared in the folder since.

The first line is the run's fingerprint: the model's contents (sha256) and every option that changes a
figure, a row or which files are written. Resuming with a different one is refused: its figures would not
match the rest. Each image's line holds its input's size and modification time (a photo replaced since is
explained again) and the name its files got (kept when it runs again). A line cut short by a kill is the
last one: it is dropped, and its image runs again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

from .errors import InputError

RECORD = ".onnx-gig-run.jsonl"
FORMAT = 1


def input_key(path: str | os.PathLike) -> str:
    """How the record names an input: its real path, whatever relative form the command line used."""
    return os.path.normcase(os.path.realpath(path))


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's contents: the same model copied, touched or mounted elsewhere is the same model."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    return h.hexdigest()


def input_stamp(path: str | os.PathLike) -> list:
    """An input's size and modification time: a photo replaced at the same path is explained again."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    return [st.st_size, st.st_mtime_ns]


def settings_changed(earlier: dict, now: dict) -> str:
    """What differs between an earlier run's fingerprint and this one's, in a few words ("" if nothing)."""
    changed = [k for k in sorted(set(earlier) | set(now)) if earlier.get(k) != now.get(k)]

    def said(k: str) -> str:
        a, b = earlier.get(k), now.get(k)
        if all(isinstance(v, str) and v.startswith("file sha256 ") for v in (a, b)):
            return f"{k}: a file with other contents now"  # two digests say nothing a reader can use
        return f"{k}: {a!r} then, {b!r} now"
    return "; ".join(said(k) for k in changed[:4])


def fingerprint(model: str | os.PathLike, options: Any, *, figures: bool, npy: bool) -> dict:
    """The run's identity: the model's contents and every option that shows in its outputs, as drawn."""
    from .heatmap import default_cmap

    targets = getattr(options, "targets", None)
    opts = dataclasses.asdict(dataclasses.replace(options, targets=None) if targets is not None else options)
    opts.pop("targets", None)  # absent unless given: runs recorded before --targets existed still resume
    if targets is not None:  # class folders by their root; a label file's classes are checked image by image
        from .targets import record_identity

        opts["targets"] = record_identity(targets)
    base = str(opts.get("baseline")).strip()
    if base and Path(base).is_file():  # a baseline file is named by its contents
        opts["baseline"] = f"file sha256 {file_digest(base)}"
    else:
        opts["baseline"] = base.lower()
    opts["cmap"] = opts.get("cmap") or default_cmap(opts.get("sign", "absolute"))  # the colour map drawn
    return {"onnx_gig_run": FORMAT, "model_sha256": file_digest(model), **{k: opts[k] for k in sorted(opts)},
            "figures": bool(figures), "npy": bool(npy)}


class RunRecord:
    """Read an earlier run's record, then append this run's lines (each flushed as it is written)."""

    def __init__(self, out_dir: str | os.PathLike, header: dict) -> None:
        self.path = Path(out_dir) / RECORD
        self.header = header
        self._file = None

    def exists(self) -> bool:
        return self.path.is_file()

    def read(self) -> dict[str, dict]:
        """The earlier run's entries by input key (the latest line wins), after checking its fingerprint."""
        try:
            text = self.path.read_text(encoding="utf-8")
            lines = text.splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read {self.path} ({exc}); --force starts the run over") from None
        entries: dict[str, dict] = {}
        for n, line in enumerate(lines):
            try:
                item = json.loads(line)
                if not isinstance(item, dict) or (n > 0 and not _entry_shape(item)):
                    raise ValueError("not a record line")
            except ValueError:
                if n == len(lines) - 1 and n > 0 and not text.endswith("\n"):
                    break  # cut short by a kill while it was written: that image runs again
                raise InputError(f"{self.path} line {n + 1} is damaged; --force starts the run over") from None
            if n == 0:
                self._check(item)
            else:
                entries[item["input"]] = item
        return entries

    def _check(self, earlier: dict) -> None:
        if earlier.get("onnx_gig_run") != FORMAT:
            raise InputError(f"{self.path} was not written by this version of onnx-gig; --force starts the run over")
        said = settings_changed(earlier, self.header)
        if said:
            raise InputError(f"{self.path.parent} holds a run with other settings ({said}); resume it with the "
                             "same model and options, or --force to start over, or another --out-dir")

    def start(self, append: bool) -> None:
        """Open the record: append to the earlier run's, or begin a new one with this run's fingerprint."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if append:
                _drop_cut_line(self.path)  # a line a kill cut short goes: read() skipped it, its image reruns
            # a file name that is not UTF-8 (bytes held as surrogates) is written as JSON's \udcff escape,
            # which json.loads reads back to the same name
            self._file = open(self.path, "a" if append else "w", encoding="utf-8", errors="backslashreplace")
            if not append or self._file.tell() == 0:
                self._line(self.header)
        except OSError as exc:
            raise InputError(f"cannot write {self.path}: {exc.strerror or exc}; choose a writable folder") from None

    @property
    def closed(self) -> bool:
        return self._file is None

    def add(self, path: str, stem: str, row: dict) -> None:
        """One image's outcome, written after its files: a line here means its files are complete."""
        self._line({"input": input_key(path), "stamp": input_stamp(path), "stem": stem, "row": row})

    def _line(self, item: dict) -> None:
        if self._file is None:
            raise InputError(f"{self.path} is not open; start() it first")
        self._file.write(json.dumps(item, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _entry_shape(item: dict) -> bool:
    return (isinstance(item.get("input"), str) and isinstance(item.get("stem"), str) and bool(item["stem"])
            and isinstance(item.get("row"), dict) and isinstance(item.get("stamp", []), list))


def _drop_cut_line(path: Path, chunk: int = 1 << 16) -> None:
    """Cut the record back to its last complete line (read from the end: a record can hold 50,000 lines)."""
    with open(path, "r+b") as f:
        size = pos = f.seek(0, os.SEEK_END)
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            k = f.read(pos - start).rfind(b"\n")
            if k >= 0:
                end = start + k + 1
                break
            pos = start
        else:
            end = 0
        if end != size:
            f.truncate(end)


def is_done(entry: dict, out_dir: Path) -> bool:
    """Whether a recorded image needs no more work: explained from the same file as now, its files still there."""
    row = entry.get("row") or {}
    if row.get("error") or entry.get("stamp") != input_stamp(entry["input"]):
        return False
    files = [row.get("figure"), row.get("npy")]
    return all((out_dir / f).is_file() for f in files if f)


def recorded_outputs(out_dir: str | os.PathLike) -> list[Path]:
    """The figures and .npy files an earlier run's record says it wrote into ``out_dir`` (none without a record;
    damaged lines are passed over): a folder run given its own output folder does not take them as inputs."""
    d = Path(out_dir)
    try:
        lines = (d / RECORD).read_text(encoding="utf-8").splitlines()[1:]
    except (OSError, UnicodeDecodeError):
        return []
    out = []
    for line in lines:
        try:
            row = json.loads(line).get("row") or {}
        except (ValueError, AttributeError):
            continue
        out += [d / row[k] for k in ("figure", "npy") if isinstance(row.get(k), str) and row[k]]
    return out


__all__ = ["RECORD", "RunRecord", "file_digest", "fingerprint", "input_key", "is_done", "recorded_outputs",
           "settings_changed"]
