"""The web UI's prompt language: AND composition, prompt editing, emphasis, and a linter.

Order of application in the web UI: `split_and` (positive prompts only), then `schedule_prompt`
on each part, then `parse_emphasis` on each scheduled text. Chunking lives in the separate module
``chunking`` (import it directly).
"""

from .composition import split_and
from .emphasis import PromptSyntaxError, escape, parse_emphasis
from .lint import Diagnostic, lint
from .scheduling import schedule_prompt

__all__ = [
    "Diagnostic",
    "PromptSyntaxError",
    "escape",
    "lint",
    "parse_emphasis",
    "schedule_prompt",
    "split_and",
]
