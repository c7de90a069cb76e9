"""A Triton Inference Server model repository entry for a converted model.

``write_repository`` lays out ``DIR/NAME/VERSION/model.onnx`` (the converted file, byte for byte) and
``DIR/NAME/config.pbtxt`` for Triton's ONNX Runtime backend. Two configurations, because that backend
allows optional inputs only in models that do not batch (it refuses "optional input ... is not supported
for models that support batching", and counts every declared non-optional input against the model's
non-initializer inputs):

- ``max_batch_size: 0`` (the default): the whole contract. Dims are the model's own, the batch included as
  ``-1``; ``baseline``, ``alphas``, ``step_weights`` and ``target`` are ``optional: true``, so a request may
  send only the image, or a batch of N images with N targets. Requests are not merged.
- ``max_batch_size: B`` > 0: dynamic batching. Only the image is declared (dims without the batch); Triton
  merges requests up to B images and the model runs with its defaults: the predicted class, its built-in
  steps and baseline. Outputs of shape ``[N]`` are declared ``dims: [1]`` with ``reshape: { shape: [] }``.

The configuration is built as a dict in the protobuf JSON form (what Triton's ``/v2/models/NAME/config``
returns) and printed as protobuf text format; docs/serving.md explains the choice.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import onnx
from google.protobuf import text_encoding

from ..errors import InputError, ModelError, whole_number
from ..contract import META_PREFIX
from .signature import Signature, TensorSpec, read_signature

DEVICES = ("auto", "gpu", "cpu")
LABELS_FILE = "labels.txt"
MODEL_FILE = "model.onnx"
# metadata a client needs to prepare images and name classes, passed on as config parameters
SHARED_METADATA = ("preprocess", "method", "input", "score", "num_classes", "labels", "version")


class Enum(str):
    """A protobuf enum value: printed bare in text format, as a string in JSON."""


def _dims_without_batch(t: TensorSpec, name: str) -> list[int]:
    if not t.shape or t.shape[0] != -1:
        raise ModelError(f"{name} '{t.name}' has shape {list(t.shape)}, without a dynamic batch dimension first; "
                         "it cannot be batched by Triton (use --max-batch-size 0)")
    return list(t.shape[1:])


def _io(t: TensorSpec, batched: bool, kind: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": t.name, "data_type": Enum("TYPE_" + t.datatype)}
    if not batched:
        entry["dims"] = list(t.shape)
    else:
        dims = _dims_without_batch(t, kind)
        if dims:
            entry["dims"] = dims
        else:  # a per-image scalar ([N] in the model): Triton needs at least one dim
            entry["dims"] = [1]
            entry["reshape"] = {"shape": []}
    return entry


def config_dict(sig: Signature, name: str, max_batch_size: int = 0, device: str = "auto",
                max_queue_delay_us: int = 10_000, labels_file: Optional[str] = None) -> dict[str, Any]:
    """The model configuration as a dict in protobuf JSON form (field names of Triton's model_config.proto)."""
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 0:
        raise InputError(f"--max-batch-size must be 0 (no batching) or a positive number, got {max_batch_size!r}")
    if device not in DEVICES:
        raise InputError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    batched = max_batch_size > 0
    if batched:
        inputs = [_io(sig.image, True, "input")]
    else:
        inputs = [_io(sig.image, False, "input")]
        for t in sig.inputs[1:]:
            entry = _io(t, False, "input")
            if t.optional:
                entry["optional"] = True
            inputs.append(entry)
    outputs = []
    for t in sig.outputs:
        entry = _io(t, batched, "output")
        if labels_file and t.name == "scores":
            entry["label_filename"] = labels_file  # Triton's classification extension (class_count)
        outputs.append(entry)
    params = {"enable_mem_pattern": {"string_value": "false"}}  # as onnx-gig's own sessions (runtime.py)
    for key in SHARED_METADATA:
        value = sig.metadata.get(META_PREFIX + key)
        if value:
            params[META_PREFIX + key] = {"string_value": value}
    config: dict[str, Any] = {
        "name": name,
        "backend": "onnxruntime",
        "default_model_filename": MODEL_FILE,
        "max_batch_size": max_batch_size,
        "input": inputs,
        "output": outputs,
    }
    if batched:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": int(max_queue_delay_us)}
    if device != "auto":
        config["instance_group"] = [{"count": 1, "kind": Enum("KIND_GPU" if device == "gpu" else "KIND_CPU")}]
    config["parameters"] = params
    return config


def config_json(config: dict[str, Any]) -> dict[str, Any]:
    """The same configuration with enums as plain strings (for JSON)."""
    return json.loads(json.dumps(config))


# --------------------------------------------------------------------------- protobuf text format

_MAP_FIELDS = {"parameters"}  # map<string, ModelParameter>: printed as repeated { key value } entries


def _scalar(v: Any) -> str:
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return '"' + text_encoding.CEscape(v.encode("utf-8"), as_utf8=True) + '"'
    raise TypeError(f"cannot print {type(v).__name__} in a model configuration")


def _message(d: dict[str, Any], indent: int) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    for key, value in d.items():
        if key in _MAP_FIELDS and isinstance(value, dict):
            for k, v in value.items():
                lines.append(f"{pad}{key} {{")
                lines.append(f"{pad}  key: {_scalar(k)}")
                lines.append(f"{pad}  value {{")
                lines.extend(_message(v, indent + 2))
                lines.append(f"{pad}  }}")
                lines.append(f"{pad}}}")
        elif isinstance(value, dict):
            lines.append(f"{pad}{key} {{")
            lines.extend(_message(value, indent + 1))
            lines.append(f"{pad}}}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key} [")
            for i, v in enumerate(value):
                lines.append(f"{pad}  {{")
                lines.extend(_message(v, indent + 2))
                lines.append(f"{pad}  }}" + ("," if i < len(value) - 1 else ""))
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ " + ", ".join(_scalar(v) for v in value) + (" ]" if value else "]"))
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def to_pbtxt(config: dict[str, Any]) -> str:
    """Print a configuration dict as protobuf text format (config.pbtxt)."""
    return "\n".join(_message(config, 0)) + "\n"


