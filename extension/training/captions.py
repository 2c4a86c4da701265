"""Captions of training images and their ``[filewords]`` text (tag shuffling and dropout).

A caption comes from a same-name text file next to the image (``cat.png`` -> ``cat.txt``), else from
the file name: its stem with leading numbers and separators removed (``00012-a cat.png`` -> ``a cat``,
as the web UI does), then optionally reduced to the matches of a word regex joined by a join string.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import torch

from .images import DatasetError

# Longer captions are cut (with a warning before training): every 75 tokens of a prompt cost one
# more text-encoder pass per step, and a megabyte of caption makes each step crawl.
MAX_CAPTION_CHARS = 2000
_LEADING_NUMBERS = re.compile(r"^[-\d]+\s*")
_EXTENSION = re.compile(r"^\.[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


def compile_word_regex(pattern: str) -> re.Pattern[str] | None:
    """Compile the file-name word regex (``""`` means none). Raises :class:`DatasetError` if invalid."""
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise DatasetError(
            f"Invalid file-name word regex {pattern!r}: {exc}. Fix the regular expression, or leave it "
            f"empty to use the whole file name."
        ) from exc


def normalise_extension(extension: str) -> str:
    """``"txt"`` or ``".txt"`` -> ``".txt"``; raises :class:`DatasetError` for an unusable extension."""
    ext = extension.strip()
    if not ext.startswith("."):
        ext = "." + ext
    if not _EXTENSION.match(ext):
        raise DatasetError(f"Invalid caption extension {extension!r}: use something like '.txt' or '.caption'.")
    return ext


def caption_from_filename(
    path: Path, word_regex: re.Pattern[str] | None = None, join: str = " "
) -> str:
    """The caption derived from a file name: stem without leading numbers, optionally regex words."""
    text = _LEADING_NUMBERS.sub("", Path(path).stem)
    if word_regex is not None:
        # Whole matches (not groups), so a pattern with groups still yields words.
        text = join.join(m.group(0) for m in word_regex.finditer(text))
    return text


def read_caption_file(path: Path, limit: int = MAX_CAPTION_CHARS) -> str:
    """A caption file's text: UTF-8 (BOM allowed), lines stripped and joined by single spaces, cut
    to ``limit`` characters (the rest of a longer file is never read)."""
    cap = limit * 4 + 4  # enough UTF-8 bytes for ``limit`` characters and a BOM
    with open(path, "rb") as fh:
        data = fh.read(cap)
    # a cut inside the last character is dropped; invalid bytes raise UnicodeDecodeError
    raw = codecs.getincrementaldecoder("utf-8-sig")().decode(data, final=len(data) < cap)
    return " ".join(line.strip() for line in raw.splitlines() if line.strip())[:limit].rstrip()


def caption_for(
    image_path: Path,
    caption_extension: str = ".txt",
    word_regex: re.Pattern[str] | None = None,
    join: str = " ",
) -> tuple[str, Path | None]:
    """The caption of ``image_path`` and the caption file it came from (``None`` = from the file name)."""
    image_path = Path(image_path)
    caption_path = image_path.with_suffix(caption_extension)
    if caption_path.is_file():
        try:
            return read_caption_file(caption_path), caption_path
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"Caption file {str(caption_path)!r} is not valid UTF-8 ({exc.reason} at byte {exc.start}): "
                f"re-save it as UTF-8."
            ) from exc
    return caption_from_filename(image_path, word_regex, join), None


def split_tags(caption: str) -> list[str]:
    """The comma-separated tags of a caption, stripped, empty ones removed."""
    return [tag.strip() for tag in caption.split(",") if tag.strip()]


def filewords(
    caption: str, generator: torch.Generator, *, shuffle: bool = False, dropout: float = 0.0
) -> str:
    """The ``[filewords]`` text of a caption after tag dropout and shuffling.

    Without shuffling or dropout the caption is returned unchanged. Otherwise its tags (split on
    ``,``) each survive with probability ``1 - dropout`` and are then shuffled, both drawn from
    ``generator``, and rejoined with ``", "``; the same generator state gives the same text.
    """
    if not shuffle and dropout <= 0:
        return caption
    tags = split_tags(caption)
    if dropout > 0 and tags:
        keep = torch.rand(len(tags), generator=generator) >= dropout
        tags = [tag for tag, k in zip(tags, keep.tolist()) if k]
    if shuffle and len(tags) > 1:
        order = torch.randperm(len(tags), generator=generator).tolist()
        tags = [tags[i] for i in order]
    return ", ".join(tags)
