"""The web UI's :class:`~..ui.adapter.HostAdapter`: what the tab, the job runner and the API need
from the host — its loaded model, folders, settings, embedding database, queue lock and
``shared.state`` (job, textinfo, progress bar, interrupt, live preview).

Only importable inside the web UI (``modules.*``); the host-free logic is in :mod:`.glue`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

from . import glue
from .backend import HostBackend

# The hidden buttons that re-render the "Textual Inversion" extra-network cards of txt2img and
# img2img (modules/ui_extra_networks.py); the tab clicks them after registering an embedding.
EXTRA_NETWORK_REFRESH_IDS = (
    "txt2img_textual_inversion_extra_refresh_internal",
    "img2img_textual_inversion_extra_refresh_internal",
)
REFRESH_CARDS_JS = (
    "function(){"
    + "".join(
        f"var b=gradioApp().getElementById('{i}'); if (b) b.click();" for i in EXTRA_NETWORK_REFRESH_IDS
    )
    + "}"
)


class HostJobHooks:
    """``JobHooks`` over ``shared.state``: the host's progress bar, Interrupt button and live preview."""

    def __init__(self, title: str):
        self.title = title

    def progress(self, step: int, total: int, text: str) -> None:
        from modules import shared

        fields = glue.progress_fields(self.title, step, total, text)
        glue.restore_fields(shared.state, dataclasses.asdict(fields))

    def preview(self, image) -> None:
        from modules import shared

        if image is not None:
            shared.state.assign_current_image(image)

    def interrupted(self) -> bool:
        from modules import shared

        return bool(shared.state.interrupted or shared.state.stopping_generation)


