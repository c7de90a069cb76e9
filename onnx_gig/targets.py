"""Per-image targets for a folder or dataset run: a file naming each image's class.

A validation set comes with its labels, and explaining it means explaining each image's true class, not
whatever the model predicts. ``read_targets`` reads the forms datasets ship: a two-column text file
(ImageNet's ``val.txt``: ``ILSVRC2012_val_00000001.JPEG 65``), a CSV or TSV with a header (``image,label``;
other columns ignored), or a JSON object (``{"cat.png": 281}``). A class is an index or one of the model's
labels (``tabby``, ``tabby cat``: the full label or one of its comma-separated names, any case).

``TargetTable.lookup`` finds an image by its path (relative paths in the file are taken from the file's
folder), else by its file name, else by its stem, so the file need not spell paths the way the command
line does. A name given twice with different classes finds nothing: it is ambiguous.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

from .errors import InputError

# header names of the image and class columns, in the order tried (compared lowercased)
IMAGE_COLUMNS = ("image", "path", "file", "filename", "file_name", "image_path", "imageid", "image_id", "name", "id")
CLASS_COLUMNS = ("target", "label", "class", "class_index", "class_id", "class_name", "label_id", "category", "y")


def _key(path: str | os.PathLike) -> str:
    return os.path.realpath(os.fspath(path))


def _stem(name: str) -> str:
    return os.path.splitext(name)[0]


class LabelIndex:
    """Class names to indices: each full label and each of its comma-separated names, case-insensitive."""

    def __init__(self, labels: Optional[Sequence[str]]) -> None:
        self.known = labels is not None
        self.names: dict[str, int] = {}
        self.shared: set[str] = set()  # names two classes share (ImageNet's two "crane"s)
        for k, label in enumerate(labels or ()):
            for name in {str(label)} | set(str(label).split(",")):
                name = name.strip().lower()
                if name and self.names.setdefault(name, k) != k:
                    self.shared.add(name)

    def index(self, token: str) -> int:
        """The class ``token`` names: an index as written, or a label; InputError if neither."""
        text = token.strip()
        try:
            return int(text)
        except ValueError:
            pass
        if not self.known:
            raise InputError(f"class {text!r} is a name, and the model carries no labels: give class indices")
        key = text.lower()
        if key not in self.names:
            raise InputError(f"class {text!r} is not an index nor one of the model's labels")
        if key in self.shared:
            raise InputError(f"class {text!r} names more than one of the model's labels: give its index")
        return self.names[key]


def class_index(target: int | str, labels: Optional[Sequence[str]]) -> int:
    """``--target``'s class: an index as given (or written as digits), or one of the model's labels."""
    if isinstance(target, str):
        try:
            return LabelIndex(labels).index(target)
        except InputError as exc:
            raise InputError(f"--target: {exc}") from None
    return target


class TargetTable:
    """Which class to explain for each image, read from a file by ``read_targets``."""

    def __init__(self, source: str, digest: str, entries: Iterable[tuple[str, int, int]], folder: Path) -> None:
        self.source, self.digest = source, digest
        self.by_path: dict[str, int] = {}
        self.by_name: dict[str, int] = {}
        self.by_stem: dict[str, int] = {}
        self.ambiguous: set[str] = set()  # keys given different classes (by path, name or stem)
        self.lines: dict[int, int] = {}  # class -> the first line giving it (for the range check's message)
        for name, cls, line in entries:
            self.lines.setdefault(cls, line)
            norm = name.replace("\\", "/")
            base = norm.rsplit("/", 1)[-1]
            for table, key in ((self.by_path, _key(folder / norm)), (self.by_name, base), (self.by_stem, _stem(base))):
                if table.setdefault(key, cls) != cls:
                    self.ambiguous.add(key)
        if not self.lines:
            raise InputError(f"{source}: no image and class pairs in it")

    def __len__(self) -> int:
        return len(self.by_path)

    def check(self, num_classes: Optional[int]) -> None:
        """Refuse a class the model does not have, naming the file and line."""
        for cls, line in sorted(self.lines.items()):
            if cls < 0 or (num_classes is not None and cls >= num_classes):
                span = f"0..{num_classes - 1}" if num_classes is not None else "from 0"
                raise InputError(f"--targets {self.source}, line {line}: class {cls} is out of range (the model's "
                                 f"classes: {span})")

    def lookup(self, path: str | os.PathLike) -> int:
        """The class for the image at ``path``: by path, else file name, else stem; InputError if none or ambiguous."""
        name = os.path.basename(os.fspath(path))
        for table, key in ((self.by_path, _key(path)), (self.by_name, name), (self.by_stem, _stem(name))):
            if key in table and key in self.ambiguous:
                raise InputError(f"{self.source} gives '{key}' more than one class; name the image by its path there")
            if key in table:
                return table[key]
        raise InputError(f"no class for it in {self.source} (looked up by path, file name and stem)")

    def check_covers(self, files: Sequence[str | os.PathLike]) -> None:
        """Refuse a file that gives none of ``files`` a class (the wrong file, or paths spelt another way)."""
        for f in files:
            try:
                self.lookup(f)
                return
            except InputError:
                continue
        if files:
            raise InputError(f"--targets {self.source} gives none of the {len(files)} images a class (e.g. "
                             f"{os.path.basename(os.fspath(files[0]))}); it names {len(self)} "
                             f"image{'' if len(self) == 1 else 's'}, matched by path, file name or stem")


Row = tuple[list[str], int]  # a row's fields and its line number


def _rows(text: str, suffix: str) -> tuple[list[Row], bool]:
    """The file's rows, and whether they are whitespace-separated: JSON pairs, or CSV/TSV/whitespace text."""
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg}, line {exc.lineno})") from None
        pairs = data.items() if isinstance(data, dict) else data
        try:
            return [([str(k), str(v)], n + 1) for n, (k, v) in enumerate(pairs)], False
        except (TypeError, ValueError):
            raise InputError("JSON targets are an object {image: class} or a list of [image, class] pairs") from None
    lines = [(n + 1, s) for n, s in enumerate(text.splitlines()) if s.strip() and not s.lstrip().startswith("#")]
    first = lines[0][1] if lines else ""
    if "\t" in first or "," in first:
        reader = csv.reader(io.StringIO("\n".join(s for _, s in lines)), delimiter="\t" if "\t" in first else ",")
        return [([c.strip() for c in row], n) for row, (n, _) in zip(reader, lines)], False
    # whitespace: "image class", where the class may hold spaces ("tiger cat") or the image may
    # ("my photo.png 281"): the first field and the rest here, the other split tried by _entries
    return [(s.split(None, 1) if len(s.split()) > 1 else [s.strip()], n) for n, s in lines], True


