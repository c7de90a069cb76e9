"""The serving signature of a converted model, read from the ONNX file itself.

Servers describe a model by its tensors: name, data type, shape (``-1`` where a dimension is dynamic) and
whether the input may be left out (the four defaulted inputs are initializers that share their input's name).
Everything here comes from the graph and ``metadata_props``; no session is made.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ModelError
from ..contract import META_PREFIX, OUTPUTS

# the defaulted inputs every converted model has (newer converters may add more; all are optional)
CONTRACT_INPUTS = ("baseline", "alphas", "step_weights", "target")

# numpy dtype <-> the Open Inference Protocol's datatype names (Triton's config adds the TYPE_ prefix)
V2_DATATYPES = {
    np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "UINT8", np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32", np.dtype(np.uint64): "UINT64", np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16", np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16", np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
}
NUMPY_DTYPES = {v: k for k, v in V2_DATATYPES.items()}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as a server sees it."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]  # -1 where the dimension is dynamic
    optional: bool = False  # an input with a default (an initializer of the same name)

    @property
    def datatype(self) -> str:
        """The Open Inference Protocol name of the data type (FP32, INT64, ...)."""
        try:
            return V2_DATATYPES[np.dtype(self.dtype)]
        except KeyError:
            raise ModelError(f"tensor '{self.name}' has data type {self.dtype}, which servers do not carry") from None

    def metadata(self) -> dict:
        """The v2 model-metadata form: name, datatype, shape."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class Signature:
    """Inputs (the image first), outputs (in graph order), metadata and the defaults of a converted model."""

    path: Path
    image: TensorSpec
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    metadata: dict[str, str]
    defaults: dict[str, np.ndarray] = field(default_factory=dict)  # the optional inputs' values

    @property
    def optional_inputs(self) -> list[str]:
        return [t.name for t in self.inputs if t.optional]

    @property
    def method(self) -> str:
        return self.metadata.get(META_PREFIX + "method", "")

    @property
    def preprocess_json(self) -> Optional[str]:
        return self.metadata.get(META_PREFIX + "preprocess")

    @property
    def labels(self) -> Optional[list[str]]:
        raw = self.metadata.get(META_PREFIX + "labels")
        return json.loads(raw) if raw else None

    @property
    def num_classes(self) -> Optional[int]:
        raw = self.metadata.get(META_PREFIX + "num_classes", "")
        return int(raw) if raw else None

    @property
    def bytes_per_step(self) -> int:
        """The converter's memory estimate for one image and one integration step in one run."""
        return max(1, int(self.metadata.get(META_PREFIX + "bytes_per_step", "0") or 0))

    @property
    def default_steps(self) -> int:
        a = self.defaults.get("alphas")
        return int(a.size) if a is not None else 0

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(name)


def _shape(vi: onnx.ValueInfoProto, what: str) -> tuple[int, ...]:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        raise ModelError(f"{what} '{vi.name}' has no shape (unknown rank); servers need the rank of every tensor")
    return tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim)


def _dtype(vi: onnx.ValueInfoProto, what: str) -> np.dtype:
    elem = vi.type.tensor_type.elem_type
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"{what} '{vi.name}' has ONNX element type {elem}, which servers do not carry") from None


def read_signature(path: str | os.PathLike) -> Signature:
    """Read the signature of a model written by ``onnx-gig convert`` (weights in external files are not read)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a non-ONNX file
        raise ModelError(f"cannot read {p} as an ONNX model ({type(exc).__name__})") from None
    meta = {m.key: m.value for m in model.metadata_props}
    if META_PREFIX + "method" not in meta:
        raise ModelError(f"{p} is not an onnx-gig model; run 'onnx-gig convert {p}' first")
    image_name = meta.get(META_PREFIX + "input", "")
    inits = {t.name: t for t in model.graph.initializer}
    inputs = [TensorSpec(vi.name, _dtype(vi, "input"), _shape(vi, "input"), vi.name in inits)
              for vi in model.graph.input]
    by_name = {t.name: t for t in inputs}
    if image_name not in by_name or by_name[image_name].optional:
        raise ModelError(f"{p}: the image input '{image_name}' named in the metadata is missing; convert the model again")
    missing = [n for n in CONTRACT_INPUTS if n not in by_name or not by_name[n].optional]
    if missing:
        raise ModelError(f"{p}: the input(s) {', '.join(missing)} of the onnx-gig contract are missing; "
                         "convert the model again")
    outputs = [TensorSpec(vi.name, _dtype(vi, "output"), _shape(vi, "output")) for vi in model.graph.output]
    missing = [n for n in OUTPUTS if n not in {o.name for o in outputs}]
    if missing:
        raise ModelError(f"{p}: the output(s) {', '.join(missing)} of the onnx-gig contract are missing; "
                         "convert the model again")
    defaults = {}
    for spec in inputs:
        t = inits.get(spec.name)
        if t is not None and t.data_location != onnx.TensorProto.EXTERNAL:
            defaults[spec.name] = numpy_helper.to_array(t)
    image = by_name[image_name]
    ordered = [image] + [t for t in inputs if t.name != image_name]
    return Signature(p, image, ordered, outputs, meta, defaults)
