"""Differences between gradio 3.41 (the web UI) and 4.x (Forge, standalone), in one place."""

from __future__ import annotations

import importlib
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
