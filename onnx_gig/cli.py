"""The ``onnx-gig`` command line. Errors print one line (a traceback only with --debug)."""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import Optional, Sequence

from . import __version__
from .commands import discover
from .errors import GigError

EPILOG = """examples:
  onnx-gig demo                                          # convert + explain the shipped model and photo
  onnx-gig convert models/mobilenet_v2.onnx              # -> models/mobilenet_v2_gig.onnx
  onnx-gig explain models/mobilenet_v2_gig.onnx models/images/chelsea.png
"""


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    p = argparse.ArgumentParser(
        prog="onnx-gig", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Explain what a CNN classifier looks at with Integrated Gradients with Guided "
                    "Non-Linearity (GNL-IG), computed by an ONNX graph that onnxruntime runs.")
    p.add_argument("--version", action="version", version=f"onnx-gig {__version__}")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    handlers = {}
    for mod in discover():
        sp = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.configure(sp)
        handlers[mod.NAME] = mod.run
    return p, handlers


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser, handlers = build_parser()
    a = parser.parse_args(argv)
    if not a.command:
        parser.print_help()
        return 2
    try:
        return handlers[a.command](a)
    except GigError as exc:
        if a.debug:
            traceback.print_exc()
        print(f"onnx-gig: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onnx-gig: interrupted; no partial output was left", file=sys.stderr)
        return 130
    except MemoryError:
        print("onnx-gig: error: out of memory; lower --max-memory or --steps", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
