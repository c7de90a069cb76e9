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

The file's forms are read by labelfile.py. ``TargetTable.lookup`` finds an image by its path (relative paths
in the file are taken from the folder the file was named in), else by its file name, else by its stem, among
entries whose folders agree with its own, so the file need not spell paths the way the command line does.
An image two entries give different classes is refused, naming both.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from .errors import InputError
from .imageio import IMAGE_SUFFIXES
from .labelfile import entries
from .synsets import CLASSES, imagenet_labels, synset_index, synset_token

_INDEX = re.compile(r"[+-]?[0-9]+(?:\.0*)?")  # 281, and 281.0 as a float column writes it (ASCII digits only)
_DECIMAL = re.compile(r"[+-]?[0-9]*\.[0-9]+")


def _key(path: str | os.PathLike) -> str:
    return os.path.realpath(os.fspath(path))


def _stem(name: str) -> str:
    """``name`` without an image suffix (``x.JPEG`` -> ``x``; ``img.0001`` stays, its dot is no suffix)."""
    root, ext = os.path.splitext(name)
    return root if ext.lower() in IMAGE_SUFFIXES else name


class LabelIndex:
    """Class names to indices: a label as written (spaces collapsed) first, then in any case; a full label and
    each of its comma-separated names alike. A name that finds two classes is refused, never guessed: ImageNet's
    "crane" (134, 517), "missile" (657; 744 is "projectile, missile"). "Cardigan" as written is the dog
    (264, "Cardigan, Cardigan Welsh corgi") and "cardigan" the sweater (474). Then ImageNet-1k's WordNet IDs (for
    a model with ImageNet's labels, or with none and ``classes`` unknown or 1000)."""

    def __init__(self, labels: Optional[Sequence[str]], classes: Optional[int] = None) -> None:
        self.known = labels is not None
        self.labels, self.classes = labels, classes
        self.wordnet = False  # a WordNet ID was read with neither labels nor a class count to confirm it by
        self._imagenet: Optional[bool] = None  # whether the labels are ImageNet-1k's: asked once, not per row
        self.exact: dict[str, set[int]] = {}   # a label or one of its names, as written
        self.folded: dict[str, set[int]] = {}  # the same, lowercased
        for k, label in enumerate(labels or ()):
            for name in {str(label), *str(label).split(",")}:
                written = " ".join(name.split())
                if written:
                    self.exact.setdefault(written, set()).add(k)
                    self.folded.setdefault(written.lower(), set()).add(k)

    def index(self, token: Any) -> int:
        """The class ``token`` names: an index as written, a label, or a WordNet ID; InputError if none."""
        if isinstance(token, bool) or not isinstance(token, (int, float, str)):
            raise InputError(f"class {json.dumps(token)} is neither an index nor a label")
        if isinstance(token, (int, float)):
            if not math.isfinite(token) or float(token) != int(token):
                raise InputError(f"class {token} is not a whole number")
            return int(token)
        text = token.strip()
        if _INDEX.fullmatch(text):
            return int(float(text)) if "." in text else int(text)
        if _DECIMAL.fullmatch(text):
            raise InputError(f"class {text} is not a whole number")
        written = " ".join(text.split())
        found = self.exact.get(written) or self.folded.get(written.lower())
        wnid = synset_token(text)
        if wnid is not None and not found:
            found = self.exact.get(wnid)  # a model labelled by synsets in its own order: 'n01443537 1 2 3 4'
        if wnid is not None and not found:
            self.wordnet = self.wordnet or (self.labels is None and self.classes is None)
            if self.labels is not None and self._imagenet is None:
                self._imagenet = imagenet_labels(self.labels)
            return synset_index(wnid, self.labels, self.classes, self._imagenet)
        if not self.known:
            raise InputError(f"class {text!r} is a name, and the model carries no labels: give a class index")
        if not found:
            raise InputError(f"class {text!r} is neither an index nor one of the model's labels")
        if len(found) > 1:
            raise InputError(f"class {text!r} names more than one of the model's labels "
                             f"({', '.join(map(str, sorted(found)))}): give its index")
        return next(iter(found))


def identity(targets: "Targets | str | os.PathLike") -> str:
    """What stands for ``targets`` in a run's fingerprint, read or not yet read (a label file by its contents,
    class folders by their root): the run record (journal.py) and eval's checkpoints (evaluate.py) use it."""
    if isinstance(targets, Targets):
        return targets.identity()
    if os.path.isdir(targets):
        return f"class folders of {os.path.realpath(targets)}"
    from .journal import file_digest

    return f"file sha256 {file_digest(targets)}"


def record_identity(targets: "Targets | str | os.PathLike") -> str:
    """What stands for ``targets`` in a folder run's record (journal.py): class folders by their root, a label
    file by its kind only. Its contents may change between runs: the writer checks each resumed image's
    recorded class against the file as it is now, so a fixed or added line redoes or adds just those images."""
    if isinstance(targets, TargetTable) or (not isinstance(targets, Targets) and not os.path.isdir(targets)):
        return "a label file"
    return identity(targets)


