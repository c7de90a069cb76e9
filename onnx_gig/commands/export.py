"""onnx-gig export: a PyTorch module -> .onnx with a dynamic batch axis, ready for convert."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import GigError, InputError

NAME = "export"
HELP = "export a PyTorch classifier (package.module:factory) to ONNX with a dynamic batch axis"
DESCRIPTION = ("Build the module by calling FACTORY (a class or function taking no arguments, or a module "
               "instance), load --weights into it, and export it in eval mode with torch.onnx (legacy exporter "
               "at opset 17 by default; --dynamo for the new one). Needs PyTorch: pip install 'onnx-gig[torch]'.")

TORCH_MISSING = ("onnx-gig export needs PyTorch, which is not installed: pip install 'onnx-gig[torch]' "
                 "(or pip install torch)")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("factory", metavar="package.module:factory",
                   help="where the model comes from, e.g. mynets.resnet:build (the current folder is importable)")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--weights", help="a state dict saved with torch.save (a checkpoint dict holding 'state_dict' "
                                     "or 'model' works too), loaded with strict=True")
    p.add_argument("--input-size", default="3,224,224", type=_sizes, metavar="C,H,W",
                   help="one image's size without the batch axis (default 3,224,224)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset for the legacy exporter (default 17)")
    p.add_argument("--dynamo", action="store_true", help="use torch's dynamo exporter (opset >= 18, needs onnxscript)")
    p.add_argument("--input-name", default="image", help="name of the model input (default image)")
    p.add_argument("--output-name", default="logits", help="name of the model output (default logits)")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 3,224,224, got '{text}'") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got '{text}'")
    return dims


def import_torch():
    try:
        import torch
    except ImportError:
        raise GigError(TORCH_MISSING) from None
    return torch


def resolve_factory(spec: str) -> Any:
    """'package.module:attr.path' -> the object (the current folder is on the import path)."""
    if ":" not in spec:
        raise InputError(f"expected package.module:factory, got '{spec}' (e.g. mynets.resnet:build)")
    mod_name, attr = spec.split(":", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as exc:
        raise InputError(f"cannot import module '{mod_name}': {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InputError(f"module '{mod_name}' has no attribute '{attr}'") from None
    return obj


def build_module(spec: str, weights: Optional[str] = None):
    """The nn.Module the factory makes, with ``weights`` loaded (strict), in eval mode."""
    torch = import_torch()
    obj = resolve_factory(spec)
    if not isinstance(obj, torch.nn.Module):
        if not callable(obj):
            raise InputError(f"'{spec}' is neither a torch.nn.Module nor callable")
        try:
            obj = obj()
        except TypeError as exc:
            raise InputError(f"calling '{spec}' with no arguments failed: {exc}") from None
    if not isinstance(obj, torch.nn.Module):
        raise InputError(f"'{spec}' returned {type(obj).__name__}, not a torch.nn.Module")
    if weights:
        load_weights(obj, weights)
    return obj.eval()


def load_weights(module, path: str) -> None:
    torch = import_torch()
    if not Path(path).is_file():
        raise InputError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle and zip errors of many kinds
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read weights from {path}: {first}") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise InputError(f"{path} holds a {type(state).__name__}, not a state dict")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        missing, unexpected = _key_problems(module, state)
        detail = "; ".join(x for x in (missing, unexpected) if x) or str(exc).splitlines()[0][:200]
        raise InputError(f"the weights in {path} do not fit the module: {detail}") from None


def _key_problems(module, state: dict) -> tuple[str, str]:
    want, have = set(module.state_dict()), set(state)
    miss, extra = sorted(want - have), sorted(have - want)

    def few(keys: Sequence[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    return (f"{len(miss)} missing keys ({few(miss)})" if miss else "",
            f"{len(extra)} unexpected keys ({few(extra)})" if extra else "")


def export_module(module, output: str | os.PathLike, input_size: Sequence[int] = (3, 224, 224), opset: int = 17,
                  dynamo: bool = False, input_name: str = "image", output_name: str = "logits") -> Path:
    """Export ``module`` with a dynamic batch axis; write atomically; return the path."""
    import onnx

    from ..fileio import atomic_path

    torch = import_torch()
    example = torch.randn(1, *input_size)
    out = Path(output)
    with atomic_path(out) as tmp:
        tmp = Path(tmp)
        try:
            if dynamo:
                try:
                    import onnxscript  # noqa: F401
                except ImportError:
                    raise GigError("the dynamo exporter needs onnxscript: pip install onnxscript "
                                   "(or leave out --dynamo)") from None
                batch = torch.export.Dim("batch", min=1)
                torch.onnx.export(module, (example,), str(tmp), dynamo=True, input_names=[input_name],
                                  output_names=[output_name], dynamic_shapes=[{0: batch}], external_data=False)
            else:
                torch.onnx.export(module, example, str(tmp), dynamo=False, opset_version=opset,
                                  input_names=[input_name], output_names=[output_name],
                                  dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
        except GigError:
            raise
        except Exception as exc:  # noqa: BLE001 - the exporters raise many types
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise GigError(f"torch.onnx.export failed: {first}") from None
        model = onnx.load(str(tmp))
        if len(model.graph.input) != 1:
            raise GigError(f"the exported model has {len(model.graph.input)} inputs; a classifier with one "
                           "image input is expected")
    return out


def run(a: argparse.Namespace) -> int:
    import numpy as np

    torch = import_torch()
    module = build_module(a.factory, a.weights)
    path = export_module(module, a.output, a.input_size, a.opset, a.dynamo, a.input_name, a.output_name)
    # check the file against the module on a batch of two (the batch axis is dynamic)
    from ..runtime import make_session

    x = torch.randn(2, *a.input_size)
    with torch.no_grad():
        want = module(x).numpy()
    sess = make_session(str(path), device="cpu")
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    err = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
    if not np.isfinite(err) or err > 1e-3 * max(1.0, float(np.max(np.abs(want)))):
        raise GigError(f"the exported model disagrees with the module on a batch of 2 (max |diff| {err:.3g}, "
                       f"shapes {got.shape} vs {want.shape})")
    shape = ",".join(str(d) for d in a.input_size)
    print(f"wrote {path}  (input '{a.input_name}' [batch,{shape}], output '{a.output_name}' {list(want.shape[1:])} "
          f"per image; matches the module to {err:.1e})")
    print(f"next: onnx-gig convert {path}")
    return 0
