"""Messages in the tab's words.

The core (options check, training loop, dataset) speaks to the command line: ``--data``, "raise
--steps", ``max_steps``. The tab shows the same messages with its own labels and buttons instead;
the command line keeps its wording.
"""

from __future__ import annotations

import re

from .fields import LABELS, short_label

# Whole phrases first: they read better than a word-by-word mapping. ("resume (--resume)" is
# reduced to "--resume" before these apply.)
PHRASES: list[tuple[str, str]] = [
    (r"pass --name NAME", "pick an embedding"),
    (r"pass --data DIR \(a folder of images\)", 'fill in "Dataset folder" (a folder of images)'),
    (r"lower --batch-size or pass --clamp-batch", 'lower "Batch size" or tick "Clamp batch size to the dataset"'),
    (r"drop --resume to start a new embedding", "press Train instead"),
    (
        r"(?:pass|set) --resume to continue training it,? or --overwrite to replace it",
        'press Resume to continue training it, or create it again with "Overwrite an existing embedding" '
        "ticked to start over",
    ),
    (r"raise --steps to continue", 'raise "Max steps" to continue'),
    (r"continue with --resume", "press Resume to continue"),
    (r"or pass --zeros", 'or leave "Initialization text" empty to start from zeros'),
    (r"pass overwrite=True \(or --overwrite\) to replace it", "choose another name"),
    (r"--resume\b", "Resume"),
    (r"--overwrite\b", '"Overwrite an existing embedding"'),
    (r"\blearn_rate schedule\b", "Learning rate schedule"),
    (r"\bclip_grad_value schedule\b", "Gradient clipping value schedule"),
    (r"\bclip gradients by norm\b", 'set "Gradient clipping" to norm'),
]
# "resume (--resume)": an option named twice, as the API and the CLI call it
_NAMED_TWICE = re.compile(r"\b([a-z_]+) \(--([a-z-]+)\)")

_FLAG_ALIASES = {"steps": "max_steps"}
_FLAG = re.compile(r"--([a-z][a-z0-9-]*)")
_SNAKE_FIELDS = sorted((n for n in LABELS if "_" in n), key=len, reverse=True)
# an option name, not part of a path or a file name
_SNAKE = re.compile(r"(?<![\w/\\.])(" + "|".join(_SNAKE_FIELDS) + r")(?![\w/\\]|\.\w)")
# one-word option names, only where a message starts with them ("width 7 is not ...")
_LEADING = re.compile(r"^(" + "|".join(n for n in LABELS if "_" not in n) + r")\b")


def _flag_label(match: re.Match) -> str:
    name = match.group(1).replace("-", "_")
    name = _FLAG_ALIASES.get(name, name)
    return f'"{short_label(name)}"' if name in LABELS else match.group(0)


def tab_words(message: str, *, overwrite_label: str | None = None) -> str:
    """``message`` with command-line flags and option names replaced by the tab's labels.

    ``overwrite_label`` is the label of the checkbox that "tick overwrite" refers to in the section
    the message belongs to.
    """
    text = _NAMED_TWICE.sub(
        lambda m: f"--{m.group(2)}" if m.group(1).replace("_", "-") == m.group(2) else m.group(0), str(message)
    )
    for pattern, replacement in PHRASES:
        text = re.sub(pattern, replacement, text)
    if overwrite_label:
        text = re.sub(r"\btick overwrite\b", f'tick "{overwrite_label}"', text)
    text = _FLAG.sub(_flag_label, text)
    text = _SNAKE.sub(lambda m: short_label(m.group(1)), text)
    return _LEADING.sub(lambda m: short_label(m.group(1)), text)
