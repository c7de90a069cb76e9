"""The ``onnx-gig`` command line. Errors print one line (a traceback only with --debug)."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from typing import Optional, Sequence

from . import __version__
from .commands import discover
from .errors import GigError

EPILOG = """examples:
  onnx-gig demo                                          # convert + explain the shipped model and photo
  onnx-gig convert models/mobilenet_v2.onnx              # -> models/mobilenet_v2_gig.onnx
  onnx-gig explain models/mobilenet_v2_gig.onnx models/images/chelsea.png
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line too, like every other error (the full usage is one --help away). Options are
    never abbreviated: ``eval --target 281`` would be read as ``--targets 281`` (a file named 281)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        where = "" if self.prog == "onnx-gig" else f"{self.prog}: "  # a subcommand's name, not the program's twice
        self.exit(2, f"onnx-gig: error: {where}{message} (see '{self.prog} --help')\n")


def build_parser(only: Optional[str] = None) -> tuple[argparse.ArgumentParser, dict]:
    p = _Parser(
        prog="onnx-gig", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Explain what a CNN classifier looks at with Integrated Gradients with Guided "
                    "Non-Linearity (GNL-IG), computed by an ONNX graph that onnxruntime runs.")
    p.add_argument("--version", action="version", version=f"onnx-gig {__version__}")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    handlers = {}
    for mod in discover(only):
        sp = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.configure(sp)
        handlers[mod.NAME] = mod.run
    return p, handlers


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _one_line(text: object) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return " ".join(lines) if lines else "no details"


def _one_line_warnings(debug: bool) -> None:
    """Warnings as one line each: onnx-gig's own always, other libraries' only with --debug."""
    def show(message, category, filename, lineno, file=None, line=None):
        if debug or os.path.abspath(filename).startswith(_PACKAGE_DIR):
            print(f"onnx-gig: warning: {_one_line(message)}", file=sys.stderr)

    warnings.showwarning = show


def _attach_negative_values(argv: Sequence[str]) -> list[str]:
    """``--input-shape -1,3,224,224`` -> ``--input-shape=-1,3,224,224`` (argparse reads -1,... as an option)."""
    out = list(argv)
    for i in range(len(out) - 2, -1, -1):
        if out[i] == "--input-shape" and out[i + 1].startswith("-") and out[i + 1][1:2].isdigit():
            out[i:i + 2] = [f"{out[i]}={out[i + 1]}"]
    return out


def _command_in(argv: Sequence[str]) -> Optional[str]:
    """The subcommand named by ``argv`` (the first word that is not an option), if any."""
    words = [w for w in argv if not w.startswith("-")]
    return words[0] if words else None


def _stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has gone (poll says POLLERR), or when that cannot be asked; stdout
    then points at devnull, so the interpreter's own flush at exit does not print a second error."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        closed = any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no real stdout: the usual cause
        closed = True
    if closed:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (AttributeError, OSError, ValueError):
            pass
    return closed


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _attach_negative_values(sys.argv[1:] if argv is None else argv)
    only = _command_in(args)
    parser, handlers = build_parser(only)
    if only is not None and only not in handlers:  # unknown word: the full parser names the choices
        parser, handlers = build_parser()
    a = parser.parse_args(args)
    if not a.command:
        parser.print_help()
        return 2
    saved = warnings.showwarning
    _one_line_warnings(a.debug)
    try:
        return handlers[a.command](a)
    except GigError as exc:
        if a.debug:
            traceback.print_exc()
        print(f"onnx-gig: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if a.debug:
            traceback.print_exc()
        print("onnx-gig: interrupted; no partial output was left (a folder run or eval into --out-dir goes on "
              "with --resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if _stdout_closed():  # `onnx-gig inspect M | head -1`: the reader left; end quietly, as `yes | head` does
            return 128 + 13  # SIGPIPE's status in a shell
        if a.debug:
            traceback.print_exc()
        print("onnx-gig: error: internal error (BrokenPipeError); rerun with --debug for the traceback and report it",
              file=sys.stderr)
        return 1
    except MemoryError:
        if a.debug:
            traceback.print_exc()
        print("onnx-gig: error: out of memory; lower --max-memory or --steps", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: still one line, the traceback with --debug
        if a.debug:
            traceback.print_exc()
        print(f"onnx-gig: error: internal error ({type(exc).__name__}: {_one_line(exc)[:300]}); "
              "rerun with --debug for the traceback and report it", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = saved


if __name__ == "__main__":
    sys.exit(main())