def class_index(target: int | str, labels: Optional[Sequence[str]], classes: Optional[int] = None) -> int:
    """``--target``'s class: an index as given (or written as digits), one of the model's labels, or an
    ImageNet-1k WordNet ID (``classes``: the model's class count, which confirms one where no labels do)."""
    if isinstance(target, str):
        names = LabelIndex(labels, classes)
        try:
            k = names.index(target)
        except InputError as exc:
            raise InputError(f"--target: {exc}") from None
        if names.wordnet:  # nothing left to confirm it by, unlike a label file's (Targets.check)
            raise InputError(f"--target: class {target!r} is an ImageNet-1k WordNet ID, and the model says neither "
                             "its labels nor its class count: give its index")
        return k
    return target


def _out_of_range(cls: int, num_classes: Optional[int]) -> Optional[str]:
    """Why ``cls`` is no class of a model with ``num_classes`` (unknown: only negatives), or None."""
    if cls >= 0 and (num_classes is None or cls < num_classes):
        return None
    span = f"0..{num_classes - 1}" if num_classes is not None else "from 0"
    return f"class {cls} is out of range (the model's classes: {span})"


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
            problem = _out_of_range(cls, num_classes)
            if problem:
                raise InputError(f"--targets {self.source}, {where}: {problem}")

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


def _parts(name: str) -> tuple[str, ...]:
    """A path as written in a label file, as its components below any '..' ('a/x.png' -> ('a', 'x.png'))."""
    parts = [x for x in name.replace("\\", "/").split("/") if x not in ("", ".")]
    while ".." in parts:
        parts = parts[parts.index("..") + 1:]
    return tuple(parts)


def _shared_tail(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """How many trailing folders ``a`` and ``b`` share."""
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


class TargetTable(Targets):
    """Which class to explain for each image, read from a label file by ``read_targets``.

    An image is found by its path (an entry's path taken from the file's folder), else by its file name, else
    by its stem, among the entries whose folder agrees with its own: ``a/x.png`` finds ``ds/a/x.png`` (written
    from another folder, or on another machine: ``/home/alice/ds/a/x.png``, ``C:\\ds\\a\\x.png``) but never
    ``ds/b/x.png``; a bare ``x.png`` finds any. The entry whose folders agree furthest wins.
    """

    def __init__(self, source: str, digest: str, entries: Iterable[tuple[str, int, str]], folder: Path) -> None:
        self.source, self.digest = source, digest
        self.by_path: dict[str, set[int]] = {}
        self.by_name: dict[str, list[tuple[tuple[str, ...], int]]] = {}  # file name -> (its folders, class)
        self.by_stem: dict[str, list[tuple[tuple[str, ...], int]]] = {}
        self.where = {}
        for name, cls, where in entries:
            self.where.setdefault(cls, where)
            parts = _parts(name)
            self.by_path.setdefault(_key(folder / name.replace("\\", "/")), set()).add(cls)
            if parts:
                self.by_name.setdefault(parts[-1], []).append((parts[:-1], cls))
                self.by_stem.setdefault(_stem(parts[-1]), []).append((parts[:-1], cls))
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
        p = os.fspath(path)
        name = os.path.basename(p)
        found = self.by_path.get(_key(p), set())
        mine = {_parts(os.path.dirname(q)) for q in (os.path.abspath(p), os.path.realpath(p))}  # links as well
        for table, key in ((self.by_name, name), (self.by_stem, _stem(name))):
            if found:
                break
            scored = []
            for where, cls in table.get(key, ()):
                k = max(_shared_tail(where, m) for m in mine)
                if k or not where:  # the image's own folder agrees, or the entry names none
                    scored.append(((k == len(where), k), cls))
            best = max((score for score, _ in scored), default=None)
            found = {cls for score, cls in scored if score == best}
        if len(found) > 1:
            raise InputError(f"{self.source} gives '{name}' more than one class ({', '.join(map(str, sorted(found)))}); "
                             "name the image by its path there, relative to that file's folder")
        if not found:
            raise InputError(f"no class for it in {self.source} (looked up by path, file name and stem)")
        return next(iter(found))


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
            problem = _out_of_range(cls, num_classes)
            if problem:
                self.unknown[name] = problem
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
    names = LabelIndex(labels)
    pairs = entries(text, p.suffix.lower(), names, f"--targets {p}")
    # the folder as named (not the link's target): a label file linked into a dataset reads its paths there
    table = TargetTable(str(p), file_digest(p), pairs, Path(os.path.abspath(p)).parent)
    table.wordnet = names.wordnet
    return table


__all__ = ["ClassFolders", "TargetTable", "Targets", "class_index", "identity", "read_targets"]
