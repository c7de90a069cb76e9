"""A model file's head without onnx: metadata, graph inputs and external-data references.

``onnx-gig explain`` needs only these before it makes a session, and importing onnx and parsing every
weight cost about a tenth of a second of a cold start (onnx's import 70 ms, each parse 15 ms on
MobileNetV2). This reads a few fields of the protobuf wire format and skips the rest by length:
ModelProto.graph (7) and .metadata_props (14); GraphProto.initializer (5), .sparse_initializer (15) and
.input (11); TensorProto.name (8), .external_data (13), .data_location (14); ValueInfoProto.name (1) and
.type (2) down to the tensor shape's dims. Field numbers are onnx.proto3's, which never change.
"""
from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Union

from .errors import ModelError

Dim = Union[int, str, None]
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class _Truncated(Exception):
    """The bytes end inside a field, or use a wire type ONNX files never hold."""


@dataclass
class ModelHead:
    """What a session-free look at a model file gives."""

    metadata: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, list[Dim]] = field(default_factory=dict)
    external: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (tensor, external_data entries)
    has_graph: bool = False


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise _Truncated
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, Union[int, memoryview]]]:
    """(field number, value) pairs: an int for varints, a view for length-delimited fields; others skipped."""
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        number, kind = tag >> 3, tag & 7
        if kind == 0:
            value, i = _varint(buf, i)
            yield number, value
        elif kind == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise _Truncated
            yield number, buf[i:i + n]
            i += n
        elif kind in (1, 5):
            i += 8 if kind == 1 else 4
            if i > len(buf):
                raise _Truncated
        else:
            raise _Truncated


def _text(v: memoryview) -> str:
    return bytes(v).decode("utf-8", "replace")


def _entry(v: memoryview) -> tuple[str, str]:
    """A StringStringEntryProto: (key, value)."""
    kv = {n: _text(x) for n, x in _fields(v) if isinstance(x, memoryview)}
    return kv.get(1, ""), kv.get(2, "")


def _dims(type_proto: memoryview) -> Optional[list[Dim]]:
    """TypeProto -> tensor_type (1) -> shape (2) -> dim (1): dim_value (1) or dim_param (2)."""
    for n, tensor in _fields(type_proto):
        if n == 1 and isinstance(tensor, memoryview):
            for m, shape in _fields(tensor):
                if m == 2 and isinstance(shape, memoryview):
                    dims: list[Dim] = []
                    for k, dim in _fields(shape):
                        if k == 1 and isinstance(dim, memoryview):
                            d: Dim = None
                            for j, x in _fields(dim):
                                if j == 1 and isinstance(x, int):
                                    d = x - (1 << 64) if x >= 1 << 63 else x
                                elif j == 2 and isinstance(x, memoryview):
                                    d = _text(x) or None
                            dims.append(d)
                    return dims
    return None


def _tensor(v: memoryview, head: ModelHead) -> None:
    name, entries, external = "", {}, False
    for n, x in _fields(v):
        if n == 8 and isinstance(x, memoryview):
            name = _text(x)
        elif n == 13 and isinstance(x, memoryview):
            k, val = _entry(x)
            entries[k] = val
        elif n == 14 and isinstance(x, int):
            external = x == _EXTERNAL
    if external:
        head.external.append((name, entries))


def _graph(v: memoryview, head: ModelHead) -> None:
    head.has_graph = True
    for n, x in _fields(v):
        if not isinstance(x, memoryview):
            continue
        if n == 5:
            _tensor(x, head)
        elif n == 15:  # SparseTensorProto: values (1), indices (2)
            for m, t in _fields(x):
                if m in (1, 2) and isinstance(t, memoryview):
                    _tensor(t, head)
        elif n == 11:
            name, dims = "", None
            for m, y in _fields(x):
                if m == 1 and isinstance(y, memoryview):
                    name = _text(y)
                elif m == 2 and isinstance(y, memoryview):
                    dims = _dims(y)
            head.inputs[name] = dims if dims is not None else []


NOT_ONNX = "the file is truncated or not in ONNX format; download or export the model again"


