"""Per-image targets for a folder or dataset run: a file naming each image's class.

A validation set comes with its labels, and explaining it means explaining each image's true class, not
whatever the model predicts. ``read_targets`` reads the forms datasets ship: ``name class`` lines
(ImageNet's ``val.txt``: ``ILSVRC2012_val_00000001.JPEG 65``), a CSV or TSV with a header (``image,label``;
other columns ignored), or JSON (``{"cat.png": 281}``, ``[["cat.png", 281]]``, or records
``[{"image": "cat.png", "label": 281}]``). A class is an index, one of the model's labels (``tabby cat``:
the full label, or one of its comma-separated names; any case), or for an ImageNet-1k classifier a WordNet ID
(``n02123159``, synsets.py), as ImageNet's own ``LOC_val_solution.csv`` and ``val/<synset>/`` folders give it.

A folder instead of a file is a dataset in the ImageFolder layout (``val/tabby/cat1.png``): each image's class
is the name of the folder it is in, directly below that one (``ClassFolders``).

``TargetTable.lookup`` finds an image by its path (relative paths in the file are taken from the folder the
file was named in), else by its file name, else by its stem, so the file need not spell paths the way the
command line does. A name given two classes finds nothing: it is ambiguous.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from .errors import InputError
from .imageio import IMAGE_SUFFIXES
from .synsets import CLASSES, synset_index, synset_token

# header names of the image and class columns, in the order tried (compared lowercased)
IMAGE_COLUMNS = ("image", "path", "file", "filename", "file_name", "image_path", "imageid", "image_id", "name", "id")
CLASS_COLUMNS = ("target", "label", "class", "class_index", "class_id", "class_name", "label_id", "category", "y",
                 "predictionstring")  # ImageNet's LOC_val_solution.csv: 'n01751748 151 111 262 307 ...'
_INDEX = re.compile(r"[+-]?[0-9]+(?:\.0*)?")  # 281, and 281.0 as a float column writes it (ASCII digits only)
_DECIMAL = re.compile(r"[+-]?[0-9]*\.[0-9]+")


def _norm(name: str) -> str:
    """A class name as compared: lowercase, spaces collapsed ('Tiger  Cat ' is 'tiger cat')."""
    return " ".join(name.split()).lower()


def _key(path: str | os.PathLike) -> str:
    return os.path.realpath(os.fspath(path))


def _stem(name: str) -> str:
    """``name`` without an image suffix (``x.JPEG`` -> ``x``; ``img.0001`` stays, its dot is no suffix)."""
    root, ext = os.path.splitext(name)
    return root if ext.lower() in IMAGE_SUFFIXES else name


class LabelIndex:
    """Class names to indices: full labels first, then each comma-separated name, case-insensitive, then
    ImageNet-1k's WordNet IDs (for a model with ImageNet's labels, or with none and ``classes`` unknown or 1000)."""

    def __init__(self, labels: Optional[Sequence[str]], classes: Optional[int] = None) -> None:
        self.known = labels is not None
        self.labels, self.classes = labels, classes
        self.wordnet = False  # a WordNet ID was read with neither labels nor a class count to confirm it by
        self.full: dict[str, int] = {}
        self.names: dict[str, int] = {}
        self.shared: dict[str, set[int]] = {}  # names two classes share (ImageNet's two "crane" classes)
        for k, label in enumerate(labels or ()):
            key = _norm(str(label))
            if self.full.setdefault(key, k) != k:
                self.shared.setdefault(key, {self.full[key]}).add(k)
        for k, label in enumerate(labels or ()):
            for name in map(_norm, str(label).split(",")):
                if name and name not in self.full and self.names.setdefault(name, k) != k:
                    self.shared.setdefault(name, {self.names[name]}).add(k)

    def index(self, token: Any) -> int:
        """The class ``token`` names: an index as written, or a label; InputError if neither."""
        if isinstance(token, bool) or not isinstance(token, (int, float, str)):
            raise InputError(f"class {json.dumps(token)} is neither an index nor a label")
        if isinstance(token, (int, float)):
            if float(token) != int(token):
                raise InputError(f"class {token} is not a whole number")
            return int(token)
        text = token.strip()
        if _INDEX.fullmatch(text):
            return int(float(text)) if "." in text else int(text)
        if _DECIMAL.fullmatch(text):
            raise InputError(f"class {text} is not a whole number")
        key = _norm(text)
        wnid = synset_token(text)
        if wnid is not None and not (key in self.full or key in self.names or key in self.shared):
            self.wordnet = self.wordnet or (self.labels is None and self.classes is None)
            return synset_index(wnid, self.labels, self.classes)
        if not self.known:
            raise InputError(f"class {text!r} is a name, and the model carries no labels: give a class index")
        if key in self.shared:
            raise InputError(f"class {text!r} names more than one of the model's labels "
                             f"({', '.join(map(str, sorted(self.shared[key])))}): give its index")
        k = self.full.get(key, self.names.get(key))
        if k is None:
            raise InputError(f"class {text!r} is neither an index nor one of the model's labels")
        return k


def identity(targets: "Targets | str | os.PathLike") -> str:
    """What stands for ``targets`` in a run's fingerprint, read or not yet read (a label file by its contents,
    class folders by their root): the run record (journal.py) and eval's checkpoints (evaluate.py) use it."""
    if isinstance(targets, Targets):
        return targets.identity()
    if os.path.isdir(targets):
        return f"class folders of {os.path.realpath(targets)}"
    from .journal import file_digest

    return f"file sha256 {file_digest(targets)}"


