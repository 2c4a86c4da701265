"""The "TI Trainer" tab: the same gradio Blocks in the web UI (gradio 3.41), Forge (4.40) and
standalone. It only calls :class:`TrainerService`; host differences live in the adapter."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..training import config as cfg
from ..training.config import TrainConfig
from .compat import file_path, import_gradio, js_kwargs
from .jobs import JobStatus
from .plots import curves_plot, schedule_preview
from .service import TARGET_FIELDS, TrainerService, UserError

TAB_TITLE = "TI Trainer"
TAB_ID = "ti_trainer"
POLL_SECONDS = 1.0

# Options the tab does not show as fields: what to train comes from the picker and the create
# section, resume is its own button, and replacing a trained embedding is done by re-creating it.
NOT_FIELDS = (*TARGET_FIELDS, "overwrite", "resume")

GROUPS: list[tuple[str, list[str], bool]] = [
    ("Dataset", [
        "data", "width", "height", "repeats", "template", "caption_extension", "filename_word_regex",
        "filename_join", "shuffle_tags", "tag_dropout", "flip_probability", "alpha_as_loss_weight",
        "latent_sampling", "buckets", "bucket_step", "template_dir",
    ], True),
    ("Learning rate and steps", [
        "learn_rate", "max_steps", "batch_size", "grad_accumulation", "clamp_batch", "weight_decay",
        "clip_grad", "clip_grad_value", "precision", "gradient_checkpointing", "seed",
    ], True),
    ("Text encoding", ["emphasis", "clip_skip"], False),
    ("Saving", ["save_format", "save_every", "keep_snapshots"], False),
    ("Previews", [
        "preview_every", "preview_prompt", "preview_negative_prompt", "preview_steps",
        "preview_cfg_scale", "preview_seed", "preview_width", "preview_height",
    ], False),
    ("Validation", ["validation_every", "validation_data", "validation_images", "validation_timesteps"], False),
]  # fmt: skip

LABELS = {
    "data": "Dataset folder",
    "width": "Width (0 = the model's size)",
    "height": "Height (0 = the model's size)",
    "repeats": "Repeats per epoch",
    "template": "Prompt template (name or .txt file)",
    "caption_extension": "Caption file extension",
    "filename_word_regex": "File name word regex",
    "filename_join": "File name word join string",
    "shuffle_tags": "Shuffle tags",
    "tag_dropout": "Tag dropout",
    "flip_probability": "Horizontal flip probability",
    "alpha_as_loss_weight": "Use alpha as loss weight",
    "latent_sampling": "Latent sampling",
    "buckets": "Aspect-ratio buckets",
    "bucket_step": "Bucket size step (pixels)",
    "template_dir": "Extra template folder",
    "learn_rate": "Learning rate schedule",
    "max_steps": "Max steps",
    "batch_size": "Batch size",
    "grad_accumulation": "Gradient accumulation steps",
    "clamp_batch": "Clamp batch size to the dataset",
    "weight_decay": "Weight decay",
    "clip_grad": "Gradient clipping",
    "clip_grad_value": "Gradient clipping value schedule",
    "precision": "Precision",
    "gradient_checkpointing": "Gradient checkpointing",
    "seed": "Seed",
    "emphasis": "Emphasis mode",
    "clip_skip": "CLIP skip",
    "save_format": "Save format",
    "save_every": "Save a snapshot every N steps (0 = off)",
    "keep_snapshots": "Keep the newest N snapshots (0 = all)",
    "preview_every": "Preview every N steps (0 = off)",
    "preview_prompt": "Preview prompt (empty = the training prompt)",
    "preview_negative_prompt": "Preview negative prompt",
    "preview_steps": "Preview sampling steps",
    "preview_cfg_scale": "Preview CFG scale",
    "preview_seed": "Preview seed (-1 = training seed)",
    "preview_width": "Preview width (0 = training size)",
    "preview_height": "Preview height (0 = training size)",
    "validation_every": "Validation loss every N steps (0 = off)",
    "validation_data": "Validation folder (empty = training images at fixed seeds)",
    "validation_images": "Validation images",
    "validation_timesteps": "Validation timesteps per image",
}

CHOICES = {
    "latent_sampling": cfg.LATENT_SAMPLING,
    "clip_grad": cfg.CLIP_MODES,
    "precision": cfg.PRECISIONS,
    "emphasis": cfg.EMPHASIS_MODES,
    "save_format": cfg.SAVE_FORMATS,
}
SLIDERS = {"tag_dropout": (0.0, 1.0, 0.05), "flip_probability": (0.0, 1.0, 0.05)}
PICTURE_SOURCES = ("Last preview", "Uploaded picture", "Plain")
IMPORT_TYPES = [".pt", ".bin", ".safetensors", ".png", ".webp"]


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


def tab_fields() -> list[str]:
    """Every TrainConfig field the tab shows, in layout order."""
    return [name for _, names, _ in GROUPS for name in names]


def options_from_values(names: list[str], values: list[Any], defaults: TrainConfig) -> dict[str, Any]:
    """Component values -> TrainConfig options with the field's type (gradio numbers are floats
    or None). Raises UserError for an empty number field."""
    out: dict[str, Any] = {}
    for name, value in zip(names, values):
        kind = type(getattr(defaults, name))
        if kind in (int, float):
            if value is None or value == "":
                raise UserError(f"{LABELS.get(name, name)} is empty; enter a number")
            if kind is int:
                if float(value) != int(float(value)):
                    raise UserError(f"{LABELS.get(name, name)} must be a whole number, got {value}")
                value = int(float(value))
            else:
                value = float(value)
        elif kind is bool:
            value = bool(value)
        else:
            value = "" if value is None else str(value)
        out[name] = value
    return out


def _templates() -> list[str]:
    try:
        from ..training.templates import available_templates

        return sorted(available_templates())
    except Exception:  # the template list is a convenience; any name or path can be typed
        return ["subject_filewords"]


def _component(gr, name: str, default: Any):
    label = LABELS.get(name, name.replace("_", " "))
    elem_id = f"ti_trainer_{name}"
    if name in CHOICES:
        return gr.Dropdown(list(CHOICES[name]), value=default, label=label, elem_id=elem_id)
    if name == "template":
        choices = _templates()
        if default not in choices:
            choices.append(default)
        return gr.Dropdown(choices, value=default, label=label, elem_id=elem_id, allow_custom_value=True)
    if name in SLIDERS:
        lo, hi, step = SLIDERS[name]
        return gr.Slider(lo, hi, value=default, step=step, label=label, elem_id=elem_id)
    if isinstance(default, bool):
        return gr.Checkbox(value=default, label=label, elem_id=elem_id)
    if isinstance(default, int):
        return gr.Number(value=default, precision=0, label=label, elem_id=elem_id)
    if isinstance(default, float):
        return gr.Number(value=default, label=label, elem_id=elem_id)
    lines = 2 if name in ("preview_prompt", "preview_negative_prompt") else 1
    return gr.Textbox(value=default, label=label, elem_id=elem_id, lines=lines)


def _md_error(message: str) -> str:
    return f"<span class='ti_trainer_error'>{html.escape(message)}</span>"


def _md_problems(exc: UserError) -> str:
    if len(exc.problems) > 1:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in exc.problems)
        return f"<div class='ti_trainer_error'>Cannot start:<ul>{items}</ul></div>"
    return _md_error(str(exc.problems[0] if exc.problems else exc))


def _files_text(status: JobStatus) -> str:
    return "\n".join(status.files)


def build_tab(service: TrainerService, *, css: str | None = None, title: str | None = None):
    """The tab's Blocks (not launched). The web UI's ``on_ui_tabs`` returns it with the title
    :data:`TAB_TITLE` and id :data:`TAB_ID`; the standalone server passes ``css`` and ``title``
    to make it a page of its own."""
    gr = import_gradio()
    adapter = service.adapter
    defaults = service.defaults()
    fields = tab_fields()
    option_components: list[Any] = []

    def embedding_names() -> list[str]:
        return [e.name for e in service.embeddings()]

    def embedding_info(name: str | None) -> str:
        if not name:
            return "No embedding picked. Create or import one first."
        try:
            info = service.find(name)
        except UserError as exc:
            return _md_error(str(exc))
        step = "not trained yet (step 0)" if not info.step else f"step {info.step}"
        return f"**{html.escape(info.name)}**: {step}, vectors {info.shape} ({info.family}) - `{html.escape(info.path)}`"

    names0 = embedding_names()
    page = {k: v for k, v in (("css", css), ("title", title)) if v is not None}
    with gr.Blocks(analytics_enabled=False, **page) as tab, gr.Column(elem_id="ti_trainer_tab"):
        task_id = gr.Textbox(visible=False, elem_id="ti_trainer_task_id")
        seen = gr.State(None)
        gr.Markdown(f"Model: `{html.escape(adapter.model_label())}`", elem_id="ti_trainer_model")
        with gr.Row():
            with gr.Column(scale=1, elem_id="ti_trainer_setup"):
                with gr.Accordion("Create embedding", open=not names0, elem_id="ti_trainer_create_group"):
                    create_name = gr.Textbox(label="Name", elem_id="ti_trainer_create_name")
                    create_init = gr.Textbox(
                        value="*", label="Initialization text", elem_id="ti_trainer_create_init"
                    )
                    create_vectors = gr.Slider(
                        1, 75, value=1, step=1, label="Vectors per token", elem_id="ti_trainer_create_vectors"
                    )
                    create_overwrite = gr.Checkbox(
                        False, label="Overwrite an existing embedding", elem_id="ti_trainer_create_overwrite"
                    )
                    create_button = gr.Button("Create embedding", elem_id="ti_trainer_create_button")
                    create_result = gr.Markdown(elem_id="ti_trainer_create_result")
                with gr.Row(elem_classes=["ti_trainer_group"]):
                    embedding = gr.Dropdown(
                        names0,
                        value=names0[0] if names0 else None,
                        label="Embedding to train",
                        elem_id="ti_trainer_embedding",
                    )
                    refresh = (
                        gr.Button("\U0001f504", elem_id="ti_trainer_refresh", scale=0)
                        if _has_scale(gr)
                        else gr.Button("\U0001f504", elem_id="ti_trainer_refresh")
                    )
                info = gr.Markdown(
                    embedding_info(names0[0] if names0 else None), elem_id="ti_trainer_embedding_info"
                )
                for title, names, is_open in GROUPS:
                    slug = title.lower().replace(" ", "_")
                    with gr.Accordion(title, open=is_open, elem_id=f"ti_trainer_group_{slug}"):
                        for name in names:
                            comp = _component(gr, name, getattr(defaults, name))
                            option_components.append(comp)
                            if name == "learn_rate":
                                plot0, msg0 = schedule_preview(defaults.learn_rate, defaults.max_steps)
                                schedule_plot = gr.Image(
                                    plot0, type="pil", label="Learning rate stages", interactive=False,
                                    elem_id="ti_trainer_schedule_plot", height=170,
                                )  # fmt: skip
                                schedule_msg = gr.Markdown(msg0, elem_id="ti_trainer_schedule_msg")
                            if name == "clip_grad_value":
                                clip_msg = gr.Markdown("", elem_id="ti_trainer_clip_msg")
                with gr.Row(elem_classes=["ti_trainer_group"]):
                    train_button = gr.Button("Train", variant="primary", elem_id="ti_trainer_train")
                    interrupt_button = gr.Button("Interrupt", elem_id="ti_trainer_interrupt")
                    resume_button = gr.Button("Resume", elem_id="ti_trainer_resume")
                action_msg = gr.Markdown("", elem_id="ti_trainer_message")
            with gr.Column(scale=1, elem_id="ti_trainer_results"):
                gr.HTML("", elem_id="ti_trainer_progress")
                status = gr.Textbox(
                    JobStatus().summary(),
                    label="Status",
                    lines=6,
                    interactive=False,
                    elem_id="ti_trainer_status",
                )
                loss_plot = gr.Image(
                    None,
                    type="pil",
                    label="Loss and learning rate",
                    interactive=False,
                    elem_id="ti_trainer_loss_plot",
                )
                gallery = gr.Gallery(
                    [], label="Preview images", elem_id="ti_trainer_preview_gallery", columns=4
                )
                files = gr.Textbox(
                    "", label="Files written", lines=4, interactive=False, elem_id="ti_trainer_files"
                )
                with gr.Accordion("Share as PNG", open=False, elem_id="ti_trainer_share_group"):
                    share_source = gr.Radio(
                        list(PICTURE_SOURCES),
                        value=PICTURE_SOURCES[0],
                        label="Card picture",
                        elem_id="ti_trainer_share_source",
                    )
                    share_picture = gr.Image(
                        None, type="pil", label="Uploaded picture", elem_id="ti_trainer_share_picture"
                    )
                    share_button = gr.Button("Make PNG card", elem_id="ti_trainer_share_button")
                    share_file = gr.File(
                        None, label="PNG card", interactive=False, elem_id="ti_trainer_share_file"
                    )
                    share_msg = gr.Markdown("", elem_id="ti_trainer_share_msg")
                with gr.Accordion("Import from PNG / file", open=False, elem_id="ti_trainer_import_group"):
                    import_upload = gr.File(
                        None,
                        label="Embedding file or PNG card",
                        file_types=IMPORT_TYPES,
                        elem_id="ti_trainer_import_file",
                    )
                    import_name = gr.Textbox(
                        "", label="Import as name (empty = the stored name)", elem_id="ti_trainer_import_name"
                    )
                    import_overwrite = gr.Checkbox(
                        False,
                        label="Replace an embedding of that name",
                        elem_id="ti_trainer_import_overwrite",
                    )
                    import_button = gr.Button("Import", elem_id="ti_trainer_import_button")
                    import_msg = gr.Markdown("", elem_id="ti_trainer_import_msg")
                with gr.Accordion("Prompt inspector", open=False, elem_id="ti_trainer_inspect_group"):
                    inspect_prompt = gr.Textbox(
                        "", label="Prompt to inspect", lines=2, elem_id="ti_trainer_inspect_prompt"
                    )
                    inspect_emphasis = gr.Dropdown(
                        list(cfg.EMPHASIS_MODES),
                        value=defaults.emphasis,
                        label="Inspector emphasis mode",
                        elem_id="ti_trainer_inspect_emphasis",
                    )
                    inspect_button = gr.Button("Inspect", elem_id="ti_trainer_inspect_button")
                    inspect_out = gr.Markdown("", elem_id="ti_trainer_inspect_out")
                if adapter.is_host:
                    with gr.Row(elem_classes=["ti_trainer_group"]):
                        send_weight = gr.Number(
                            1.0, label="Weight in the prompt", elem_id="ti_trainer_send_weight"
                        )
                        send_button = gr.Button("Send to txt2img", elem_id="ti_trainer_send")
                    with gr.Accordion("Benchmark", open=False, elem_id="ti_trainer_bench_group"):
                        gr.Markdown(
                            "Times the trainer's optimizer step on the loaded model against the bare "
                            "forward/backward cost of the same work (and, ticked, the web UI's own "
                            "trainer on the same settings). Generation waits while it runs.",
                            elem_id="ti_trainer_bench_about",
                        )
                        bench_inputs = [
                            gr.Number(default, precision=0, label=label, elem_id=f"ti_trainer_bench_{key}")
                            for label, key, default in BENCH_INPUTS
                        ]
                        bench_compare = gr.Checkbox(
                            False,
                            label="Compare with the web UI's own trainer",
                            elem_id="ti_trainer_bench_compare",
                        )
                        bench_button = gr.Button("Benchmark", elem_id="ti_trainer_bench_button")
                        bench_out = gr.Code(
                            "", language=None, label="Benchmark result", interactive=False,
                            elem_id="ti_trainer_bench_out",
                        )  # fmt: skip
                        bench_msg = gr.Markdown("", elem_id="ti_trainer_bench_msg")

        by_name = dict(zip(fields, option_components))

        # ------------------------------------------------------------------ handlers

        def refresh_choices(current: str | None):
            names = embedding_names()
            value = current if current in names else (names[0] if names else None)
            return gr.update(choices=names, value=value), embedding_info(value)

        def do_create(name, init_text, vectors, overwrite):
            try:
                created = service.create(name, init_text or "", int(vectors), overwrite=bool(overwrite))
            except UserError as exc:
                return _md_error(str(exc)), gr.update(), gr.update()
            names = embedding_names()
            note = f" - {html.escape(created.note)}" if created.note else ""
            return (
                f"Created **{html.escape(created.name)}** ({created.shape}) in `{html.escape(created.path)}`{note}",
                gr.update(choices=names, value=created.name),
                embedding_info(created.name),
            )

        def do_schedule(text, max_steps):
            try:
                steps = int(float(max_steps))
            except (TypeError, ValueError):
                return None, _md_error("Max steps is not a number")
            image, message = schedule_preview(text or "", steps)
            return image, (_md_error(message) if image is None else message)

        def do_clip_schedule(mode, text, max_steps):
            if mode == "none":
                return ""
            try:
                steps = int(float(max_steps))
            except (TypeError, ValueError):
                return ""
            image, message = schedule_preview(text or "", steps)
            return _md_error(message) if image is None else ""

        def collect(name, values) -> dict[str, Any]:
            if not name:
                raise UserError("pick an embedding to train (create or import one first)")
            options = options_from_values(fields, list(values), defaults)
            options["name"] = name
            return options

        def do_train(task, name, *values):
            try:
                job = service.start_training(collect(name, values), task_id=task or None)
            except UserError as exc:
                return _md_problems(exc)
            return f"Training **{html.escape(name)}** started (job {job})."

        def do_resume(task, name, *values):
            last = service.runner.last_config()
            try:
                if last is not None and last.name == name:
                    max_steps = options_from_values(
                        ["max_steps"], [values[fields.index("max_steps")]], defaults
                    )
                    job = service.resume_training(task_id=task or None, max_steps=max_steps["max_steps"])
                else:  # resume the picked embedding from its saved state, with the options shown
                    options = collect(name, values)
                    options["resume"] = True
                    job = service.start_training(options, task_id=task or None)
            except UserError as exc:
                return _md_problems(exc)
            return f"Resuming **{html.escape(name)}** (job {job})."

        def do_interrupt():
            try:
                service.interrupt()
            except UserError as exc:
                return _md_error(str(exc))
            return "Interrupting: the current state is being saved."

        def do_poll(previous, current_name):
            st = service.runner.status()
            history = service.runner.history()
            key = [st.job_id, st.state, len(history), len(st.previews), len(st.files)]
            if previous is not None and list(previous) == key:
                return (st.summary(),) + (gr.update(),) * 4 + (previous,)
            plot = curves_plot(history, title=st.name) if history else None
            gallery_value = [(p, Path(p).stem) for p in st.previews if Path(p).is_file()]
            changed_state = previous is None or previous[1] != st.state
            return (
                st.summary(),
                plot,
                gallery_value,
                _files_text(st),
                embedding_info(current_name) if changed_state else gr.update(),
                key,
            )

        def do_share(name, source, picture):
            if not name:
                return None, _md_error("pick an embedding to share")
            chosen = None
            if source == "Uploaded picture":
                if picture is None:
                    return None, _md_error("upload a picture first, or pick another card picture")
                chosen = picture
            elif source == "Last preview":
                st = service.runner.status()
                if st.name == name and st.last_preview and Path(st.last_preview).is_file():
                    chosen = st.last_preview
            try:
                card = service.share_card(name, chosen)
            except UserError as exc:
                return None, _md_error(str(exc))
            note = (
                ""
                if chosen is not None or source == "Plain"
                else " (no preview of this embedding yet: a plain picture was used)"
            )
            return str(card), f"Card written to `{html.escape(str(card))}`{note}"

        def do_import(upload, name, overwrite, current):
            path = file_path(upload)
            if not path:
                return _md_error("choose a file to import"), gr.update(), gr.update()
            try:
                imported = service.import_file(
                    path, name=(name or "").strip() or None, overwrite=bool(overwrite)
                )
            except UserError as exc:
                return _md_error(str(exc)), gr.update(), gr.update()
            names = embedding_names()
            note = f" - {html.escape(imported.note)}" if imported.note else ""
            return (
                f"Imported **{html.escape(imported.name)}** ({imported.shape}) to `{html.escape(imported.path)}`{note}",
                gr.update(choices=names, value=imported.name),
                embedding_info(imported.name),
            )

        def do_inspect(prompt, emphasis):
            from .inspector import format_inspection

            try:
                return format_inspection(service.inspect(prompt or "", emphasis=emphasis))
            except UserError as exc:
                return _md_error(str(exc))

        def do_bench(compare, *values):
            try:
                outcome = service.benchmark(bench_options(list(values)), compare_builtin=bool(compare))
            except UserError as exc:
                return "", _md_error(str(exc))
            where = f"JSON: `{html.escape(str(outcome.json_path))}`" if outcome.json_path else ""
            return outcome.table, where

        # ------------------------------------------------------------------ wiring

        refresh.click(refresh_choices, [embedding], [embedding, info])
        embedding.change(embedding_info, [embedding], [info])
        refresh_js = getattr(adapter, "refresh_cards_js", None) if adapter.is_host else None
        created_event = create_button.click(
            do_create,
            [create_name, create_init, create_vectors, create_overwrite],
            [create_result, embedding, info],
        )
        for comp in (by_name["learn_rate"], by_name["max_steps"]):
            comp.change(
                do_schedule, [by_name["learn_rate"], by_name["max_steps"]], [schedule_plot, schedule_msg]
            )
        for comp in (by_name["clip_grad"], by_name["clip_grad_value"], by_name["max_steps"]):
            comp.change(
                do_clip_schedule,
                [by_name["clip_grad"], by_name["clip_grad_value"], by_name["max_steps"]],
                [clip_msg],
            )
        start_js = "ti_trainer_start_training" if adapter.is_host else None
        train_inputs = [task_id, embedding, *option_components]
        train_button.click(do_train, train_inputs, [action_msg], **js_kwargs(gr, start_js))
        resume_button.click(do_resume, train_inputs, [action_msg], **js_kwargs(gr, start_js))
        interrupt_button.click(do_interrupt, [], [action_msg])
        tab.load(refresh_choices, [embedding], [embedding, info])  # embeddings made elsewhere (API, CLI)
        tab.load(
            do_poll, [seen, embedding], [status, loss_plot, gallery, files, info, seen],
            every=POLL_SECONDS, show_progress="hidden",
        )  # fmt: skip
        share_button.click(do_share, [embedding, share_source, share_picture], [share_file, share_msg])
        imported_event = import_button.click(
            do_import,
            [import_upload, import_name, import_overwrite, embedding],
            [import_msg, embedding, info],
        )
        if refresh_js:
            for event in (created_event, imported_event):
                event.then(None, None, None, **js_kwargs(gr, refresh_js))
        inspect_button.click(do_inspect, [inspect_prompt, inspect_emphasis], [inspect_out])
        if adapter.is_host:
            bench_button.click(do_bench, [bench_compare, *bench_inputs], [bench_out, bench_msg])
            send_button.click(
                None, [embedding, send_weight], [],
                **js_kwargs(gr, "(name, weight) => { ti_trainer_send_embedding(name, weight); return []; }"),
            )  # fmt: skip
    return tab


def _has_scale(gr) -> bool:
    """gradio 3.41 buttons take no ``scale``; 4.x ones do."""
    import inspect

    return "scale" in inspect.signature(gr.Button.__init__).parameters
