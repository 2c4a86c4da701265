"""Differences between gradio 3.41 (the web UI) and 4.x (Forge, standalone), in one place."""

from __future__ import annotations

import importlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


def import_gradio():
    """``import gradio``, also where huggingface_hub is too new for gradio 4.

    gradio 4.x imports ``huggingface_hub.HfFolder``, which huggingface_hub 1.0 removed (recent
    transformers need that hub). Only the token lookup of that class is used, so when it is
    missing a minimal stand-in over ``huggingface_hub.get_token`` is added before importing.
    Inside the web UI gradio is already imported and nothing is touched.
    """
    try:
        return importlib.import_module("gradio")
    except ImportError as exc:
        if "HfFolder" not in str(exc):
            raise
    import huggingface_hub

    class HfFolder:  # what gradio.oauth uses: HfFolder.get_token()
        @staticmethod
        def get_token() -> str | None:
            return huggingface_hub.get_token()

    huggingface_hub.HfFolder = HfFolder
    return importlib.import_module("gradio")


def gradio_major(gr) -> int:
    return int(str(gr.__version__).split(".")[0])


def js_kwargs(gr, code: str | None) -> dict[str, Any]:
    """The event keyword for client-side JS: ``_js`` in gradio 3, ``js`` in gradio 4."""
    if not code:
        return {}
    return {"js": code} if gradio_major(gr) >= 4 else {"_js": code}


def file_path(value) -> str | None:
    """The local path of an uploaded file: a str in gradio 4, a tempfile wrapper in gradio 3."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # gradio 4 FileData as a dict
        return value.get("path") or value.get("name")
    return getattr(value, "name", None) or getattr(value, "path", None)


def plot_kwargs(gr) -> dict[str, Any]:
    """``gr.Plot`` options: sharp PNG pictures in gradio 4 (its default, webp, blurs thin text);
    gradio 3 always sends PNG and has no such option."""
    return {"format": "png"} if gradio_major(gr) >= 4 else {}


PollFn = Callable[[dict], tuple]
_SESSIONS_KEPT = 256


def poll(gr, blocks, fn: PollFn, outputs: list, seconds: float) -> None:
    """Run ``fn(memory)`` every ``seconds`` while a page is open and show its outputs.

    ``memory`` is a dict of its own per open page, so ``fn`` can send ``gr.update()`` for what
    that page already shows. The poll takes no inputs: gradio 3 repeats an ``every`` event with
    the values the page had when it loaded (stale after any change), and gradio 4's client warns
    about inputs it does not list (gr.State). gradio 3 runs one generator per page (``every``
    wraps it in a loop that only ends with the page); gradio 4 ticks a timer, and the page is told
    apart by its session.
    """
    if gradio_major(gr) >= 4:
        sessions: OrderedDict[str, dict] = OrderedDict()

        def tick(request):
            key = getattr(request, "session_hash", None) or ""
            memory = sessions.setdefault(key, {})
            sessions.move_to_end(key)
            while len(sessions) > _SESSIONS_KEPT:
                sessions.popitem(last=False)
            return fn(memory)

        tick.__annotations__ = {"request": gr.Request}  # gradio passes the request by this hint
        blocks.load(tick, None, outputs, every=seconds, show_progress="hidden")
        return

    def stream():
        memory: dict = {}
        while True:
            yield fn(memory)
            time.sleep(seconds)

    blocks.load(stream, None, outputs, every=seconds, show_progress="hidden")