def class_index(target: int | str, labels: Optional[Sequence[str]], classes: Optional[int] = None) -> int:
    """``--target``'s class: an index as given (or written as digits), one of the model's labels, or an
    ImageNet-1k WordNet ID (``classes``: the model's class count, which confirms one where no labels do)."""
    if isinstance(target, str):
        try:
            return LabelIndex(labels, classes).index(target)
        except InputError as exc:
            raise InputError(f"--target: {exc}") from None
    return target


class Targets:
    """Per-image classes for a run: a label file's table (TargetTable) or a dataset's class folders
    (ClassFolders). ``source`` names it in messages, ``digest`` stands for it in the run's fingerprint."""

    source: str
    digest: str
    where: dict[int, str]  # class -> where it is given first ("line 3", "folder 'tabby'"), for the range check
    wordnet: bool = False  # classes were read as ImageNet-1k WordNet IDs with nothing to confirm them by yet

    def lookup(self, path: str | os.PathLike) -> int:
        """The class for the image at ``path``; InputError (one line) if it has none."""
        raise NotImplementedError

    def identity(self) -> str:
        """What stands for it in a run's fingerprint (journal.py, evalparts.py): a resumed run needs the same."""
        return f"file sha256 {self.digest}"

    def __len__(self) -> int:
        raise NotImplementedError

    def said(self) -> str:
        """Which class each image gets, in words (eval's results.md)."""
        raise NotImplementedError

    def _names(self) -> str:
        """What it holds, for the refusal of a file that covers none of the images."""
        raise NotImplementedError

    def _check_wordnet(self, num_classes: Optional[int]) -> None:
        if self.wordnet and num_classes is not None and num_classes != CLASSES:
            raise InputError(f"--targets {self.source} names classes by ImageNet-1k WordNet IDs (n01440764, ...), "
                             f"and the model has {num_classes} classes, not {CLASSES}: give indices")

    def check(self, num_classes: Optional[int]) -> None:
        """Refuse a class the model does not have, naming where it is given."""
        self._check_wordnet(num_classes)
        for cls, where in sorted(self.where.items()):
            if cls < 0 or (num_classes is not None and cls >= num_classes):
                span = f"0..{num_classes - 1}" if num_classes is not None else "from 0"
                raise InputError(f"--targets {self.source}, {where}: class {cls} is out of range (the model's "
                                 f"classes: {span})")

    def check_covers(self, files: Sequence[str | os.PathLike]) -> None:
        """Refuse targets that give none of ``files`` a class (the wrong file, or paths spelt another way)."""
        for f in files:
            try:
                self.lookup(f)
                return
            except InputError:
                continue
        if files:
            n = len(files)
            raise InputError(f"--targets {self.source} gives none of the {n} image{'' if n == 1 else 's'} a class (e.g. "
                             f"{os.path.basename(os.fspath(files[0]))}); {self._names()}")


