"""``python -m extension ui``: the TI Trainer tab in the browser, on the standalone backend."""

from __future__ import annotations

import argparse
import errno
import socket
import sys
import threading

HELP = "serve the TI Trainer tab (and its REST API) in the browser, without the web UI"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="tiny-sd1",
        help="tiny-sd1/tiny-sd2/tiny-sdxl, random-sd15/random-sd2v/random-sdxl (full size, random weights), "
        "a diffusers folder or a .safetensors checkpoint (default: tiny-sd1)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7861, help="port (default: 7861)")
    parser.add_argument(
        "--api",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the REST API under /ti-trainer/v1/ (default: on)",
    )
    parser.add_argument(
        "--embeddings-dir",
        default="ti_trainer_output/embeddings",
        help="where embeddings are created, trained and imported",
    )
    parser.add_argument(
        "--log-dir",
        default="ti_trainer_output/textual_inversion",
        help="where training runs write logs, snapshots and previews",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "fp16", "bf16"),
        help="the weight dtype the model is loaded in, which decides the precisions the tab can train in "
        "(auto: bf16 on GPUs with native bf16, fp16 on other GPUs, fp32 on the CPU; fp32 allows every choice "
        "on the CPU and fp32 training on a GPU)",
    )


def _warm_up(adapter) -> None:
    try:
        adapter.backend()
    except Exception as exc:  # shown again, with its message, by the first action that needs it
        print(f"TI Trainer: cannot load the model {adapter.model!r}: {exc}")


def port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port`` (checked before anything is loaded), or None."""
    if not 0 < port < 65536:
        return f"port {port} is out of range; use 1-65535"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        return f"--host {host!r} is not an address of this machine ({exc}); use e.g. 127.0.0.1 or 0.0.0.0"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use (another server is running there); pass another --port, e.g. {port + 1}"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}; pass another --host or --port"
    return None


def run(args: argparse.Namespace) -> int:
    problem = port_problem(args.host, args.port)
    if args.device and problem is None:
        from ..training.config import device_problem

        problem = device_problem(args.device)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from ..ui.adapter import StandaloneAdapter
    from ..ui.app import serve
    from ..ui.service import TrainerService

    adapter = StandaloneAdapter(
        args.model, embeddings_dir=args.embeddings_dir, log_dir=args.log_dir, device=args.device,
        precision=args.precision,
    )  # fmt: skip
    # load the model while the page is being opened, so the first action does not wait for it
    threading.Thread(target=_warm_up, args=(adapter,), name="ti_trainer_load_model", daemon=True).start()
    serve(TrainerService(adapter), host=args.host, port=args.port, api=args.api)
    return 0