# --------------------------------------------------------------------------- the repository


@dataclass
class TritonResult:
    """What ``write_repository`` wrote."""

    folder: Path
    config: Path
    model: Path
    name: str
    max_batch_size: int
    inputs: list[str]
    bytes_per_image: int  # memory of one image with the model's default steps in one run (the converter's estimate)


def default_name(model: str | os.PathLike) -> str:
    return Path(model).stem


def check_name(name: str, what: str) -> str:
    """``name`` if it can be one path segment (a repository folder, a model's part of a URL); else one line."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise InputError(f"'{name}' cannot be {what}")
    return name


def _external_files(model_path: Path) -> list[str]:
    proto = onnx.load(str(model_path), load_external_data=False)
    files = []
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = {e.key: e.value for e in t.external_data}.get("location", "")
            if not loc or os.path.isabs(loc) or ".." in Path(loc).parts:
                raise ModelError(f"{model_path}: tensor '{t.name}' keeps its data in '{loc}', outside the model's "
                                 "folder; Triton could not load it")
            if loc not in files:
                files.append(loc)
    return files


def write_repository(model: str | os.PathLike, repository: str | os.PathLike, name: Optional[str] = None,
                     max_batch_size: int = 0, device: str = "auto", version: int = 1,
                     max_queue_delay_us: int = 10_000, overwrite: bool = False) -> TritonResult:
    """Write ``REPOSITORY/NAME/VERSION/model.onnx`` (plus external data), ``config.pbtxt`` and ``labels.txt``."""
    src = Path(model)
    sig = read_signature(src)
    name = name or default_name(src)
    check_name(name, "a Triton model name (it is a folder name in the repository)")
    whole_number(version, "--version")
    whole_number(max_queue_delay_us, "--max-queue-delay-us (microseconds)", 0)
    folder = Path(repository) / name
    version_dir = folder / str(version)
    if version_dir.exists() and not overwrite:
        raise InputError(f"{version_dir} already exists; pass --force to replace it, or choose another --version")
    labels = sig.labels
    config = config_dict(sig, name, max_batch_size, device, max_queue_delay_us,
                         labels_file=LABELS_FILE if labels else None)
    text = to_pbtxt(config)
    extra = _external_files(src)
    try:
        version_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, version_dir / MODEL_FILE)
        for loc in extra:
            (version_dir / loc).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src.parent / loc, version_dir / loc)
        (folder / "config.pbtxt").write_text(text, encoding="utf-8")
        if labels:
            (folder / LABELS_FILE).write_text("\n".join(labels) + "\n", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write the Triton repository {folder}: {exc.strerror or exc}") from None
    return TritonResult(folder, folder / "config.pbtxt", version_dir / MODEL_FILE, name, max_batch_size,
                        [i["name"] for i in config["input"]], sig.bytes_per_step * max(1, sig.default_steps))
