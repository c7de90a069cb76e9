"""Reading a label file's (image, class) pairs in the forms datasets ship them (targets.py builds the table).

* ``name class`` lines, ImageNet's ``val.txt`` (``ILSVRC2012_val_00000001.JPEG 65``; ``#`` comments);
* CSV or TSV whose header names the image and class columns (``image,label``, ``image_name,patient_id,target``;
  other columns ignored), or two columns under a header of other names;
* JSON: an object ``{"cat.png": 281}``, pairs ``[["cat.png", 281]]`` or records ``[{"image": .., "label": ..}]``,
  and JSON Lines of records (Hugging Face's ``metadata.jsonl``).

The form is chosen by the suffix, else by the text (JSON; a tab or a comma on every line; else ``name class``).
Every problem is one InputError naming the line or entry.
"""
from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any, Optional

from .errors import InputError

if TYPE_CHECKING:
    from .targets import LabelIndex

# header names of the image and class columns, in the order tried (compared lowercased)
IMAGE_COLUMNS = ("image", "path", "file", "filename", "file_name", "image_path", "image_name", "imageid", "image_id",
                 "img", "filepath", "file_path", "name", "id")
CLASS_COLUMNS = ("target", "label", "class", "class_index", "class_id", "class_name", "label_id", "label_name",
                 "category", "category_id", "y",
                 "predictionstring")  # ImageNet's LOC_val_solution.csv: 'n01751748 151 111 262 307 ...'

Row = tuple[list[Any], str]  # a row's fields and where it is ("line 3", "entry 3")
Entry = tuple[str, int, str]  # image as written, class, where


_FORM = ("JSON targets are an object {image: class}, a list of [image, class] pairs, or records (a list, or one "
         f"per line) with an image field ({', '.join(IMAGE_COLUMNS[:4])}, ...) and a class field "
         f"({', '.join(CLASS_COLUMNS[:3])}, ...)")


