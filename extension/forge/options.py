"""Tab defaults that Forge needs differently from the web UI: host-free."""

from __future__ import annotations

from pathlib import Path


def host_template_dir(path: str | None) -> str:
    """The host's prompt-template folder to offer as the extra template folder, or "" for none.

    Forge dropped the web UI's ``textual_inversion_templates`` folder but kept the
    ``--textual-inversion-templates-dir`` option that points at it, so offering the option's
    value as it is made every run fail its up-front check ("template folder does not exist").
    """
    if not path or not Path(path).is_dir():
        return ""
    return str(path)