class TargetTable(Targets):
    """Which class to explain for each image, read from a label file by ``read_targets``."""

    def __init__(self, source: str, digest: str, entries: Iterable[tuple[str, int, str]], folder: Path) -> None:
        self.source, self.digest = source, digest
        self.by_path: dict[str, int] = {}
        self.by_name: dict[str, int] = {}
        self.by_stem: dict[str, int] = {}
        self.ambiguous: set[str] = set()  # keys given different classes (by path, name or stem)
        self.where = {}
        for name, cls, where in entries:
            self.where.setdefault(cls, where)
            norm = name.replace("\\", "/")
            base = norm.rsplit("/", 1)[-1]
            for table, key in ((self.by_path, _key(folder / norm)), (self.by_name, base), (self.by_stem, _stem(base))):
                if table.setdefault(key, cls) != cls:
                    self.ambiguous.add(key)
        if not self.where:
            raise InputError(f"--targets {source}: no image and class pairs in it")

    def __len__(self) -> int:
        return len(self.by_path)

    def said(self) -> str:
        return f"the class {Path(self.source).name} gives each image"

    def _names(self) -> str:
        return f"it names {len(self)} image{'' if len(self) == 1 else 's'}, matched by path, file name or stem"

    def lookup(self, path: str | os.PathLike) -> int:
        """The class for the image at ``path``: by path, else file name, else stem; InputError if none or ambiguous."""
        name = os.path.basename(os.fspath(path))
        for table, key in ((self.by_path, _key(path)), (self.by_name, name), (self.by_stem, _stem(name))):
            if key in table:
                if key in self.ambiguous:
                    hint = "" if table is self.by_path else "; name the image by its path there"
                    raise InputError(f"{self.source} gives '{key}' more than one class{hint}")
                return table[key]
        raise InputError(f"no class for it in {self.source} (looked up by path, file name and stem)")


