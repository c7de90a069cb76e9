"""Reading an ONNX file: missing, empty or foreign files and external data outside the model's folder are
one-line errors, checked before onnx reads anything; ``all_tensors`` walks every TensorProto of a graph.

Split from loader.py (which normalises the graph); precision.py walks tensors with ``all_tensors`` too.
"""
from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import TensorProto

from .errors import ModelError
from .errors import first_line as _first_line
from .modelhead import NOT_ONNX, check_external_refs, check_model_file


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file (external data beside it included); a bad file raises one readable line."""
    p = Path(path)
    model = read_model_proto(p)
    check_external_data(model, p)
    if uses_external_data(model):
        try:
            onnx.load_external_data_for_model(model, str(p.resolve().parent))
        except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types
            raise ModelError(f"cannot read the external data of {p}: {first_line(exc)}") from None
    return model


def read_model_proto(path: str | os.PathLike) -> onnx.ModelProto:
    """Parse an ONNX file without touching external data; a missing, empty or non-ONNX file raises one line."""
    p = check_model_file(path)
    what = NOT_ONNX
    try:
        model = onnx.load(str(p), load_external_data=False)
    except OSError as exc:
        raise ModelError(f"cannot read {p}: {exc.strerror or exc}") from None
    except Exception:  # noqa: BLE001 - protobuf raises several unrelated types
        raise ModelError(f"cannot read {p} as an ONNX model: {what}") from None
    if not model.HasField("graph") or not model.graph.node or not model.opset_import:
        raise ModelError(f"{p} holds no ONNX graph: {what}")
    return model


def all_tensors(graph: onnx.GraphProto):
    """Every TensorProto in a graph: initializers, Constant-like attributes, subgraphs."""
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            if attr.HasField("g"):
                yield from all_tensors(attr.g)
            for sub in attr.graphs:
                yield from all_tensors(sub)


def _external_tensors(model: onnx.ModelProto):
    return [t for t in all_tensors(model.graph) if t.data_location == TensorProto.EXTERNAL]


def uses_external_data(model: onnx.ModelProto) -> bool:
    """Whether any tensor keeps its data in an external file."""
    return bool(_external_tensors(model))


def check_external_data(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Refuse external-data references that leave the model's folder or point at missing/short files.

    Checked before anything reads them: a model file must not make onnx-gig read files elsewhere.
    """
    check_external_refs([(t.name, {e.key: e.value for e in t.external_data}) for t in _external_tensors(model)],
                        path)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (200 characters at most), for one-line errors."""
    return _first_line(exc, 200)