class WebUIAdapter:
    """The web UI side of the tab and the API."""

    is_host = True
    refresh_cards_js = REFRESH_CARDS_JS  # the tab runs it after create and import

    @staticmethod
    def builtin_benchmark(backend):
        """The web UI's own trainer, timed like ours (the Benchmark's comparison)."""
        from .builtin_bench import make_builtin

        return make_builtin(backend)

    def __init__(self) -> None:
        self._backend: HostBackend | None = None
        self._lock = threading.Lock()

    # -- model --------------------------------------------------------------------------------------

    def backend(self) -> HostBackend:
        """The backend over the host's loaded model (rebuilt after a checkpoint switch)."""
        from modules import shared

        with self._lock:
            self._load_model()
            if self._backend is None or not self._backend.is_current:
                backend = self._new_backend()
                backend.preview_sampler = str(
                    getattr(shared.opts, "ti_trainer_preview_sampler", "") or backend.preview_sampler
                )
                self._backend = backend
            return self._backend

    def _load_model(self) -> None:
        """Nothing to do: the web UI loads its model at start and when the checkpoint changes."""

    def _new_backend(self) -> HostBackend:
        from modules import shared

        return HostBackend(shared.sd_model)

    def model_label(self) -> str:
        from modules import shared

        info = getattr(shared.sd_model, "sd_checkpoint_info", None)
        return getattr(info, "title", None) or getattr(info, "model_name", None) or "(no model loaded)"

    # -- folders and settings ---------------------------------------------------------------------

    def embeddings_dir(self) -> Path:
        from modules import shared

        return Path(shared.cmd_opts.embeddings_dir)

    def log_dir(self) -> Path:
        from modules import paths_internal, shared

        return Path(
            glue.resolve_log_dir(
                getattr(shared.cmd_opts, "ti_trainer_log_dir", None),
                getattr(shared.opts, "ti_trainer_log_dir", ""),
                paths_internal.data_path,
            )
        )

    def default_options(self) -> dict[str, object]:
        from modules import shared

        from ..training.config import EMPHASIS_MODES, TrainConfig

        values = {s.key: getattr(shared.opts, s.key, s.default) for s in glue.SETTINGS}
        options = glue.options_from_settings(values, [f.name for f in dataclasses.fields(TrainConfig)])
        # the run's Emphasis mode / CLIP skip start as what txt2img uses now (Settings > Stable Diffusion)
        options.update(glue.text_defaults(lambda key: getattr(shared.opts, key, None), EMPHASIS_MODES))
        options.update(
            {
                "model": self.model_label(),
                "embeddings_dir": str(self.embeddings_dir()),
                "log_dir": str(self.log_dir()),
                # the web UI's own prompt templates are offered next to ours
                "template_dir": str(getattr(shared.cmd_opts, "textual_inversion_templates_dir", "") or ""),
                "progress_bar": False,
                "tensorboard": False,
            }
        )
        return options

    # -- embedding database ---------------------------------------------------------------------

    def register_embedding(self, path: Path) -> None:
        """Put the embedding file at ``path`` into the web UI's embedding database at once.

        The file is read with our safe loader (never unpickled) and registered directly, so
        ``(name:1.5)`` works in txt2img without a restart; the tab then clicks the extra-network
        refresh buttons (:data:`REFRESH_CARDS_JS`) to re-render the cards.
        """
        from modules import devices, hashes, sd_hijack, shared
        from modules.textual_inversion.textual_inversion import Embedding as HostEmbedding

        from ..embedding import load_embedding

        path = Path(path)
        ours = load_embedding(path)
        vec = ours.vectors
        host_vec = {k: v.clone() for k, v in vec.items()} if isinstance(vec, dict) else vec.clone()
        db = sd_hijack.model_hijack.embedding_db
        if isinstance(host_vec, dict):
            host_vec = {k: v.to(devices.device) for k, v in host_vec.items()}
        else:
            host_vec = host_vec.to(devices.device)
        emb = HostEmbedding(host_vec, ours.name, step=ours.step)
        emb.vectors, emb.shape = glue.vec_rows_and_width(host_vec)
        emb.sd_checkpoint = ours.checkpoint_hash
        emb.sd_checkpoint_name = ours.checkpoint_name
        emb.filename = str(path)
        digest = hashes.sha256(str(path), f"textual_inversion/{ours.name}")
        emb.set_hash(digest or "")
        expected = db.expected_shape
        if expected not in (-1, None) and expected != emb.shape:
            db.skipped_embeddings[ours.name] = emb
            raise ValueError(
                f"embedding {ours.name!r} has width {emb.shape} but the loaded model needs {expected}; "
                "it was saved to the folder and will load with a matching model"
            )
        db.register_embedding(emb, shared.sd_model)
        from modules import processing

        glue.forget_cached_conditioning(processing.StableDiffusionProcessing)

    def known_embeddings(self) -> dict[str, int]:
        """Name -> vector count of every embedding the web UI has loaded (for the prompt inspector)."""
        from modules import sd_hijack

        db = sd_hijack.model_hijack.embedding_db
        return {name: int(getattr(emb, "vectors", 0) or 0) for name, emb in db.word_embeddings.items()}

    # -- jobs -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def hosted_job(self, title: str, task_id: str | None = None) -> Iterator[HostJobHooks]:
        """Run a job under the host's queue lock, as ``wrap_gradio_gpu_call`` runs a generation:
        queued (``task_id`` shows "In queue" in the progress bar), then ``shared.state.begin``,
        the progress task started, and everything ended and reset afterwards."""
        from modules import call_queue, progress, shared

        if task_id:
            progress.add_task_to_queue(task_id)
        with call_queue.queue_lock:
            shared.state.begin(job=task_id or title)
            if task_id:
                progress.start_task(task_id)
            shared.state.textinfo = title
            hooks = HostJobHooks(title)
            try:
                yield hooks
            finally:
                if task_id:
                    progress.finish_task(task_id)
                shared.state.end()
                shared.state.interrupted = False
                shared.state.stopping_generation = False
                shared.state.skipped = False
                shared.state.job_count = 0

    def close(self) -> None:
        """Undo anything a training session left on the host (called when the script unloads)."""
        with self._lock:
            if self._backend is not None:
                self._backend.restore()
            self._backend = None


_adapter: WebUIAdapter | None = None
_service = None


def get_adapter() -> WebUIAdapter:
    """The one adapter of this web UI process."""
    global _adapter
    if _adapter is None:
        import sys

        if glue.is_forge(sys.modules):  # the one place the host is told apart
            from ..forge.adapter import ForgeAdapter

            _adapter = ForgeAdapter()
        else:
            _adapter = WebUIAdapter()
    return _adapter


def get_service():
    """The one ``TrainerService`` of this process: the tab and the API share its job runner."""
    global _service
    if _service is None:
        from ..ui.service import TrainerService

        _service = TrainerService(get_adapter())
    return _service


def drop_adapter() -> None:
    """Stop a running job, undo what the adapter changed and forget both (script unload / reload)."""
    global _adapter, _service
    if _service is not None:
        runner = _service.runner
        if runner.interrupt():
            runner.wait(timeout=60)
    if _adapter is not None:
        _adapter.close()
    _adapter, _service = None, None