class ClassFolders(Targets):
    """Each image's class is the folder it is in below ``root``: the ImageFolder layout (root/tabby/cat1.png).

    A class folder is named by a class index or one of the model's labels. A folder directly in ``root`` that
    names no class (a misspelt class, the run's own --out-dir) is not refused: its images fail, each naming
    it, as an image a label file does not name does; a root with no class folder at all is refused.
    """

    def __init__(self, root: Path, names: LabelIndex) -> None:
        import hashlib

        self.root = Path(os.path.abspath(root))
        self.source = str(root)
        try:
            folders = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("."))
        except OSError as exc:
            raise InputError(f"--targets {root}: {exc.strerror or exc}") from None
        self.classes: dict[str, int] = {}
        self.unknown: dict[str, str] = {}  # folders that name no class, and why
        for name in folders:
            try:
                self.classes[name] = names.index(name)
            except InputError as exc:
                self.unknown[name] = str(exc)
        if not self.classes:
            why = f" ('{next(iter(self.unknown))}': {next(iter(self.unknown.values()))})" if self.unknown else ""
            raise InputError(f"--targets {root}: no class folders in it (root/<class>/<image>, the class an index "
                             f"or one of the model's labels){why}")
        self.where = {}
        for name, cls in self.classes.items():
            self.where.setdefault(cls, f"folder '{name}'")
        self.digest = hashlib.sha256(os.path.realpath(self.root).encode("utf-8", "surrogateescape")).hexdigest()
        self.wordnet = names.wordnet

    def identity(self) -> str:
        """The root, not its folders: a class folder fixed or added since lets --resume go on (its images are
        new inputs there), as images added to a folder do."""
        return identity(self.root)

    def check(self, num_classes: Optional[int]) -> None:
        """A class folder the model has no class for fails its images, as a misspelt one does."""
        self._check_wordnet(num_classes)
        for name, cls in list(self.classes.items()):
            if cls < 0 or (num_classes is not None and cls >= num_classes):
                span = f"0..{num_classes - 1}" if num_classes is not None else "from 0"
                self.unknown[name] = f"class {cls} is out of range (the model's classes: {span})"
                del self.classes[name]
        if not self.classes:
            name = next(iter(self.unknown))
            raise InputError(f"--targets {self.source}: no class folders in it ('{name}': {self.unknown[name]})")

    def __len__(self) -> int:
        return len(self.classes)

    def said(self) -> str:
        return f"the class its folder below {self.root.name} names"

    def _names(self) -> str:
        return f"its class folders: {len(self)}" + (f"; folders that name no class: {', '.join(sorted(self.unknown))}"
                                                    if self.unknown else "")

    def lookup(self, path: str | os.PathLike) -> int:
        """The class of the folder directly below ``root`` that holds ``path``; InputError if none."""
        p = os.fspath(path)
        # as given, then with links resolved (Ray's rows hold resolved paths; the root may be a link)
        first = []
        for here, root in ((os.path.abspath(p), str(self.root)), (os.path.realpath(p), os.path.realpath(self.root))):
            first = os.path.relpath(here, root).replace("\\", "/").split("/", 1)
            if len(first) == 2 and first[0] not in ("..", "."):
                break
        if len(first) == 2 and first[0] in self.unknown:
            raise InputError(f"its folder {first[0]!r} in {self.source} names no class: {self.unknown[first[0]]}")
        if len(first) < 2 or first[0] in ("..", ".") or first[0] not in self.classes:
            raise InputError(f"not in one of the class folders of {self.source}")
        return self.classes[first[0]]


Row = tuple[list[Any], str]  # a row's fields and where it is ("line 3", "entry 3")


