"""The run record of a folder run, ``DIR/.onnx-gig-run.jsonl``: what ``--resume`` needs to finish a job.

A run over thousands of images gets interrupted: Ctrl-C, a preempted machine, a lost Ray head. Its figures
are complete (written atomically), but the tables are written at the end. The record keeps one line per
image as soon as its files are written, so a second run with ``--resume`` skips what is done, explains the
rest (earlier failures too: a file may have been fixed) and writes the tables as if one run had done it all.
It stays after a finished run, so ``--resume`` also adds images that appeared in the folder since.

The first line is the run's fingerprint: the model file (path, size, modification time) and every option
that changes a figure, a row or which files are written. Resuming with a different one is refused: its
figures would not match the rest. A line cut short by a kill is the last one, and it is ignored.
"""
from __future__ import annotations

import dataclasses
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


def fingerprint(model: str | os.PathLike, options: Any, *, figures: bool, npy: bool) -> dict:
    """The run's identity: the model file and every option that shows in its outputs."""
    p = Path(model).resolve()
    st = p.stat()
    opts = dataclasses.asdict(options)
    base = str(opts.get("baseline"))
    if base and Path(base).is_file():  # a baseline file is named by its real path and its contents' date
        bst = Path(base).stat()
        opts["baseline"] = f"{input_key(base)} ({bst.st_size} bytes, mtime_ns {bst.st_mtime_ns})"
    return {"onnx_gig_run": FORMAT, "model": str(p), "model_size": st.st_size, "model_mtime_ns": st.st_mtime_ns,
            **{k: opts[k] for k in sorted(opts)}, "figures": bool(figures), "npy": bool(npy)}


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
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read {self.path} ({exc}); --force starts the run over") from None
        entries: dict[str, dict] = {}
        for n, line in enumerate(lines):
            try:
                item = json.loads(line)
                if not isinstance(item, dict):
                    raise ValueError("not an object")
            except ValueError:
                if n == len(lines) - 1 and n > 0:
                    break  # cut short by a kill while it was written: that image runs again
                raise InputError(f"{self.path} line {n + 1} is damaged; --force starts the run over") from None
            if n == 0:
                self._check(item)
            elif "input" in item and "row" in item:
                entries[str(item["input"])] = item
        return entries

    def _check(self, earlier: dict) -> None:
        if earlier.get("onnx_gig_run") != FORMAT:
            raise InputError(f"{self.path} was not written by this version of onnx-gig; --force starts the run over")
        changed = [k for k in sorted(set(earlier) | set(self.header)) if earlier.get(k) != self.header.get(k)]
        if changed:
            said = "; ".join(f"{k}: {earlier.get(k)!r} then, {self.header.get(k)!r} now" for k in changed[:4])
            raise InputError(f"{self.path.parent} holds a run with other settings ({said}); resume it with the "
                             "same model and options, or --force to start over, or another --out-dir")

    def start(self, append: bool) -> None:
        """Open the record: append to the earlier run's, or begin a new one with this run's fingerprint."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a" if append else "w", encoding="utf-8")
            if not append or self._file.tell() == 0:
                self._line(self.header)
            elif not _ends_a_line(self.path):
                self._file.write("\n")  # end the line a kill cut short: the next one starts clean
        except OSError as exc:
            raise InputError(f"cannot write {self.path}: {exc.strerror or exc}; choose a writable folder") from None

    @property
    def closed(self) -> bool:
        return self._file is None

    def add(self, path: str, stem: str, row: dict) -> None:
        """One image's outcome, written after its files: a line here means its files are complete."""
        self._line({"input": input_key(path), "stem": stem, "row": row})

    def _line(self, item: dict) -> None:
        if self._file is None:
            raise InputError(f"{self.path} is not open; start() it first")
        self._file.write(json.dumps(item, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _ends_a_line(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def is_done(entry: dict, out_dir: Path) -> bool:
    """Whether a recorded image needs no more work: explained, and every file its row names still there."""
    row = entry.get("row") or {}
    if row.get("error"):
        return False
    files = [row.get("figure"), row.get("npy")]
    return all((out_dir / f).is_file() for f in files if f)


__all__ = ["RECORD", "RunRecord", "fingerprint", "input_key", "is_done"]
