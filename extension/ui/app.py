"""The standalone server of ``python -m extension ui``: the tab as a page, the API beside it."""

from __future__ import annotations

from pathlib import Path

from .compat import gradio_major, import_gradio
from .service import TrainerService
from .tab import TAB_TITLE, build_tab

ROOT = Path(__file__).resolve().parents[2]  # the extension's folder (style.css, javascript/)


def page_css() -> str:
    """The extension's ``style.css`` (empty when the file is missing)."""
    try:
        return (ROOT / "style.css").read_text(encoding="utf-8")
    except OSError:
        return ""


def _tolerate_boolean_schemas() -> None:
    """Let gradio 4.40's API-info code read JSON schemas that are plain booleans.

    With pydantic >= 2.11 a free-form ``dict`` field (gradio's ``FileData.meta``) has the schema
    ``additionalProperties: true``; gradio_client 1.2 then fails with "argument of type 'bool' is
    not iterable" on every page load of an app with an image, file or gallery (fixed in later
    gradio releases). Only the standalone server applies this; the web UI and Forge pin their own
    pydantic and are left untouched.
    """
    try:
        from gradio_client import utils
    except ImportError:  # gradio 3: no gradio_client API-info code of this kind
        return
    original = getattr(utils, "_json_schema_to_python_type", None)
    if original is None or getattr(original, "_ti_trainer_tolerant", False):
        return

    def tolerant(schema, defs=None):
        if isinstance(schema, bool):
            return "Any"
        return original(schema, defs)

    tolerant._ti_trainer_tolerant = True  # type: ignore[attr-defined]
    utils._json_schema_to_python_type = tolerant


def build_page(service: TrainerService):
    """The tab as a page of its own (queue enabled, needed for the status timer)."""
    gr = import_gradio()
    _tolerate_boolean_schemas()
    page = build_tab(service, css=page_css(), title=TAB_TITLE)
    if gradio_major(gr) < 4:  # gradio 3 runs each open page's status poll on a queue worker of its own
        page.queue(concurrency_count=16)
    else:
        page.queue()
    return page


def create_app(service: TrainerService, *, api: bool = True):
    """A FastAPI app serving the page at ``/`` and, with ``api``, the REST API."""
    from fastapi import FastAPI

    gr = import_gradio()
    app = FastAPI(title=TAB_TITLE)
    if api:
        from ..webui.api import mount_api

        mount_api(app, service)
    return gr.mount_gradio_app(app, build_page(service), path="/")


def serve(service: TrainerService, *, host: str = "127.0.0.1", port: int = 7861, api: bool = True) -> None:
    """Run the server until interrupted."""
    import uvicorn

    app = create_app(service, api=api)
    print(
        f"TI Trainer: http://{host}:{port}/" + (f"  (API: http://{host}:{port}/docs)" if api else ""),
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
