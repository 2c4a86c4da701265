"""The web UI callbacks TI Trainer registers (see :mod:`.entry`): the tab, its settings section,
the REST API and cleanup when the script is unloaded."""

from __future__ import annotations

from . import glue

TAB_TITLE = "TI Trainer"
TAB_ID = "ti_trainer"


def on_ui_tabs():
    """Build the "TI Trainer" tab over the web UI adapter."""
    from ..ui.tab import build_tab
    from .host_adapter import get_service

    blocks = build_tab(get_service())
    return [(blocks, TAB_TITLE, TAB_ID)]


def on_ui_settings() -> None:
    """Add the "TI Trainer" section (every key starts with ``ti_trainer_``)."""
    import gradio as gr
    from modules import shared

    for s in glue.SETTINGS:
        if s.choices:
            info = shared.OptionInfo(
                s.default, s.label, gr.Radio, {"choices": list(s.choices)}, section=glue.SETTINGS_SECTION
            )
        elif isinstance(s.default, int):
            info = shared.OptionInfo(
                s.default,
                s.label,
                gr.Number,
                {"precision": 0, "minimum": s.minimum},
                section=glue.SETTINGS_SECTION,
            )
        elif s.key == "ti_trainer_preview_sampler":
            info = shared.OptionInfo(
                s.default, s.label, gr.Dropdown, _sampler_choices, section=glue.SETTINGS_SECTION
            )
        else:
            info = shared.OptionInfo(s.default, s.label, section=glue.SETTINGS_SECTION)
        shared.opts.add_option(s.key, info)


def _sampler_choices() -> dict[str, object]:
    from modules import sd_samplers

    return {"choices": [x.name for x in sd_samplers.visible_samplers()]}


def on_app_started(demo, app) -> None:
    """Mount ``/ti-trainer/v1`` when the web UI serves its API, behind its ``--api-auth``."""
    from modules import shared

    opts = shared.cmd_opts
    if not glue.should_mount_api(
        api=bool(getattr(opts, "api", False)),
        nowebui=bool(getattr(opts, "nowebui", False)),
        no_api_flag=bool(getattr(opts, "ti_trainer_no_api", False)),
    ):
        return
    from .api import mount_api
    from .host_adapter import get_service

    mount_api(app, get_service(), dependencies=_auth_dependencies(getattr(opts, "api_auth", None)))


def _auth_dependencies(api_auth: str | None) -> list:
    """FastAPI dependencies asking for HTTP Basic credentials of ``--api-auth`` (none without it)."""
    credentials = glue.parse_api_auth(api_auth)
    if not credentials:
        return []
    from secrets import compare_digest

    from fastapi import Depends, HTTPException
    from fastapi.security import HTTPBasic

    basic = HTTPBasic()

    # no annotation: with postponed annotations FastAPI would look the type up in this module's globals
    def check(given=Depends(basic)) -> bool:  # noqa: B008 - FastAPI's idiom
        expected = credentials.get(given.username)
        if expected is not None and compare_digest(given.password.encode(), expected.encode()):
            return True
        raise HTTPException(
            status_code=401, detail="Incorrect username or password", headers={"WWW-Authenticate": "Basic"}
        )

    return [Depends(check)]


def on_script_unloaded() -> None:
    """Undo whatever a training session left on the host and stop a running job."""
    from .host_adapter import drop_adapter

    drop_adapter()