def _columns(rows: list[Row]) -> tuple[int, int, list[Row], Optional[int]]:
    """(image column, class column, the data rows, the line of a possible header of other names).

    A header naming known columns (IMAGE_COLUMNS, CLASS_COLUMNS) picks them and is dropped; any other
    first row is a header only if its class field turns out to be no class (``_entries`` skips it then).
    """
    if not rows:
        return 0, 1, rows, None
    header = [c.strip().lower() for c in rows[0][0]]
    img = next((header.index(c) for c in IMAGE_COLUMNS if c in header), None)
    cls = next((header.index(c) for c in CLASS_COLUMNS if c in header), None)
    if img is not None and cls is not None and img != cls:
        return img, cls, rows[1:], None
    return 0, 1, rows, (rows[0][1] if len(rows) > 1 and len(rows[0][0]) > 1 else None)


def _entries(rows: list[Row], spaced: bool, names: LabelIndex, where: str) -> list[tuple[str, int, int]]:
    """(image, class, line) for every row; a row that is neither is one InputError naming its line."""
    image_col, class_col, rows, header_line = _columns(rows)
    out = []
    for fields, line in rows:
        if len(fields) <= max(image_col, class_col) or not fields[image_col]:
            raise InputError(f"{where}, line {line}: expected an image and a class, got {' '.join(fields)!r}")
        splits = [(fields[image_col], fields[class_col])]
        other = " ".join(fields).rsplit(None, 1) if spaced else []
        if len(other) == 2:
            splits.append((other[0], other[1]))
        problem = None
        for image, token in splits:
            try:
                out.append((image, names.index(token), line))
                break
            except InputError as exc:
                problem = problem or exc
        else:
            if line != header_line:
                raise InputError(f"{where}, line {line}: {problem}")
    return out


def read_targets(path: str | os.PathLike, labels: Optional[Sequence[str]] = None) -> TargetTable:
    """Read a targets file (see the module's docstring); ``labels`` (the model's) resolve class names."""
    from .journal import file_digest

    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"--targets {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"--targets {p}: not a text file (UTF-8 expected)") from None
    try:
        rows, spaced = _rows(text, p.suffix.lower())
    except InputError as exc:
        raise InputError(f"--targets {p}: {exc}") from None
    entries = _entries(rows, spaced, LabelIndex(labels), f"--targets {p}")
    return TargetTable(str(p), file_digest(p), entries, p.resolve().parent)


__all__ = ["TargetTable", "class_index", "read_targets"]
