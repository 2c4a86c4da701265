"""Extra-network tags (``<lora:name:0.8>``), which the web UI removes before any prompt parsing."""

from __future__ import annotations

import re

EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


def strip_extra_networks(text: str) -> str:
    """The prompt with every ``<kind:args>`` tag removed, as the web UI does before parsing."""
    return EXTRA_NETWORK.sub("", text)