def _image(value: Any, at: str) -> str:
    """An image field as text: a name or a numeric ID; null, true or a list is no image."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InputError(f"{at}: the image is {json.dumps(value)}, not a file name")
    return str(value)


def _fields(item: dict) -> tuple[Optional[str], Optional[str], dict]:
    low = {str(k).lower(): v for k, v in item.items()}
    return (next((c for c in IMAGE_COLUMNS if c in low), None), next((c for c in CLASS_COLUMNS if c in low), None),
            low)


def _record(item: dict, at: str) -> Row:
    img, cls, low = _fields(item)
    if img is None or cls is None:
        raise InputError(f"{at}: {_FORM}")
    return [_image(low[img], at), low[cls]], at


def _json_rows(text: str) -> list[Row]:
    """JSON's pairs: an object {image: class}, a list of [image, class], or records {image: .., label: ..}."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        lines = [(n + 1, s) for n, s in enumerate(text.splitlines()) if s.strip()]
        if len(lines) > 1 and all(s.lstrip().startswith("{") for _, s in lines):
            return _json_lines(lines)
        raise InputError(f"not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if isinstance(data, dict):
        img, cls, _ = _fields(data)
        if img is not None and cls is not None:  # one record, not {image: class}
            return [_record(data, "entry 1")]
        return [([k, v], f"entry {n + 1}") for n, (k, v) in enumerate(data.items())]
    rows = []
    for n, item in enumerate(data if isinstance(data, list) else [None]):
        if isinstance(item, dict):
            rows.append(_record(item, f"entry {n + 1}"))
        elif isinstance(item, list) and len(item) == 2:
            rows.append(([_image(item[0], f"entry {n + 1}"), item[1]], f"entry {n + 1}"))
        else:
            raise InputError(_FORM)
    return rows


def _json_lines(lines: list[tuple[int, str]]) -> list[Row]:
    rows = []
    for n, line in lines:
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise InputError(f"line {n}: {_FORM}")
        rows.append(_record(item, f"line {n}"))
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
        rows = [([c.strip() for c in row], f"line {n}") for row, (n, _) in zip(reader, lines)]
        if tab and all(len([c for c in f if c]) == 2 for f, _ in rows):  # two tabs between name and class
            rows = [([c for c in f if c], at) for f, at in rows]
        return rows, False
    # '#' starts a comment here; the class may hold spaces ("tiger cat") or the image may ("my photo.png 281"):
    # the first field and the rest here, the other split tried by _entries
    return [(s.split(None, 1) if len(s.split()) > 1 else [s.strip()], f"line {n}")
            for n, s in lines if not s.lstrip().startswith("#")], True


def _columns(rows: list[Row], spaced: bool, where: str) -> tuple[int, int, list[Row], Optional[str]]:
    """(image column, class column, the data rows, where a possible header of other names is).

    A header naming known columns (IMAGE_COLUMNS, CLASS_COLUMNS) picks them and is dropped; naming only the
    class column, the image is the first other column; naming only the image column, the class is the other of
    two. In CSV/TSV, a first row of other names (no dot or slash in its image field, so not a file) is a header
    if its class field turns out to be no class (``_entries`` skips it then); ``name class`` lines have none.
    """
    if not rows:
        return 0, 1, rows, None
    header = [str(c).strip().lower() for c in rows[0][0]]
    img = next((header.index(c) for c in IMAGE_COLUMNS if c in header), None)
    cls = next((header.index(c) for c in CLASS_COLUMNS if c in header), None)
    if img is not None and cls is not None and img != cls:
        return img, cls, rows[1:], None
    if cls is not None and img is None and len(header) > 1:
        return (0 if cls else 1), cls, rows[1:], None
    if img is not None and cls is None and len(header) == 2 and not spaced:
        return img, 1 - img, rows, rows[0][1]  # a header if its class field is no class ('file,281' is data)
    if img is not None and cls is None and not spaced:
        raise InputError(f"{where}, {rows[0][1]}: the header names the image column ({header[img]!r}) but no class "
                         f"column of {len(header)}; name it one of {', '.join(CLASS_COLUMNS[:6])}, ...")
    first = str(rows[0][0][0])
    named = not spaced and len(rows) > 1 and len(rows[0][0]) > 1 and not any(c in first for c in "./\\")
    return 0, 1, rows, (rows[0][1] if named else None)


def _rows(text: str, suffix: str) -> tuple[list[Row], bool, bool]:
    """The rows, whether whitespace-separated, whether JSON: by the suffix, else JSON if it parses as JSON."""
    if suffix in (".jsonl", ".ndjson"):
        return _json_lines([(n + 1, s) for n, s in enumerate(text.splitlines()) if s.strip()]), False, True
    if suffix == ".json":
        return _json_rows(text), False, True
    if suffix not in (".csv", ".tsv", ".tab") and text.lstrip()[:1] in ("{", "["):
        try:  # JSON under another suffix (metadata.jsonl saved as .txt)
            return _json_rows(text), False, True
        except InputError:
            head = text.lstrip()
            if head[1:].lstrip()[:1] in ('"', "{", "[", "}", "]"):  # meant as JSON ('[a].png 3' is not)
                raise
    rows, spaced = _text_rows(text, suffix)
    return rows, spaced, False


def entries(text: str, suffix: str, names: "LabelIndex", where: str) -> list[Entry]:
    """(image, class, where) for every row of a label file's ``text``; a row that is neither is one InputError
    naming its line."""
    try:
        rows, spaced, json_form = _rows(text, suffix)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    if json_form:
        image_col, class_col, header = 0, 1, None
    else:
        image_col, class_col, rows, header = _columns(rows, spaced, where)
    out = []
    for fields, at in rows:
        if len(fields) <= max(image_col, class_col) or not str(fields[image_col]).strip():
            raise InputError(f"{where}, {at}: expected an image and a class, got {' '.join(map(str, fields))!r}")
        if "\0" in str(fields[image_col]):
            raise InputError(f"{where}, {at}: the image name holds a NUL byte")
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


__all__ = ["CLASS_COLUMNS", "IMAGE_COLUMNS", "entries"]
