"""onnx-gig serve: converted models behind KServe's Python model server (v2 infer, v1 explain, the viewer)."""
from __future__ import annotations

import argparse
import socket
import sys
from typing import Callable, Optional

from ..errors import InputError
from ..runtime import parse_memory

NAME = "serve"
HELP = "serve converted models over HTTP with KServe (v2 infer, v1 explain with heatmaps, a page at /)"
DESCRIPTION = ("Start KServe's Python model server with one or more converted models. It answers the Open "
               "Inference Protocol (POST /v2/models/NAME/infer: the model's tensors in and out), the v1 explain "
               "call (POST /v1/models/NAME:explain: photos in, attributions and heatmap PNGs out), v1 predict, "
               "health and metrics, and shows a browser a page at / where photos are dropped and explained "
               "(JSON clients asking / get KServe's {\"status\": \"alive\"} as before). The same server runs in a "
               "KServe InferenceService (docs/serving.md). Needs: pip install 'onnx-gig[serve]'.")


def add_server_options(s: argparse.ArgumentParser, port_help: str, default_port: int) -> None:
    """What serve and view share: the models, where to listen, how to run, the upload limit."""
    s.add_argument("model", nargs="+", help="one or more models written by 'onnx-gig convert'")
    s.add_argument("--port", type=int, default=default_port, help=port_help)
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 exposes the server "
                        "to the network, e.g. in a container or cluster)")
    s.add_argument("--name", action="append", help="model name in the URLs (default: the file name without "
                                                   ".onnx); once per model")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: CUDA when it really loads, else CPU (default auto)")
    s.add_argument("--max-memory", help="memory budget of the server process, e.g. 2G (default: 40%% of free RAM, at most 4G); "
                                                "integration steps run in chunks that fit")
    s.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores)")
    s.add_argument("--max-upload", default="20M",
                   help="largest photo the page may upload, e.g. 20M (default 20M; larger uploads get HTTP 413)")


def listen_port(host: str, port: int) -> int:
    """``port`` if the server can listen on it at ``host`` right now (0: a free one, the OS's pick); else one line.

    Checked before the models load, so a port in use is said at once rather than after the start-up log.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no obstacle
            s.bind((host, port))
            return s.getsockname()[1]
    except OSError as exc:
        where, hint = (f"{host} port {port}", "; choose another --port") if port else (f"--host {host}", "")
        raise InputError(f"cannot listen on {where}: {exc.strerror or exc}{hint}") from None


def configure(s: argparse.ArgumentParser) -> None:
    add_server_options(s, "HTTP port (default 8080)", 8080)
    s.add_argument("--grpc-port", type=int, help="also serve the v2 protocol over gRPC on this port (all addresses)")


def start(a: argparse.Namespace, port: int, grpc_port: Optional[int] = None,
          on_listening: Optional[Callable[[], None]] = None) -> int:
    """Check the options, load the models, print what is served and serve until interrupted."""
    for p in [port] + ([grpc_port] if grpc_port is not None else []):
        if not 0 < p < 65536:
            raise InputError(f"port {p} is out of range (1-65535)")
    listen_port(a.host, port)
    max_upload = parse_memory(a.max_upload)
    if max_upload is None or max_upload <= 0:
        raise InputError(f"--max-upload must be a positive size such as 20M, got {a.max_upload!r}")
    try:
        from ..serving import kserve_server
    except ImportError as exc:
        raise InputError(f"onnx-gig {a.command} needs KServe's model server ({exc.name or exc} is missing): "
                         "pip install 'onnx-gig[serve]'") from None
    models = kserve_server.build_models(a.model, a.name, a.device, a.max_memory, a.threads)
    for m in models:
        print(f"serving '{m.name}' ({m.service.gm.method}, {m.service.gm.provider}) from {m.service.path}",
              file=sys.stderr)
    print(f"listening on http://{a.host}:{port}  (a browser: /; POST /v2/models/NAME/infer, "
          "POST /v1/models/NAME:explain)", file=sys.stderr, flush=True)
    if on_listening is not None:
        on_listening()
    kserve_server.serve(models, a.host, port, grpc_port, max_upload)
    return 0


def run(a: argparse.Namespace) -> int:
    return start(a, a.port, a.grpc_port)
