"""``torchrun --nproc-per-node N -m extension train ...``: one embedding trained by N processes.

Each process loads the model on its own device (``cuda:<local rank>``, or the CPU with gloo), and
the training loop splits every micro-batch over the processes (see
:mod:`extension.training.distributed`). Only rank 0 prints and writes. Ctrl-C and SIGTERM/SIGHUP on
any process ask all of them to stop after the same step; rank 0 then saves once.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from ..training.distributed import World, destroy_process_group, init_process_group, rank_device

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def stop_requests() -> Iterator[Callable[[], bool]]:
    """A ``should_stop`` that turns true at the first Ctrl-C / SIGTERM / SIGHUP (handlers restored after).

    Several processes cannot be cut mid-step (the others would wait in a collective forever), so a
    signal only raises the flag that every process checks at the next step boundary.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag.is_set
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def handler(signum, _frame):
        flag.set()

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)
    try:
        yield flag.is_set
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_distributed(args: argparse.Namespace, world: World) -> int:
    """The ``train`` command as one of ``world.size`` processes started by torchrun."""
    import torch

    from ..backends import ModelLoadError, load_backend
    from ..backends.loading import default_dtype
    from ..training.config import ConfigError
    from ..training.loop import TrainCallbacks, train
    from .train import config_from_args, exit_code, print_result

    say = (lambda m: print(m, file=sys.stderr)) if world.is_main else (lambda m: None)
    try:
        config = config_from_args(args)
        config.validate()
    except ConfigError as exc:
        say(f"error: {exc}")
        return 2
    device = rank_device(world, config.device or None)
    if device.type == "cuda" and not torch.cuda.is_available():
        say("error: --device cuda was given but this torch has no CUDA; leave --device out to train on the CPU")
        return 2
    init_process_group(world, device)
    try:
        say(f"training on {world.size} processes ({device.type}); global batch "
            f"{world.size} x {config.batch_size} x {config.grad_accumulation}")  # fmt: skip
        backend = load_backend(config.model, device=device, dtype=default_dtype(device, config.precision))
        callbacks = TrainCallbacks(on_message=say) if world.is_main else TrainCallbacks()
        if not world.is_main:
            config.progress_bar = False
        with stop_requests() as should_stop:
            result = train(config, backend, callbacks=callbacks, should_stop=should_stop, world=world)
        if world.is_main:
            print_result(result)
        # an agreed stop is a clean end for torchrun, which reports any non-zero exit as a failure
        # with a traceback; the message above says "interrupted ... continue with --resume"
        return 0 if result.reason == "interrupted" else exit_code(result.reason)
    except (ModelLoadError, ValueError) as exc:  # ConfigError, DatasetError, a model that cannot load
        say(f"error: {exc}")
        return 2
    except Exception as exc:  # one process failed: say which, and exit so torchrun stops the others
        print(f"error on process {world.rank} of {world.size}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        destroy_process_group(world)
