"""The prompt inspector of the tab and the API: a prompt in; its runs with weights, chunks with
token counts, the embeddings it uses and lint warnings out.

The analysis itself is ``inspect-prompt``'s (``cli/inspect_prompt.py``), so the command line, the
tab and the API always agree.
"""

from __future__ import annotations

import argparse
import html
from collections.abc import Mapping
from typing import Any


def inspect_prompt(
    text: str,
    embeddings: Mapping[str, int] | None = None,
    *,
    emphasis: str = "Original",
    comma_backtrack: int = 20,
    steps: int = 20,
    openclip: bool = False,
    negative: bool = False,
) -> dict[str, Any]:
    """The ``inspect-prompt --json`` analysis of ``text``; ``embeddings`` maps the known embedding
    names to their vector counts (only those found in the prompt are listed)."""
    from ..cli.inspect_prompt import analyse

    known = {str(k): int(v) for k, v in (embeddings or {}).items() if int(v) >= 1}
    args = argparse.Namespace(
        prompt=text,
        embedding=list(known.items()),
        steps=int(steps),
        comma_backtrack=int(comma_backtrack),
        emphasis=emphasis,
        openclip=openclip,
        negative=negative,
    )
    result = analyse(args)
    # only the embeddings this prompt uses: the folder may hold hundreds
    result["embeddings"] = {name: info for name, info in result["embeddings"].items() if info["used"]}
    return result


def format_inspection(result: dict[str, Any]) -> str:
    """The analysis as ``inspect-prompt`` prints it, in a preformatted block for the tab."""
    from ..cli import inspect_prompt as cli

    return f"<pre class='ti_trainer_inspect_text'>{html.escape(cli.format_text(result))}</pre>"
