"""Prompt templates: text files with one prompt per line using ``[name]`` and ``[filewords]``.

Our own set ships in ``extension/data/templates``; the web UI's ``textual_inversion_templates``
folder can be added with :func:`template_dirs` when running inside it. A template is chosen by name
(the file stem, looked up in the folders in order, first one wins) or by a path to any text file.
An added folder comes before ours: a user's own (perhaps edited) ``subject_filewords.txt`` wins over
the bundled file of the same name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .captions import filewords
from .images import DatasetError

SHIPPED_TEMPLATES = Path(__file__).resolve().parent.parent / "data" / "templates"
TEMPLATE_SUFFIX = ".txt"


def template_dirs(extra: Sequence[Path] = ()) -> list[Path]:
    """The folders searched for template names: ``extra`` first (e.g. the web UI's, the user's own
    files), then ours, which only supplies the names the others lack."""
    dirs: list[Path] = []
    for folder in [*map(Path, extra), SHIPPED_TEMPLATES]:
        if folder not in dirs:
            dirs.append(folder)
    return dirs


def available_templates(dirs: Sequence[Path] | None = None) -> dict[str, Path]:
    """Template name -> file for every ``*.txt`` in ``dirs`` (earlier folders win on name clashes)."""
    found: dict[str, Path] = {}
    for folder in template_dirs() if dirs is None else dirs:
        if not Path(folder).is_dir():
            continue
        for path in sorted(Path(folder).glob(f"*{TEMPLATE_SUFFIX}")):
            found.setdefault(path.stem, path)
    return found


def resolve_template(template: str | Path, dirs: Sequence[Path] | None = None) -> Path:
    """The file of a template given by name or path; :class:`DatasetError` if there is none."""
    known = available_templates(dirs)
    text = str(template).strip()
    names = ", ".join(sorted(known)) or "(none found)"
    if not text:
        raise DatasetError(f"No prompt template given: choose one of {names}, or pass a template file.")
    if text in known:
        return known[text]
    path = Path(text).expanduser()
    looks_like_path = path.suffix != "" or len(path.parts) > 1
    if looks_like_path and path.is_file():
        return path
    if looks_like_path:
        raise DatasetError(
            f"Template file {text!r} does not exist: pass an existing .txt file, or one of the "
            f"template names {names}."
        )
    raise DatasetError(f"Unknown prompt template {text!r}: choose one of {names}, or pass a template file.")


def read_template(path: Path) -> list[str]:
    """The non-blank lines of a template file; :class:`DatasetError` if it is unusable.

    A template must have at least one line containing ``[name]``, otherwise the embedding being
    trained never appears in a prompt and nothing would be learned.
    """
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"Template {str(path)!r} is not valid UTF-8: re-save it as UTF-8.") from exc
    except OSError as exc:
        raise DatasetError(f"Template {str(path)!r} cannot be read ({exc.strerror or exc}).") from exc
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    if not lines:
        raise DatasetError(
            f"Template {str(path)!r} is empty: write one prompt per line, using [name] for the "
            f"embedding and [filewords] for the image caption."
        )
    if not any("[name]" in line for line in lines):
        raise DatasetError(
            f"Template {str(path)!r} has no line containing [name], so the embedding would never be "
            f"trained: add [name] to its prompts (e.g. 'a photo of [name]') or pick another template."
        )
    return lines


def load_template(template: str | Path, dirs: Sequence[Path] | None = None) -> list[str]:
    """Resolve ``template`` (name or path) and read its lines."""
    return read_template(resolve_template(template, dirs))


def render_prompt(
    lines: Sequence[str],
    name: str,
    caption: str,
    generator: torch.Generator,
    *,
    shuffle_tags: bool = False,
    tag_dropout: float = 0.0,
) -> str:
    """One prompt: a template line drawn from ``generator``, ``[filewords]`` then ``[name]`` filled in.

    ``[filewords]`` is replaced first, as in the web UI, so a caption may itself contain ``[name]``.
    """
    index = int(torch.randint(len(lines), (1,), generator=generator)) if len(lines) > 1 else 0
    line = lines[index]
    if "[filewords]" in line:
        line = line.replace("[filewords]", filewords(caption, generator, shuffle=shuffle_tags, dropout=tag_dropout))
    return line.replace("[name]", name)
