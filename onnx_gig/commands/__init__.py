"""CLI subcommands, one module each: NAME, HELP, configure(parser), run(args) -> exit code.

``onnx_gig.cli`` discovers every module here, so a new command is one new file.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Optional

ORDER = ("demo", "convert", "explain", "inspect", "export", "eval", "sanity", "triton", "serve", "view")


def discover(only: Optional[str] = None) -> list[ModuleType]:
    """Command modules in help order (known ones first, any others alphabetically).

    ``only``: just that command's module when it exists (the CLI then imports only what one command
    needs: part of ``onnx-gig explain``'s cold start).
    """
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    if only in names:
        names = [only]
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return [importlib.import_module(f"{__name__}.{n}") for n in names]
