"""Atomic file writing: an output appears complete or not at all, never half-written.

Every output goes to a temporary file in the destination folder and is renamed into place only
when it is complete, so a crash, a full disk or Ctrl-C leaves the old file (or nothing) behind.
"""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Iterator

from .errors import InputError


class Protected:
    """Input files no output may overwrite, known by file identity (device, inode; links followed). The
    identities are read once, when an output first exists: a folder run protects every input and checks each
    of its outputs against all of them, which one stat per input and output made quadratic (20,000 images:
    125 ms each instead of 20)."""

    def __init__(self, paths: Iterable[str | os.PathLike | None]) -> None:
        self.paths = [p for p in paths if p is not None and not isinstance(p, (bytes, bytearray))]
        self._ids: dict[tuple[int, int], str | os.PathLike] | None = None

    def __iter__(self) -> Iterator[str | os.PathLike]:
        return iter(self.paths)

    def holding(self, dest: os.stat_result) -> str | os.PathLike | None:
        """The protected input that is the file ``dest`` (its stat), or None."""
        if self._ids is None:
            ids: dict[tuple[int, int], str | os.PathLike] = {}
            for p in self.paths:
                try:
                    st = os.stat(p)
                except (OSError, ValueError):
                    continue
                ids.setdefault((st.st_dev, st.st_ino), p)
            self._ids = ids
        return self._ids.get((dest.st_dev, dest.st_ino))


def check_output(path: str | os.PathLike, protect: Iterable[str | os.PathLike | None] = (),
                 overwrite: bool = True) -> Path:
    """Refuse an output path before any work: an input file, a folder, or (unless ``overwrite``) an existing file.

    ``protect`` lists input files that must never be overwritten by this output (a ``Protected`` where many
    outputs are checked against the same inputs).
    """
    dest = Path(path)
    if str(path) == "":
        raise InputError("the output path is empty; give a file name")
    try:
        st = os.stat(dest)
    except (OSError, ValueError):
        st = None
    if st is not None:
        p = (protect if isinstance(protect, Protected) else Protected(protect)).holding(st)
        if p is not None:
            raise InputError(f"refusing to overwrite the input file {p} with an output; choose another output path")
    if dest.is_dir():
        raise InputError(f"the output {dest} is a folder; give a file name")
    if dest.exists() and not overwrite:
        raise InputError(f"the output {dest} already exists; pass --force to overwrite it, or choose another path")
    parent = dest.parent
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise InputError(f"cannot write {dest}: {folder} is not a folder")
            break
    return dest


def _default_mode() -> int:
    """0666 less the process umask: what ``open(path, "w")`` gives a new file (mkstemp gives 0600)."""
    try:  # Linux: read the umask without changing it (os.umask is process-wide, racy under threads)
        with open("/proc/self/status") as f:
            mask = next(int(ln.split()[1], 8) for ln in f if ln.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, protect: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    ``protect`` lists input files that must never be overwritten by this output. On any failure,
    KeyboardInterrupt included, the temporary file is removed and ``path`` is left as it was;
    an ``OSError`` while creating, writing or renaming becomes one readable :class:`InputError`.
    """
    dest = check_output(path, protect)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        os.chmod(tmp, _default_mode())  # mkstemp makes 0600; outputs get the mode a plain open() would
    except OSError as exc:
        raise InputError(f"cannot write {dest}: {exc.strerror or exc}; choose a writable folder") from None
    try:
        try:
            yield Path(tmp)
            os.replace(tmp, dest)
        except OSError as exc:
            raise InputError(f"cannot write {dest}: {exc.strerror or exc}; nothing was written "
                             f"(check the free space and the permissions of {dest.parent})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, then deliver it: writes that must land together (an image's files and
    its line in the run record) are never split by it. A second Ctrl-C (a write stalled on a full or remote
    disk) is not held. Outside the main thread, where no signal arrives, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list = []

    def hold(signum, frame) -> None:
        if held:  # pressed again: the user means it now
            raise KeyboardInterrupt
        held.append(frame)

    previous = signal.signal(signal.SIGINT, hold)
    if previous is None:  # a handler not set from Python: Python's own is the nearest to restore
        previous = signal.default_int_handler
    try:
        yield
    except BaseException:  # the block failed, or the second Ctrl-C: that goes on as it is
        signal.signal(signal.SIGINT, previous)
        raise
    signal.signal(signal.SIGINT, previous)
    if held:
        if callable(previous):
            previous(signal.SIGINT, held[0])  # Python's own handler: KeyboardInterrupt, raised here
        else:
            signal.raise_signal(signal.SIGINT)  # SIG_DFL or SIG_IGN: what the signal would have done
