"""The "TI Trainer" tab: the same gradio Blocks in the web UI (gradio 3.41), Forge (4.40) and
standalone. It only calls :class:`TrainerService`; host differences live in the adapter.

Layout: the left column sets a run up (the embedding, then what a first training needs, the
rest folded away); the right column is the run in view (Train / Interrupt / Resume, status, live
loss plot, previews), with the run's files, its snapshots and the other tools below.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..schedule import LearnRateSchedule
from ..training import config as cfg
from ..training.charts import LIVE_PLOT_SIZE, loss_figure, rate_text, schedule_figure
from .compat import file_path, import_gradio, js_kwargs, plot_kwargs, poll
from .fields import FIRST_ROWS, FOLDED, LABELS, NOT_FIELDS, option_component, options_from_values, tab_fields
from .jobs import JobStatus
from .service import TrainerService, UserError
from .snapshots import latest_preview
from .views import (
    embedding_html,
    error_html,
    files_html,
    problems_html,
    snapshot_label,
    snapshots_html,
    status_html,
)

__all__ = [
    "BENCH_INPUTS", "LABELS", "NOT_FIELDS", "TAB_ID", "TAB_TITLE", "bench_options", "build_tab",
    "options_from_values", "schedule_preview", "tab_fields",
]  # fmt: skip

TAB_TITLE = "TI Trainer"
TAB_ID = "ti_trainer"
POLL_SECONDS = 1.0
PICTURE_SOURCES = ("Last preview", "Uploaded picture", "Plain")
IMPORT_TYPES = [".pt", ".bin", ".safetensors", ".png", ".webp"]
CREATE_OVERWRITE = "Overwrite an existing embedding"
IMPORT_OVERWRITE = "Replace an embedding of that name"

# The Benchmark accordion (host only): component label -> BenchSettings field, with its default
BENCH_INPUTS: list[tuple[str, str, int]] = [
    ("Timed steps", "steps", 20),
    ("Warm-up steps", "warmup", 5),
    ("Benchmark batch size", "batch_size", 2),
    ("Benchmark gradient accumulation", "grad_accumulation", 2),
    ("Benchmark image size (0 = the model's native size)", "size", 0),
]


def bench_options(values: list[Any]) -> dict[str, int]:
    """The Benchmark accordion's numbers (in :data:`BENCH_INPUTS` order) -> BenchSettings options.
    Raises UserError for an empty or fractional number."""
    out: dict[str, int] = {}
    for (label, key, _), value in zip(BENCH_INPUTS, values):
        if value is None or value == "":
            raise UserError(f"{label} is empty; enter a number")
        number = float(value)
        if number != int(number):
            raise UserError(f"{label} must be a whole number, got {value}")
        out[key] = int(number)
    return out


def schedule_preview(text: str, max_steps: int):
    """(figure, message) for the learning-rate field: the stages drawn and summed up, or no
    figure and the parse error (shown under the field before anything starts)."""
    try:
        schedule = LearnRateSchedule.parse(text, int(max_steps))
    except (ValueError, TypeError) as exc:
        return None, f"Error: {exc}"
    message = "; ".join(f"{rate_text(s.rate)} for steps {s.start}-{s.end - 1}" for s in schedule.stages)
    if schedule.end_step < schedule.max_steps:
        message += f". Training stops at step {schedule.end_step}, before Max steps {schedule.max_steps}."
    return schedule_figure(schedule), message


def _annotate(fn, **hints):
    """Give a handler the type hints gradio looks for (gr.Request, gr.SelectData): the names are
    local to :func:`build_tab`, where string annotations could not be resolved."""
    fn.__annotations__ = dict(hints)
    return fn


def _step_of_label(label: str | None) -> int | None:
    m = re.match(r"step (\d+)", label or "")
    return int(m.group(1)) if m else None


def _job_marker(st: JobStatus) -> str | None:
    """What the hidden job marker shows: the last job that ended (None while one runs)."""
    return None if st.active else f"{st.job_id}:{st.state}"


def _message(text: str) -> str:
    return f"<span class='ti_trainer_ok'>{text}</span>"


def build_tab(service: TrainerService, *, css: str | None = None, title: str | None = None):
    """The tab's Blocks (not launched). The web UI's ``on_ui_tabs`` returns it with the title
    :data:`TAB_TITLE` and id :data:`TAB_ID`; the standalone server passes ``css`` and ``title``
    to make it a page of its own."""
    gr = import_gradio()
    page = {k: v for k, v in (("css", css), ("title", title)) if v is not None}
    with gr.Blocks(analytics_enabled=False, **page) as tab, gr.Column(elem_id="ti_trainer_tab"):
        ui = _layout(gr, service)
        _wire(gr, tab, service, ui)
    return tab


# ---------------------------------------------------------------------------------------- layout


def _layout(gr, service: TrainerService) -> SimpleNamespace:
    """Every component, in page order; returned by name for the wiring."""
    defaults = service.defaults()
    names0 = [e.name for e in service.embeddings()]
    ui = SimpleNamespace(options={}, defaults=defaults)
    ui.task_id = gr.Textbox(visible=False, elem_id="ti_trainer_task_id")
    # moves when a job ends while the page is open; its change event reads the picker's current value
    ui.job_marker = gr.Textbox(visible=False, elem_id="ti_trainer_job_marker")
    with gr.Row(equal_height=False, elem_id="ti_trainer_columns"):
        with gr.Column(scale=1, elem_id="ti_trainer_setup"):
            _setup_column(gr, service, ui, names0)
        with gr.Column(scale=1, elem_id="ti_trainer_results"):
            _run_column(gr, service, ui, names0)
    return ui


def _setup_column(gr, service: TrainerService, ui: SimpleNamespace, names0: list[str]) -> None:
    defaults = ui.defaults
    ui.model = gr.HTML(_model_html(service.adapter.model_label()), elem_id="ti_trainer_model")
    with gr.Row(elem_classes=["ti_trainer_picker"]):
        ui.embedding = gr.Dropdown(
            names0, value=names0[0] if names0 else None, label="Embedding to train",
            elem_id="ti_trainer_embedding", scale=5,
        )  # fmt: skip
        ui.refresh = gr.Button("↻", elem_id="ti_trainer_refresh", scale=0, min_width=48, size="sm")
    ui.info = gr.HTML(_embedding_line(service, names0[0] if names0 else None), elem_id="ti_trainer_embedding_info")
    with gr.Accordion("Create embedding", open=not names0, elem_id="ti_trainer_create_group") as ui.create_group:
        ui.create_name = gr.Textbox(label="Name", elem_id="ti_trainer_create_name", max_lines=1)
        ui.create_init = gr.Textbox(value="*", label="Initialization text", elem_id="ti_trainer_create_init", max_lines=1)
        ui.create_vectors = gr.Slider(1, 75, value=1, step=1, label="Vectors per token", elem_id="ti_trainer_create_vectors")
        ui.create_overwrite = gr.Checkbox(False, label=CREATE_OVERWRITE, elem_id="ti_trainer_create_overwrite")
        ui.create_button = gr.Button("Create embedding", elem_id="ti_trainer_create_button")
    ui.create_result = gr.HTML("", elem_id="ti_trainer_create_result")  # stays in view when the section folds
    for row in FIRST_ROWS:
        with gr.Row(elem_classes=["ti_trainer_fields"]):
            for name in row:
                ui.options[name] = option_component(gr, name, getattr(defaults, name))
        if "learn_rate" in row:
            figure, message = schedule_preview(defaults.learn_rate, defaults.max_steps)
            ui.schedule_plot = gr.Plot(
                figure, label="Learning rate stages", show_label=False, elem_id="ti_trainer_schedule_plot",
                **plot_kwargs(gr),
            )  # fmt: skip
            ui.schedule_msg = gr.HTML(html.escape(message), elem_id="ti_trainer_schedule_msg")
    for title, names in FOLDED:
        slug = re.sub(r"\W+", "_", title.lower())
        with gr.Accordion(title, open=False, elem_id=f"ti_trainer_group_{slug}"):
            for name in names:
                ui.options[name] = option_component(gr, name, getattr(defaults, name))
                if name == "clip_grad_value":
                    ui.clip_msg = gr.HTML("", elem_id="ti_trainer_clip_msg")


def _run_column(gr, service: TrainerService, ui: SimpleNamespace, names0: list[str]) -> None:
    with gr.Row(elem_classes=["ti_trainer_buttons"]):
        ui.train = gr.Button("Train", variant="primary", elem_id="ti_trainer_train")
        ui.interrupt = gr.Button("Interrupt", elem_id="ti_trainer_interrupt")
        ui.resume = gr.Button("Resume", elem_id="ti_trainer_resume")
    ui.action_msg = gr.HTML("", elem_id="ti_trainer_message")
    gr.HTML("", elem_id="ti_trainer_progress")  # the web UI's progress bar goes here
    ui.status = gr.HTML(status_html(JobStatus()), elem_id="ti_trainer_status")
    ui.loss_plot = gr.Plot(
        None, label="Loss and learning rate", show_label=False, elem_id="ti_trainer_loss_plot", **plot_kwargs(gr)
    )
    ui.gallery = gr.Gallery(
        [], label="Previews (newest first)", elem_id="ti_trainer_preview_gallery", columns=5, height=170,
        object_fit="contain",
    )  # fmt: skip
    with gr.Accordion("Files written", open=False, elem_id="ti_trainer_files_group"):
        ui.files = gr.HTML(files_html([], None), elem_id="ti_trainer_files")
    _snapshot_section(gr, ui)
    _share_section(gr, ui, names0)
    _import_section(gr, ui)
    _inspector_section(gr, ui)
    if service.adapter.is_host:
        _host_sections(gr, ui)


def _snapshot_section(gr, ui: SimpleNamespace) -> None:
    with gr.Accordion("Pick the best snapshot", open=False, elem_id="ti_trainer_snapshots_group"):
        ui.snap_run = gr.Dropdown([], label="Run (folder under the log dir)", elem_id="ti_trainer_snapshot_run")
        ui.snap_table = gr.HTML("", elem_id="ti_trainer_snapshot_table")
        ui.snap_gallery = gr.Gallery(
            [], label="Snapshot previews (click one to pick it)", elem_id="ti_trainer_snapshot_gallery",
            columns=5, height=190, object_fit="contain",
        )  # fmt: skip
        with gr.Row(elem_classes=["ti_trainer_fields"]):
            ui.snap_pick = gr.Dropdown([], label="Snapshot", elem_id="ti_trainer_snapshot_pick", scale=3)
            ui.snap_use = gr.Button("Use this snapshot", elem_id="ti_trainer_snapshot_use", scale=1)
        ui.snap_msg = gr.HTML("", elem_id="ti_trainer_snapshot_msg")


def _share_section(gr, ui: SimpleNamespace, names0: list[str]) -> None:
    with gr.Accordion("Share as PNG", open=False, elem_id="ti_trainer_share_group"):
        ui.share_name = gr.Dropdown(
            names0, value=names0[0] if names0 else None, label="Embedding to share", elem_id="ti_trainer_share_name"
        )
        ui.share_source = gr.Radio(
            list(PICTURE_SOURCES), value=PICTURE_SOURCES[0], label="Card picture", elem_id="ti_trainer_share_source"
        )
        ui.share_picture = gr.Image(None, type="pil", label="Uploaded picture", elem_id="ti_trainer_share_picture")
        ui.share_button = gr.Button("Make PNG card", elem_id="ti_trainer_share_button")
        with gr.Row(elem_classes=["ti_trainer_fields"]):
            ui.share_card = gr.Image(
                None, type="filepath", label="Card", interactive=False, elem_id="ti_trainer_share_card", height=260
            )
            ui.share_file = gr.File(None, label="Download the card", interactive=False, elem_id="ti_trainer_share_file")
        ui.share_msg = gr.HTML("", elem_id="ti_trainer_share_msg")


def _import_section(gr, ui: SimpleNamespace) -> None:
    with gr.Accordion("Import from PNG / file", open=False, elem_id="ti_trainer_import_group"):
        ui.import_upload = gr.File(
            None, label="Embedding file or PNG card", file_types=IMPORT_TYPES, elem_id="ti_trainer_import_file"
        )
        ui.import_name = gr.Textbox(
            "", label="Import as name (empty = the stored name)", elem_id="ti_trainer_import_name", max_lines=1
        )
        ui.import_overwrite = gr.Checkbox(False, label=IMPORT_OVERWRITE, elem_id="ti_trainer_import_overwrite")
        ui.import_button = gr.Button("Import", elem_id="ti_trainer_import_button")
        ui.import_msg = gr.HTML("", elem_id="ti_trainer_import_msg")


def _inspector_section(gr, ui: SimpleNamespace) -> None:
    with gr.Accordion("Prompt inspector", open=False, elem_id="ti_trainer_inspect_group"):
        ui.inspect_prompt = gr.Textbox("", label="Prompt to inspect", lines=2, elem_id="ti_trainer_inspect_prompt")
        ui.inspect_emphasis = gr.Dropdown(
            list(cfg.EMPHASIS_MODES), value=ui.defaults.emphasis, label="Inspector emphasis mode",
            elem_id="ti_trainer_inspect_emphasis",
        )  # fmt: skip
        ui.inspect_button = gr.Button("Inspect", elem_id="ti_trainer_inspect_button")
        ui.inspect_out = gr.HTML("", elem_id="ti_trainer_inspect_out")


def _host_sections(gr, ui: SimpleNamespace) -> None:
    with gr.Row(elem_classes=["ti_trainer_fields"]):
        ui.send_weight = gr.Number(1.0, label="Weight in the prompt", elem_id="ti_trainer_send_weight")
        ui.send_button = gr.Button("Send to txt2img", elem_id="ti_trainer_send")
    with gr.Accordion("Benchmark", open=False, elem_id="ti_trainer_bench_group"):
        gr.Markdown(
            "Times the trainer's optimizer step on the loaded model against the bare "
            "forward/backward cost of the same work (and, ticked, the web UI's own "
            "trainer on the same settings). Generation waits while it runs.",
            elem_id="ti_trainer_bench_about",
        )
        ui.bench_inputs = [
            gr.Number(default, precision=0, label=label, elem_id=f"ti_trainer_bench_{key}")
            for label, key, default in BENCH_INPUTS
        ]
        ui.bench_compare = gr.Checkbox(
            False, label="Compare with the web UI's own trainer", elem_id="ti_trainer_bench_compare"
        )
        ui.bench_button = gr.Button("Benchmark", elem_id="ti_trainer_bench_button")
        ui.bench_out = gr.Code(
            "", language=None, label="Benchmark result", interactive=False, elem_id="ti_trainer_bench_out"
        )
        ui.bench_msg = gr.Markdown("", elem_id="ti_trainer_bench_msg")


def _model_html(label: str) -> str:
    return f"Model: <code>{html.escape(label)}</code>"


def _embedding_line(service: TrainerService, name: str | None) -> str:
    if not name:
        return embedding_html(None)
    try:
        return embedding_html(service.find(name))
    except UserError as exc:
        return embedding_html(None, str(exc))


# ---------------------------------------------------------------------------------------- wiring


def _wire(gr, tab, service: TrainerService, ui: SimpleNamespace) -> None:
    """Connect the handlers; each one is a small function over the service."""
    h = _Handlers(gr, service, ui)
    fields = tab_fields()
    option_values = [ui.options[n] for n in fields]
    opts = ui.options
    adapter = service.adapter

    # Programmatic changes never trigger other handlers ("input" events, not "change"): each
    # handler returns everything it changes, so nothing cascades and nothing reads a stale value.
    snapshot_outputs = [ui.snap_table, ui.snap_gallery, ui.snap_pick]
    picked_outputs = [ui.info, ui.share_name, ui.snap_run, *snapshot_outputs]
    ui.refresh.click(h.refresh, [ui.embedding], [ui.embedding, *picked_outputs])
    ui.embedding.input(h.picked, [ui.embedding], picked_outputs)
    ui.snap_run.input(h.run_snapshots, [ui.embedding, ui.snap_run], snapshot_outputs)
    # the poll changes the marker when a job ends; the picked embedding may be the one it trained
    ui.job_marker.change(h.picked, [ui.embedding], picked_outputs)
    tab.load(h.on_load, None, [ui.embedding, ui.create_group, *picked_outputs])
    poll(gr, tab, h.poll, [ui.status, ui.model, ui.loss_plot, ui.gallery, ui.files, ui.job_marker], POLL_SECONDS)

    refresh_js = getattr(adapter, "refresh_cards_js", None) if adapter.is_host else None
    created = ui.create_button.click(
        h.create, [ui.create_name, ui.create_init, ui.create_vectors, ui.create_overwrite],
        [ui.create_result, ui.create_group, ui.embedding, *picked_outputs],
    )  # fmt: skip
    schedule_inputs = [opts["learn_rate"], opts["max_steps"]]
    clip_inputs = [opts["clip_grad"], opts["clip_grad_value"], opts["max_steps"]]
    for comp in schedule_inputs:
        comp.input(h.schedule, schedule_inputs, [ui.schedule_plot, ui.schedule_msg])
    for comp in clip_inputs:
        comp.input(h.clip_schedule, clip_inputs, [ui.clip_msg])
    start_js = "ti_trainer_start_training" if adapter.is_host else None
    train_inputs = [ui.task_id, ui.embedding, *option_values]
    ui.train.click(h.train, train_inputs, [ui.action_msg, ui.status], **js_kwargs(gr, start_js))
    ui.resume.click(h.resume, train_inputs, [ui.action_msg, ui.status], **js_kwargs(gr, start_js))
    ui.interrupt.click(h.interrupt, None, [ui.action_msg, ui.status])

    ui.snap_gallery.select(h.gallery_pick, [ui.embedding, ui.snap_run], [ui.snap_pick])
    used = ui.snap_use.click(h.use_snapshot, [ui.embedding, ui.snap_run, ui.snap_pick], [ui.snap_msg, ui.info, *snapshot_outputs])
    ui.share_button.click(
        h.share, [ui.share_name, ui.share_source, ui.share_picture], [ui.share_card, ui.share_file, ui.share_msg]
    )
    imported = ui.import_button.click(
        h.import_file, [ui.import_upload, ui.import_name, ui.import_overwrite], [ui.import_msg, ui.embedding, *picked_outputs]
    )
    if refresh_js:
        for event in (created, imported, used):
            event.then(None, None, None, **js_kwargs(gr, refresh_js))
    ui.inspect_button.click(h.inspect, [ui.inspect_prompt, ui.inspect_emphasis], [ui.inspect_out])
    if adapter.is_host:
        ui.bench_button.click(h.do_bench, [ui.bench_compare, *ui.bench_inputs], [ui.bench_out, ui.bench_msg])
        ui.send_button.click(
            None, [ui.embedding, ui.send_weight], [],
            **js_kwargs(gr, "(name, weight) => { ti_trainer_send_embedding(name, weight); return []; }"),
        )  # fmt: skip


class _Handlers:
    """The tab's event handlers (each returns the new values of its outputs)."""

    def __init__(self, gr, service: TrainerService, ui: SimpleNamespace):
        self.gr = gr
        self.service = service
        self.ui = ui
        self.fields = tab_fields()
        self.defaults = ui.defaults

        def gallery_pick(embedding, run, evt):
            return self._gallery_pick(embedding, run, evt)

        self.gallery_pick = _annotate(gallery_pick, evt=gr.SelectData)

    # -- the picked embedding ------------------------------------------------------------------

    def names(self) -> list[str]:
        return [e.name for e in self.service.embeddings()]

    def _pick(self, value: str | None) -> tuple:
        """The picker showing ``value`` (else the first embedding), and everything that follows it."""
        names = self.names()
        value = value if value in names else (names[0] if names else None)
        return (self.gr.update(choices=names, value=value), *self.picked(value))

    def refresh(self, current: str | None):
        return self._pick(current)

    def on_load(self):
        """A (re)loaded page picks the embedding of the job in view, so picker, status and plot agree."""
        st = self.service.runner.status()
        picker, *rest = self._pick(st.name or None)
        create = self.gr.update(open=not self.names())  # folded once there is something to train
        return (picker, create, *rest)

    def picked(self, name: str | None):
        """Everything that follows the picked embedding: its line, the share picker, its runs and snapshots."""
        info = _embedding_line(self.service, name)
        share = self.gr.update(choices=self.names(), value=name)
        runs, run = [], None
        if name:
            from .snapshots import run_folders, run_id

            log_dir = Path(self.service.adapter.log_dir())
            runs = [run_id(log_dir, r) for r in run_folders(log_dir, name)]
            run = runs[0] if runs else None
        snapshots = self.run_snapshots(name, run)
        return (info, share, self.gr.update(choices=runs, value=run), *snapshots)

    # -- snapshots -----------------------------------------------------------------------------

    def _snapshots(self, name: str | None, run: str | None):
        if not name:
            return None, []
        try:
            return self.service.snapshots(name, run or None)
        except UserError:
            return None, []

    def run_snapshots(self, name: str | None, run: str | None, selected: int | None = None):
        run_id, snaps = self._snapshots(name, run)
        if run_id is None:
            hint = "<div class='ti_trainer_muted'>No snapshots of this embedding yet: training saves one every "
            hint += '"Save a snapshot every N steps" (under Saving snapshots).</div>'
            return hint, [], self.gr.update(choices=[], value=None)
        try:
            current = self.service.find(name).step
        except UserError:
            current = None
        labels = [snapshot_label(s) for s in snaps]
        default = next((snapshot_label(s) for s in snaps if s.best), labels[-1] if labels else None)
        default = next((snapshot_label(s) for s in snaps if s.step == selected), default)
        gallery = [(str(s.preview), f"step {s.step}" + (" ★" if s.best else "")) for s in snaps if s.preview]
        return snapshots_html(run_id, snaps, current), gallery, self.gr.update(choices=labels, value=default)

    def _gallery_pick(self, embedding, run, evt):
        _, snaps = self._snapshots(embedding, run)
        with_preview = [s for s in snaps if s.preview]
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not isinstance(index, int) or not 0 <= index < len(with_preview):
            return self.gr.update()
        return self.gr.update(value=snapshot_label(with_preview[index]))

    def use_snapshot(self, name: str | None, run: str | None, label: str | None):
        step = _step_of_label(label)
        if not name or step is None:
            return (error_html("pick an embedding and one of its snapshots first"), self.gr.update(), *self.run_snapshots(name, run))
        try:
            info, used = self.service.use_snapshot(name, step, run or None)
        except UserError as exc:
            return (error_html(str(exc)), self.gr.update(), *self.run_snapshots(name, run))
        kept = ", ".join(f"<code>{html.escape(p.name)}</code>" for p in used.backups)
        text = f"<b>{html.escape(name)}</b> is now the snapshot of step {used.step}"
        text += f"; the previous file is kept as {kept}." if kept else "."
        if info.note:
            text += f" {error_html(info.note)}"
        return (_message(text), embedding_html(info), *self.run_snapshots(name, run, selected=used.step))

    # -- the schedule fields --------------------------------------------------------------------

    def schedule(self, text, max_steps):
        try:
            steps = int(float(max_steps))
        except (TypeError, ValueError):
            return None, error_html("Max steps is not a number")
        figure, message = schedule_preview(text or "", steps)
        return figure, (error_html(message) if figure is None else html.escape(message))

    def clip_schedule(self, mode, text, max_steps):
        if mode == "none":
            return ""
        try:
            LearnRateSchedule.parse(text or "", int(float(max_steps)), allow_zero=True)
        except (TypeError, ValueError) as exc:
            return error_html(f"Error: {exc}")
        return ""

    # -- training -------------------------------------------------------------------------------

    def _options(self, name, values) -> dict[str, Any]:
        if not name:
            raise UserError("pick an embedding to train (create or import one first)")
        options = options_from_values(self.fields, list(values), self.defaults)
        options["name"] = name
        return options

    def _already_done(self, name: str, max_steps: int) -> str | None:
        try:
            step = self.service.find(name).step or 0
        except UserError:
            return None
        if step < max_steps:
            return None
        return error_html(
            f"{name} is already trained for {step} steps (Max steps {max_steps}); raise \"Max steps\" to train on"
        )

    def _status(self) -> str:
        return status_html(self.service.runner.status())

    def train(self, task, name, *values):
        try:
            options = self._options(name, values)
            done = self._already_done(name, options["max_steps"])
            if done:
                return done, self._status()
            self.service.start_training(options, task_id=task or None)
        except UserError as exc:
            return problems_html(exc.problems), self._status()
        return _message(f"Training <b>{html.escape(name)}</b> started."), self._status()

    def resume(self, task, name, *values):
        last = self.service.runner.last_config()
        try:
            options = self._options(name, values)
            done = self._already_done(name, options["max_steps"])
            if done:
                return done, self._status()
            if last is not None and last.name == name:
                self.service.resume_training(task_id=task or None, max_steps=options["max_steps"])
            else:  # resume the picked embedding from its saved state, with the options shown
                self.service.start_training({**options, "resume": True}, task_id=task or None)
        except UserError as exc:
            return problems_html(exc.problems), self._status()
        return _message(f"Resuming <b>{html.escape(name)}</b>."), self._status()

    def interrupt(self):
        try:
            self.service.interrupt()
        except UserError:
            return error_html("Nothing to interrupt: no training is running."), self._status()
        return _message("Interrupt requested: the run saves its state and stops after the current step."), self._status()

    def poll(self, memory: dict):
        """Status, model, plot, previews and files of the job in view; ``gr.update()`` for what
        this page already shows."""
        runner = self.service.runner
        st = runner.status()
        history = runner.history()
        values = {
            "status": status_html(st),
            "model": _model_html(self.service.adapter.model_label()),
            "plot": (st.job_id, len(history)),
            "gallery": tuple(st.previews),
            "files": (tuple(st.files), st.run_dir),
            "marker": _job_marker(st),
        }
        out = []
        for key, value in values.items():
            if key == "marker" and (value is None or key not in memory):
                # only a job ending while the page is open moves the marker (nothing at page load)
                memory.setdefault(key, value)
                out.append(self.gr.update())
                continue
            if memory.get(key) == value:
                out.append(self.gr.update())
                continue
            memory[key] = value
            if key == "plot":
                title = f"{st.name}: loss and learning rate"
                value = loss_figure(history, title=title, size=LIVE_PLOT_SIZE) if history else None
            elif key == "gallery":
                value = [(p, f"step {Path(p).stem.rsplit('-', 1)[-1]}") for p in reversed(st.previews) if Path(p).is_file()]
            elif key == "files":
                value = files_html(st.files, st.run_dir)
            out.append(value)
        return tuple(out)

    # -- create, import, share, inspect, benchmark ---------------------------------------------

    def _unchanged(self) -> tuple:
        """gr.update() for the picker and everything that follows it."""
        return tuple(self.gr.update() for _ in range(7))

    def create(self, name, init_text, vectors, overwrite):
        try:
            created = self.service.create(name, init_text or "", int(vectors), overwrite=bool(overwrite))
        except UserError as exc:
            return (error_html(str(exc), overwrite_label=CREATE_OVERWRITE), self.gr.update(), *self._unchanged())
        note = f" {error_html(created.note)}" if created.note else ""
        text = f"Created <b>{html.escape(created.name)}</b> ({html.escape(created.shape)}) in <code>{html.escape(created.path)}</code>."
        return (_message(text) + note, self.gr.update(open=False), *self._pick(created.name))

    def import_file(self, upload, name, overwrite):
        path = file_path(upload)
        if not path:
            return (error_html("choose a file to import"), *self._unchanged())
        try:
            imported = self.service.import_file(path, name=(name or "").strip() or None, overwrite=bool(overwrite))
        except UserError as exc:
            return (error_html(str(exc), overwrite_label=IMPORT_OVERWRITE), *self._unchanged())
        note = f" {error_html(imported.note)}" if imported.note else ""
        text = f"Imported <b>{html.escape(imported.name)}</b> ({html.escape(imported.shape)}) to <code>{html.escape(imported.path)}</code>."
        return (_message(text) + note, *self._pick(imported.name))

    def share(self, name, source, picture):
        if not name:
            return None, None, error_html("pick an embedding to share")
        chosen = None
        if source == "Uploaded picture":
            if picture is None:
                return None, None, error_html("upload a picture first, or pick another card picture")
            chosen = picture
        elif source == "Last preview":
            chosen = latest_preview(Path(self.service.adapter.log_dir()), name)
        try:
            card = self.service.share_card(name, chosen)
        except UserError as exc:
            return None, None, error_html(str(exc))
        note = ""
        if chosen is None and source == "Last preview":
            note = " (no preview of this embedding yet: a plain picture was used)"
        text = f"Card of <b>{html.escape(name)}</b> written to <code>{html.escape(str(card))}</code>{note}."
        return str(card), str(card), _message(text)

    def inspect(self, prompt, emphasis):
        from .inspector import format_inspection

        try:
            return format_inspection(self.service.inspect(prompt or "", emphasis=emphasis))
        except (UserError, ImportError) as exc:  # ImportError: no tokenizer in this environment
            return error_html(str(exc))

    def do_bench(self, compare, *values):
        try:
            outcome = self.service.benchmark(bench_options(list(values)), compare_builtin=bool(compare))
        except UserError as exc:
            return "", error_html(str(exc))
        where = f"JSON: `{html.escape(str(outcome.json_path))}`" if outcome.json_path else ""
        return outcome.table, where