def check_model_file(path: str | os.PathLike) -> Path:
    """A missing path, a folder or an empty file as one readable line, before anything parses it."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file not found: {p}")
    if not p.is_file():
        raise ModelError(f"{p} is not a file; give the path of an .onnx model")
    if p.stat().st_size == 0:
        raise ModelError(f"{p} is empty (0 bytes); export the model again")
    return p


def _map(p: Path) -> Union[bytes, mmap.mmap]:
    """The file's bytes as a read-only map: the walk touches only the pages of the fields it reads, where
    reading the file copied every weight (docs/benchmark.md, Speed V); a file system without mmap
    support gets the file read instead. A file cut short by another process during the walk (a few
    milliseconds) would end it with SIGBUS, as it would onnxruntime's own load of that file."""
    with open(p, "rb") as f:
        try:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return f.read()


def _walk(data: Union[bytes, mmap.mmap], graph: bool) -> Optional[ModelHead]:
    """ModelProto's graph (7) and metadata_props (14), everything else skipped by length; None where the
    bytes end inside a field. Names and values come out as str and int, so no view of ``data`` outlives
    the walk (the truncation is caught here, so no traceback keeps one either)."""
    head = ModelHead()
    try:
        for n, x in _fields(memoryview(data)):
            if n == 7 and isinstance(x, memoryview):
                if graph:
                    _graph(x, head)
                head.has_graph = True
            elif n == 14 and isinstance(x, memoryview):
                k, v = _entry(x)
                head.metadata[k] = v
    except _Truncated:
        return None
    return head


def read_head(path: str | os.PathLike, graph: bool = True) -> ModelHead:
    """The head of the model at ``path``; a missing, empty or non-ONNX file raises one readable line.

    ``graph=False`` reads the metadata only (inputs and external references stay empty).

    Tensors inside node attributes and subgraphs are not searched for external data (onnx-gig's converted
    models keep weights as initializers); ``modelfile.check_external_data`` covers every tensor where a
    model is parsed in full.
    """
    p = check_model_file(path)
    try:
        data = _map(p)
    except OSError as exc:
        raise ModelError(f"cannot read {p}: {exc.strerror or exc}") from None
    what = NOT_ONNX
    try:
        head = _walk(data, graph)
    finally:
        if not isinstance(data, bytes):
            try:
                data.close()
            except BufferError:  # an interpreter that frees views late (PyPy): unmapped when they go
                pass
    if head is None:
        raise ModelError(f"cannot read {p} as an ONNX model: {what}")
    if not head.has_graph:
        raise ModelError(f"{p} holds no ONNX graph: {what}")
    return head


def check_external_refs(refs: list[tuple[str, dict[str, str]]], path: str | os.PathLike) -> None:
    """Refuse external-data references (tensor name, external_data entries) that leave the model's folder or
    point at missing or short files: a model file must not make onnx-gig read files elsewhere."""
    p = Path(path)
    folder = p.resolve().parent
    for name, info in refs:
        loc = info.get("location", "")
        where = f"{p}: tensor '{name}' keeps its data in external file '{loc}'"
        if not loc or os.path.isabs(loc) or Path(loc).drive:
            raise ModelError(f"{where}, which is not a relative path inside the model's folder; refusing to read it "
                             "(keep the .data file beside the model and save with a relative location)")
        target = (folder / loc).resolve()
        if folder != target and folder not in target.parents:
            raise ModelError(f"{where}, which lies outside the model's folder {folder}; refusing to read it "
                             "(keep the .data file beside the model)")
        if not target.is_file():
            raise ModelError(f"{where}, which is missing; copy it next to the model (it must sit in {folder})")
        try:
            end = int(info.get("offset", 0) or 0) + int(info.get("length", 0) or 0)
        except ValueError:
            raise ModelError(f"{where} with a non-numeric offset or length; export the model again") from None
        if end > target.stat().st_size:
            raise ModelError(f"{where}, which is shorter than the model says ({target.stat().st_size} bytes, "
                             f"needs {end}); the .data file is truncated or belongs to another export")
