"""HTML the tab shows: the status card, the picked embedding, the files of a run and its
snapshots. Every text passes through :func:`wording.tab_words` and ``html.escape``."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

from .catalog import EmbeddingInfo
from .jobs import JobStatus
from .snapshots import Snapshot
from .wording import tab_words

STATUS_MESSAGES = 2  # the newest messages of the job shown under the figures, newest first


def error_html(message: str, *, overwrite_label: str | None = None) -> str:
    return f"<span class='ti_trainer_error'>{html.escape(tab_words(message, overwrite_label=overwrite_label))}</span>"


def problems_html(problems: Sequence[str]) -> str:
    """One problem as a line, several as a list under "Cannot start"."""
    if len(problems) > 1:
        items = "".join(f"<li>{html.escape(tab_words(p))}</li>" for p in problems)
        return f"<div class='ti_trainer_error'>Cannot start:<ul>{items}</ul></div>"
    return error_html(problems[0] if problems else "")


def status_html(st: JobStatus) -> str:
    """The status card: headline, a progress bar, the figures, timing, error and newest messages.

    ``data-state``, ``data-step`` and ``data-job`` carry the job's state for scripts and tests.
    """
    attrs = (
        f"data-state='{html.escape(st.state)}' data-step='{st.step}' "
        f"data-job='{html.escape(st.job_id or '')}' data-reason='{html.escape(st.reason or '')}'"
    )
    parts = [f"<div class='ti_trainer_status_head'>{html.escape(st.headline())}</div>"]
    if st.max_steps:
        parts.append(
            f"<div class='ti_trainer_status_steps'><progress max='{st.max_steps}' value='{min(st.step, st.max_steps)}'>"
            f"</progress> step {st.step} / {st.max_steps}</div>"
        )
    if st.state != "idle":
        figures = " · ".join(x for x in (st.figures(), st.timing()) if x)
        parts.append(f"<div class='ti_trainer_status_figures'>{html.escape(figures)}</div>")
    if st.error:
        parts.append(error_html(st.error))
    messages = [m for m in reversed(st.messages[-STATUS_MESSAGES:]) if m != st.error]
    if messages:
        items = "".join(f"<li>{html.escape(tab_words(m))}</li>" for m in messages)
        parts.append(f"<ul class='ti_trainer_status_messages'>{items}</ul>")
    return f"<div class='ti_trainer_status_card' {attrs}>{''.join(parts)}</div>"


def embedding_html(info: EmbeddingInfo | None, problem: str | None = None) -> str:
    """The line under the picker: name, step, vectors, family and file name (full path on hover)."""
    if problem:
        return error_html(problem)
    if info is None:
        return "<span class='ti_trainer_muted'>No embedding yet: create or import one.</span>"
    step = "not trained yet (step 0)" if not info.step else f"step {info.step}"
    return (
        f"<span data-embedding='{html.escape(info.name)}' data-step='{info.step or 0}'>"
        f"<b>{html.escape(info.name)}</b>: {step}, vectors {html.escape(info.shape)} ({html.escape(info.family)})"
        f" · <code title='{html.escape(info.path)}'>{html.escape(Path(info.path).name)}</code></span>"
    )


def files_html(files: Sequence[str], run_dir: str | None) -> str:
    """The files a run wrote: the run folder once, then each file relative to it, one a line and
    never broken inside a path (a long line scrolls)."""
    if not files:
        return "<div class='ti_trainer_files_list ti_trainer_muted'>No files written yet.</div>"
    lines = []
    if run_dir:
        lines.append(f"<div>Run folder: <code>{html.escape(run_dir)}</code></div>")
    items = []
    for f in files:
        shown = f
        if run_dir:
            try:
                rel = os.path.relpath(f, run_dir)
                if not rel.startswith(".."):
                    shown = rel
            except ValueError:  # another drive on Windows
                pass
        items.append(f"<li><code title='{html.escape(f)}'>{html.escape(shown)}</code></li>")
    lines.append(f"<ul>{''.join(items)}</ul>")
    return f"<div class='ti_trainer_files_list'>{''.join(lines)}</div>"


def _loss(value: float | None) -> str:
    return "–" if value is None else f"{value:.5f}"


def snapshots_html(run: str, snapshots: Sequence[Snapshot], current_step: int | None) -> str:
    """The run's snapshots as a table: step, smoothed training loss, validation loss; the lowest
    validation loss and the snapshot the embedding is at now are marked."""
    if not snapshots:
        return "<div class='ti_trainer_muted'>No snapshots in this run.</div>"
    rows = []
    for s in snapshots:
        marks = []
        if s.best:
            marks.append("<span class='ti_trainer_best'>★ lowest validation loss</span>")
        if current_step is not None and s.step == current_step:
            marks.append("<span class='ti_trainer_current'>the embedding's step now</span>")
        cls = " class='ti_trainer_best_row'" if s.best else ""
        rows.append(
            f"<tr{cls} data-step='{s.step}'><td>{s.step}</td><td>{_loss(s.loss)}</td>"
            f"<td>{_loss(s.validation_loss)}</td><td>{'✓' if s.preview else ''}</td><td>{' '.join(marks)}</td></tr>"
        )
    note = ""
    if not any(s.validation_loss is not None for s in snapshots):
        note = (
            "<div class='ti_trainer_muted'>No validation loss at these steps: turn on \"Validation loss every N "
            "steps\" with a number that divides the snapshot interval to rank snapshots.</div>"
        )
    return (
        f"<div class='ti_trainer_muted'>Run <code>{html.escape(run)}</code></div>"
        "<table class='ti_trainer_snapshots'><thead><tr><th>Step</th><th>Training loss (smoothed)</th>"
        f"<th>Validation loss</th><th>Preview</th><th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>{note}"
    )


def snapshot_label(s: Snapshot) -> str:
    """How a snapshot is named in the picker and under its preview."""
    text = f"step {s.step}"
    if s.validation_loss is not None:
        text += f" · validation {s.validation_loss:.5f}"
    if s.best:
        text += " ★"
    return text
