"""onnx-gig export: a PyTorch module -> .onnx with a dynamic batch axis, ready for convert."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..errors import GigError, InputError, first_line

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
    p.add_argument("--opset", type=int, help=f"ONNX opset (default {DEFAULT_OPSET}; the legacy exporter writes 7-20 "
                                            f"in torch 2.x; with --dynamo its own default, {DYNAMO_MIN_OPSET} or more)")
    p.add_argument("--dynamo", action="store_true", help="use torch's dynamo exporter (opset >= 18, needs onnxscript)")
    p.add_argument("--input-name", default="image", help="name of the model input (default image)")
    p.add_argument("--output-name", default="logits", help="name of the model output (default logits)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite the output if it exists")


DEFAULT_OPSET = 17
DYNAMO_MIN_OPSET = 18
MAX_INPUT_VALUES = 1 << 27  # values in one image (3 x 6689 x 6689): 512 MB of float32, far above any classifier's


def _opset_range(dynamo: bool = False) -> tuple[int, int]:
    """The opsets torch.onnx writes: legacy (TorchScript) exporter, or dynamo's; 7-20 and 18-23 in torch 2.x."""
    try:
        from torch.onnx import _constants as c
        lo = DYNAMO_MIN_OPSET if dynamo else int(c.ONNX_MIN_OPSET)
        hi = int(c.ONNX_MAX_OPSET if dynamo else c.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except (ImportError, AttributeError):  # no torch (import_torch says so) or a torch that moved them
        lo, hi = (DYNAMO_MIN_OPSET, 23) if dynamo else (7, 20)
    return lo, hi


def check_options(a: argparse.Namespace) -> None:
    """Refuse an opset torch.onnx cannot write, an image too large to allocate, or an existing output (without
    --force), before the module is built."""
    from ..fileio import check_output

    if a.opset is not None:
        lo, hi = _opset_range(a.dynamo)
        if not lo <= a.opset <= hi:
            which = "the dynamo exporter" if a.dynamo else "the legacy exporter (without --dynamo)"
            raise InputError(f"--opset {a.opset} is not one {which} writes: choose {lo} to {hi} "
                             f"(default {'its own' if a.dynamo else DEFAULT_OPSET})")
    values = 1
    for d in a.input_size:
        values *= d
    if values > MAX_INPUT_VALUES:
        shown = ",".join(map(str, a.input_size))
        raise InputError(f"--input-size {shown} is {values:.3g} values per image, more than the {MAX_INPUT_VALUES} "
                         "export allows; give one image's size as the model sees it, e.g. 3,224,224")
    check_output(a.output, protect=[a.weights], overwrite=a.force)


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
    except Exception as exc:  # noqa: BLE001 - the user's module ran and raised: its error, one line
        raise InputError(f"importing module '{mod_name}' failed: {_first_sentence(exc)}") from None
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
        except Exception as exc:  # noqa: BLE001 - the user's factory raised: its error, one line
            raise InputError(f"calling '{spec}' failed: {_first_sentence(exc)}") from None
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
        raise InputError(f"cannot read weights from {path}: {_load_problem(exc)}; save the weights with "
                         "torch.save(module.state_dict(), PATH)") from None
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


def _first_sentence(exc: BaseException, limit: int = 200) -> str:
    """An exception's first line, shortened at a sentence or word boundary (never mid-word), or its type's name."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0]
    if len(text) <= limit:
        return text
    cut = text.rfind(". ", 0, limit)
    if cut > limit // 3:
        return text[:cut + 1]
    cut = text.rfind(" ", 0, limit)
    return (text[:cut] if cut > limit // 3 else text[:limit]).rstrip(",;:") + " ..."


def _load_problem(exc: BaseException) -> str:
    """Why torch.load(weights_only=True) failed, in a few words: torch's own message is a paragraph."""
    text = str(exc)
    if isinstance(exc, EOFError) or not text.strip():
        return "the file is empty or cut short"
    if "Weights only load failed" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
        detail = _first_sentence(Exception(detail)) if detail.strip() else ""
        return ("it is not a file torch.load reads safely (weights_only=True)"
                + (f": {detail.rstrip('.')}" if detail else ""))
    return _first_sentence(exc)


def _key_problems(module, state: dict) -> tuple[str, str]:
    want, have = set(module.state_dict()), set(state)
    miss, extra = sorted(want - have), sorted(have - want)

    def few(keys: Sequence[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    return (f"{len(miss)} missing keys ({few(miss)})" if miss else "",
            f"{len(extra)} unexpected keys ({few(extra)})" if extra else "")


def export_module(module, output: str | os.PathLike, input_size: Sequence[int] = (3, 224, 224),
                  opset: Optional[int] = None, dynamo: bool = False, input_name: str = "image",
                  output_name: str = "logits", check: Optional[Callable[[Path], Any]] = None,
                  protect: Sequence[Any] = ()) -> Path:
    """Export ``module`` with a dynamic batch axis to a temporary file, run ``check`` on it (raising refuses the
    export), and only then rename it onto ``output``: a failed export or check leaves ``output`` as it was."""
    import onnx

    from ..fileio import atomic_path

    torch = import_torch()
    example = _example(torch, 1, input_size)
    out = Path(output)
    with atomic_path(out, protect=protect) as tmp:
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
                                  output_names=[output_name], dynamic_shapes=[{0: batch}], external_data=False,
                                  **({} if opset is None else {"opset_version": opset}))
            else:
                torch.onnx.export(module, example, str(tmp), dynamo=False,
                                  opset_version=DEFAULT_OPSET if opset is None else opset,
                                  input_names=[input_name], output_names=[output_name],
                                  dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
        except GigError:
            raise
        except Exception as exc:  # noqa: BLE001 - the exporters raise many types
            first = first_line(exc)
            raise GigError(f"torch.onnx.export failed: {first}") from None
        model = onnx.load(str(tmp))
        inits = {i.name for i in model.graph.initializer}  # below opset 9 the weights are graph inputs too
        inputs = [i.name for i in model.graph.input if i.name not in inits]
        if len(inputs) != 1:
            raise GigError(f"the exported model has {len(inputs)} inputs ({', '.join(inputs)}); a classifier with "
                           "one image input is expected")
        if check is not None:
            check(tmp)
    return out


def _example(torch, batch: int, input_size: Sequence[int]):
    """A random batch; a size the machine cannot allocate is one line, not torch's allocator message."""
    try:
        return torch.randn(batch, *input_size)
    except (RuntimeError, MemoryError) as exc:
        raise InputError(f"cannot allocate a batch of {batch} images of size {','.join(map(str, input_size))} "
                         f"({_first_sentence(exc, 120)}); give one image's size as the model sees it, "
                         "e.g. 3,224,224") from None


def module_output(module, x, spec: str):
    """The module's logits on ``x`` as numpy; a forward that fails or returns anything but one tensor is one line."""
    torch = import_torch()
    try:
        with torch.no_grad():
            y = module(x)
    except Exception as exc:  # noqa: BLE001 - the user's forward raised (a size it cannot take, ...)
        raise InputError(f"the module '{spec}' fails on a batch of shape {list(x.shape)}: {_first_sentence(exc)} "
                         "(is --input-size the size it expects?)") from None
    if not isinstance(y, torch.Tensor):
        what = f"a {type(y).__name__}" + (f" of {len(y)}" if isinstance(y, (tuple, list, dict)) else "")
        raise InputError(f"the module '{spec}' returns {what}, not one tensor of logits; export explains a "
                         "classifier with one output: wrap it in a module whose forward returns the logits only")
    return y.detach().float().numpy()


def run(a: argparse.Namespace) -> int:
    import numpy as np

    check_options(a)
    torch = import_torch()
    module = build_module(a.factory, a.weights)
    # the module's logits on a batch of two (the batch axis is dynamic), before exporting: a module that does not
    # return one tensor is refused here; the exported file is checked against them before it replaces anything
    x = _example(torch, 2, a.input_size)
    want = module_output(module, x, a.factory)
    err = 0.0

    def check(tmp: Path) -> None:
        nonlocal err
        from ..runtime import make_session

        sess = make_session(str(tmp), device="cpu")
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        err = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
        if not np.isfinite(err) or err > 1e-3 * max(1.0, float(np.max(np.abs(want)))):
            raise GigError(f"the exported model disagrees with the module on a batch of 2 (max |diff| {err:.3g}, "
                           f"shapes {got.shape} vs {want.shape}); nothing was written. A module whose output is "
                           "random (dropout in train mode, torch.rand) or depends on Python control flow does not "
                           "export faithfully")

    path = export_module(module, a.output, a.input_size, a.opset, a.dynamo, a.input_name, a.output_name,
                         check=check, protect=[a.weights])
    shape = ",".join(str(d) for d in a.input_size)
    print(f"wrote {path}  (input '{a.input_name}' [batch,{shape}], output '{a.output_name}' {list(want.shape[1:])} "
          f"per image; matches the module to {err:.1e})")
    print(f"next: onnx-gig convert {path}")
    return 0
