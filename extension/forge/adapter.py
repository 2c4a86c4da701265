"""Forge's :class:`~..ui.adapter.HostAdapter`: the web UI adapter with Forge's model engine and
embedding databases.

Forge keeps the web UI's folders, settings, queue lock, ``shared.state`` and extra-network cards,
so only four things differ from :class:`~..webui.host_adapter.WebUIAdapter`: the backend (Forge's
engine, loaded on demand), the model label, and registering / listing embeddings, which go to the
database of each of the engine's text engines instead of ``sd_hijack``'s (a stub in Forge).

Only importable inside Forge (``backend.*``, ``modules.*``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from ..webui import glue
from ..webui.host_adapter import HostJobHooks, WebUIAdapter
from .backend import ForgeBackend, forget_cached_conditioning
from .families import FAMILIES, load_failure
from .options import host_template_dir

NO_BUILTIN = (
    "Forge has no built-in embedding trainer to compare with (it removed the web UI's Train tab); "
    "run the benchmark without the comparison"
)


def _engine_loaded(engine) -> bool:
    return getattr(engine, "forge_objects_original", None) is not None


class ForgeAdapter(WebUIAdapter):
    """The web UI adapter, with Forge's engine as the model and its text engines' databases."""

    def __init__(self) -> None:
        super().__init__()
        self._job = threading.local()  # set while this thread holds the queue lock for a job

    @staticmethod
    def builtin_benchmark(backend):
        raise ValueError(NO_BUILTIN)

    def default_options(self) -> dict[str, object]:
        """The web UI's tab defaults, offering Forge's template folder only where it exists."""
        options = super().default_options()
        options["template_dir"] = host_template_dir(options.get("template_dir"))
        return options

    # -- model --------------------------------------------------------------------------------------

    def _load_model(self) -> None:
        """Load (or switch to) the checkpoint selected in Forge's top bar, as a generation would."""
        from modules import call_queue, sd_models
        from modules_forge import main_entry

        if not sd_models.model_data.forge_loading_parameters:
            main_entry.refresh_model_loading_parameters()
        lock = contextlib.nullcontext() if getattr(self._job, "active", False) else call_queue.queue_lock
        with lock:
            try:
                sd_models.forge_model_reload()
            except Exception as exc:  # e.g. "Failed to recognize model type!" from Forge's detection
                raise load_failure(self._selected_checkpoint(), exc) from exc

    @staticmethod
    def _selected_checkpoint() -> str | None:
        from modules import sd_models

        info = (sd_models.model_data.forge_loading_parameters or {}).get("checkpoint_info")
        return getattr(info, "title", None) or getattr(info, "filename", None)

    def _new_backend(self) -> ForgeBackend:
        """A backend over Forge's engine (loaded by :meth:`_load_model`); the old one gives back what
        it replaced in the previous engine first."""
        from modules import shared

        if self._backend is not None:
            self._backend.restore()
        return ForgeBackend(shared.sd_model)

    def model_label(self) -> str:
        from modules import sd_models, shared

        info = getattr(shared.sd_model, "sd_checkpoint_info", None)
        if info is None:  # nothing loaded yet: the checkpoint Forge will load
            params = sd_models.model_data.forge_loading_parameters or {}
            info = params.get("checkpoint_info")
            # before Forge has set its loading parameters (e.g. while the UI is built): the setting
            title = getattr(info, "title", None) or getattr(shared.opts, "sd_model_checkpoint", None)
            return f"{title} (loads on first use)" if title else "(no model selected)"
        return getattr(info, "title", None) or getattr(info, "model_name", None) or "(unnamed model)"

    # -- embedding databases ----------------------------------------------------------------------

    def _text_engines(self) -> list:
        """The loaded engine's text engines (each with its own embedding database); [] if none."""
        from modules import shared

        engine = shared.sd_model
        spec = FAMILIES.get(type(engine).__name__)
        if spec is None or not _engine_loaded(engine):
            return []
        return [getattr(engine, attr) for attr in spec.text_engines]

    def register_embedding(self, path: Path) -> None:
        """Put the embedding file at ``path`` into every text engine's database at once (read with
        our safe loader, never unpickled), so ``(name:1.2)`` works in txt2img without a rescan.

        With no model loaded there is nothing to do: Forge reads the folder when it loads one.
        """
        from backend.text_processing.textual_inversion import Embedding

        from ..embedding import load_embedding

        engines = self._text_engines()
        if not engines:
            return
        path = Path(path)
        ours = load_embedding(path)
        vec = ours.vectors
        vec = (
            {k: v.detach().float().clone() for k, v in vec.items()}
            if isinstance(vec, dict)
            else vec.detach().float().clone()
        )
        emb = Embedding(vec, ours.name, step=ours.step)
        emb.vectors, emb.shape = glue.vec_rows_and_width(vec)
        emb.sd_checkpoint = ours.checkpoint_hash
        emb.sd_checkpoint_name = ours.checkpoint_name
        emb.filename = str(path)
        for text_engine in engines:
            db = text_engine.embeddings
            if db.expected_shape not in (-1, None) and db.expected_shape != emb.shape:
                db.skipped_embeddings[ours.name] = emb
                raise ValueError(
                    f"embedding {ours.name!r} has width {emb.shape} but the loaded model needs {db.expected_shape}; "
                    "it was saved to the folder and will load with a matching model"
                )
        for text_engine in engines:
            text_engine.embeddings.register_embedding(emb)
        forget_cached_conditioning()

    def known_embeddings(self) -> dict[str, int]:
        """Name -> vector count of every embedding Forge can use now (for the prompt inspector):
        the loaded engine's database, or the Textual Inversion cards' folder scan before a load."""
        engines = self._text_engines()
        if engines:
            db = engines[0].embeddings
        else:
            from modules import ui_extra_networks_textual_inversion as cards

            db = cards.embedding_db
        return {name: int(getattr(emb, "vectors", 0) or 0) for name, emb in db.word_embeddings.items()}

    # -- jobs -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def hosted_job(self, title: str, task_id: str | None = None) -> Iterator[HostJobHooks]:
        """The web UI's hosted job (queue lock, progress), remembering on this thread that the
        lock is held so that loading a model inside it does not wait for itself."""
        with super().hosted_job(title, task_id) as hooks:
            self._job.active = True
            try:
                yield hooks
            finally:
                self._job.active = False


__all__ = ["ForgeAdapter"]
