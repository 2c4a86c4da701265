"""Registration of TI Trainer's callbacks with the web UI (called from ``scripts/ti_trainer.py``)."""

from __future__ import annotations


def register() -> None:
    """Register the tab, settings and API callbacks with ``modules.script_callbacks``."""
    from modules import script_callbacks  # the host's module: only importable inside the web UI

    from . import callbacks

    script_callbacks.on_ui_tabs(callbacks.on_ui_tabs)
    script_callbacks.on_ui_settings(callbacks.on_ui_settings)
    script_callbacks.on_app_started(callbacks.on_app_started)
    script_callbacks.on_script_unloaded(callbacks.on_script_unloaded)