def _json_rows(text: str) -> list[Row]:
    """JSON's pairs: an object {image: class}, a list of [image, class], or records {image: .., label: ..}."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if isinstance(data, dict):
        return [([k, v], f"entry {n + 1}") for n, (k, v) in enumerate(data.items())]
    form = ("JSON targets are an object {image: class}, a list of [image, class] pairs, or a list of records "
            f"with an image field ({', '.join(IMAGE_COLUMNS[:3])}, ...) and a class field "
            f"({', '.join(CLASS_COLUMNS[:3])}, ...)")
    rows = []
    for n, item in enumerate(data if isinstance(data, list) else [None]):
        if isinstance(item, dict):
            low = {str(k).lower(): v for k, v in item.items()}
            img = next((c for c in IMAGE_COLUMNS if c in low), None)
            cls = next((c for c in CLASS_COLUMNS if c in low), None)
            if img is None or cls is None:
                raise InputError(f"entry {n + 1}: {form}")
            rows.append(([str(low[img]), low[cls]], f"entry {n + 1}"))
        elif isinstance(item, list) and len(item) == 2:
            rows.append(([str(item[0]), item[1]], f"entry {n + 1}"))
        else:
            raise InputError(form)
    return rows


def _text_rows(text: str, suffix: str) -> tuple[list[Row], bool]:
    """CSV/TSV/whitespace rows, and whether whitespace-separated. The form: by the suffix (.csv, .tsv), else a
    tab or comma on every line (the first field without spaces, for commas), else ``name class`` lines."""
    lines = [(n + 1, s) for n, s in enumerate(text.splitlines()) if s.strip()]
    tab = suffix in (".tsv", ".tab") or (suffix != ".csv" and lines and all("\t" in s for _, s in lines))
    comma = suffix == ".csv" or (not tab and lines and all("," in s for _, s in lines)
                                 and not any(c.isspace() for c in lines[0][1].split(",", 1)[0].strip()))
    if tab or comma:
        reader = csv.reader(io.StringIO("\n".join(s for _, s in lines)), delimiter="\t" if tab else ",")
        return [([c.strip() for c in row], f"line {n}") for row, (n, _) in zip(reader, lines)], False
    # '#' starts a comment here; the class may hold spaces ("tiger cat") or the image may ("my photo.png 281"):
    # the first field and the rest here, the other split tried by _entries
    return [(s.split(None, 1) if len(s.split()) > 1 else [s.strip()], f"line {n}")
            for n, s in lines if not s.lstrip().startswith("#")], True


def _columns(rows: list[Row], text_form: bool) -> tuple[int, int, list[Row], Optional[str]]:
    """(image column, class column, the data rows, where a possible header of other names is).

    A header naming known columns (IMAGE_COLUMNS, CLASS_COLUMNS) picks them and is dropped. In text, a first
    row of other names (no dot or slash in its image field, so not a file) is a header if its class field
    turns out to be no class (``_entries`` skips it then); anything else that is no class is refused.
    """
    if not rows or not text_form:
        return 0, 1, rows, None
    header = [str(c).strip().lower() for c in rows[0][0]]
    img = next((header.index(c) for c in IMAGE_COLUMNS if c in header), None)
    cls = next((header.index(c) for c in CLASS_COLUMNS if c in header), None)
    if img is not None and cls is not None and img != cls:
        return img, cls, rows[1:], None
    first = str(rows[0][0][0])
    named = len(rows) > 1 and len(rows[0][0]) > 1 and not any(c in first for c in "./\\")
    return 0, 1, rows, (rows[0][1] if named else None)


def _entries(rows: list[Row], spaced: bool, text_form: bool, names: LabelIndex, where: str
             ) -> list[tuple[str, int, str]]:
    """(image, class, where) for every row; a row that is neither is one InputError naming its line."""
    image_col, class_col, rows, header = _columns(rows, text_form)
    out = []
    for fields, at in rows:
        if len(fields) <= max(image_col, class_col) or not str(fields[image_col]).strip():
            raise InputError(f"{where}, {at}: expected an image and a class, got {' '.join(map(str, fields))!r}")
        splits = [(str(fields[image_col]).strip(), fields[class_col])]
        other = " ".join(fields).rsplit(None, 1) if spaced else []
        if len(other) == 2:
            splits.append((other[0], other[1]))
        problem = None
        for image, token in splits:
            try:
                out.append((image, names.index(token), at))
                break
            except InputError as exc:
                problem = problem or exc
        else:
            if at != header:
                raise InputError(f"{where}, {at}: {problem}")
    return out


def read_targets(path: str | os.PathLike, labels: Optional[Sequence[str]] = None) -> Targets:
    """Read a targets file (see the module's docstring), or a dataset folder whose subfolders are the classes
    (ClassFolders); ``labels`` (the model's: ``GigModel(...).labels``) resolve class names. Relative image
    paths in a file are taken from the folder it is named in."""
    from .journal import file_digest

    p = Path(path)
    if p.is_dir():  # a dataset in the ImageFolder layout: the folder names are the classes
        return ClassFolders(p, LabelIndex(labels))
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"--targets {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"--targets {p}: not a text file (UTF-8 expected)") from None
    suffix = p.suffix.lower()
    try:
        rows, spaced = (_json_rows(text), False) if suffix == ".json" else _text_rows(text, suffix)
    except InputError as exc:
        raise InputError(f"--targets {p}: {exc}") from None
    names = LabelIndex(labels)
    entries = _entries(rows, spaced, suffix != ".json", names, f"--targets {p}")
    # the folder as named (not the link's target): a label file linked into a dataset reads its paths there
    table = TargetTable(str(p), file_digest(p), entries, Path(os.path.abspath(p)).parent)
    table.wordnet = names.wordnet
    return table


__all__ = ["ClassFolders", "TargetTable", "Targets", "class_index", "identity", "read_targets"]
