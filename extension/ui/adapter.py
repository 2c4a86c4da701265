"""What the tab, the job runner and the API need from their host, as one small interface.

Two implementations: :class:`StandaloneAdapter` here (a model loaded by ``backends.load_backend``,
plain folders) and the web UI's adapter in ``webui/host_adapter.py`` (the host's loaded model, its
embedding database, its queue lock and ``shared.state``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..backends.base import Backend


@runtime_checkable
class JobHooks(Protocol):
    """The host's side of a running training job (its progress display and interrupt button)."""

    def progress(self, step: int, total: int, text: str) -> None:
        """Report ``step`` of ``total`` with a one-line description."""
        ...

    def preview(self, image) -> None:
        """Show a freshly rendered preview ``PIL.Image``."""
        ...

    def interrupted(self) -> bool:
        """True once the host asked the job to stop (e.g. its own Interrupt button)."""
        ...


@runtime_checkable
class HostAdapter(Protocol):
    """Everything host-specific the tab, the job runner and the API use.

    Optional extras, looked up with ``getattr``: ``known_embeddings() -> dict[str, int]`` (every
    embedding name the host can use -> its vector count, for the prompt inspector; default: the
    embeddings folder) and ``refresh_cards_js: str`` (client-side JS the tab runs after it
    created or imported an embedding, e.g. to re-render the host's embedding cards).
    """

    is_host: bool  # inside the web UI: enables "Send to txt2img" and the host's progress bar

    def backend(self) -> Backend:
        """The model to train on (loaded on first use; the web UI's already loaded model)."""
        ...

    def model_label(self) -> str:
        """A short description of the model for the tab (e.g. ``"tiny-sd1"``, a checkpoint name)."""
        ...

    def embeddings_dir(self) -> Path:
        """The folder new, trained and imported embeddings are written to."""
        ...

    def log_dir(self) -> Path:
        """The folder training runs write their logs, snapshots and previews under."""
        ...

    def default_options(self) -> dict[str, object]:
        """``TrainConfig`` field overrides from the host's settings (save format, cadences...)."""
        ...

    def register_embedding(self, path: Path) -> None:
        """Make the embedding file at ``path`` usable in prompts at once (no restart)."""
        ...

    def hosted_job(self, title: str, task_id: str | None = None) -> AbstractContextManager[JobHooks]:
        """Context a training job runs in, on its own thread, from start to end.

        The web UI's adapter takes the host's queue lock here (so generation and training never
        collide), starts ``task_id`` for the host's progress bar and drives ``shared.state``.
        """
        ...


class NullJobHooks:
    """Job hooks that show nothing and never interrupt (standalone: the job runner does it all)."""

    def progress(self, step: int, total: int, text: str) -> None:
        pass

    def preview(self, image) -> None:
        pass

    def interrupted(self) -> bool:
        return False


class StandaloneAdapter:
    """The adapter of ``python -m extension ui``: a model from ``load_backend`` and plain folders.

    ``model`` is what :func:`backends.load_backend` accepts ("tiny-sd1", a diffusers folder, a
    ``.safetensors`` checkpoint); it is loaded on first use. ``backend`` may be given ready-made.
    """

    is_host = False

    def __init__(
        self,
        model: str = "tiny-sd1",
        *,
        embeddings_dir: str | Path = "ti_trainer_output/embeddings",
        log_dir: str | Path = "ti_trainer_output/textual_inversion",
        device: str | None = None,
        precision: str = "auto",
        backend: Backend | None = None,
        options: dict[str, object] | None = None,
    ):
        self.model = model
        self.device = device
        self.precision = precision  # decides the weight dtype the model is loaded in
        self._embeddings_dir = Path(embeddings_dir)
        self._log_dir = Path(log_dir)
        self._backend = backend
        self._options = dict(options or {})
        self._load_lock = threading.Lock()
        self.registered: list[Path] = []

    def backend(self) -> Backend:
        with self._load_lock:
            if self._backend is None:
                import torch

                from ..backends import load_backend
                from ..backends.loading import default_device, default_dtype

                device = torch.device(self.device) if self.device else default_device()
                dtype = default_dtype(device, self.precision)
                self._backend = load_backend(self.model, device=device, dtype=dtype)
            return self._backend

    def model_label(self) -> str:
        return self.model

    def embeddings_dir(self) -> Path:
        return self._embeddings_dir

    def log_dir(self) -> Path:
        return self._log_dir

    def default_options(self) -> dict[str, object]:
        return {"model": self.model, "progress_bar": False, "tensorboard": False, **self._options}

    def register_embedding(self, path: Path) -> None:
        # Standalone there is no embedding database: the folder is rescanned when listed.
        self.registered.append(Path(path))

    @contextlib.contextmanager
    def hosted_job(self, title: str, task_id: str | None = None) -> Iterator[JobHooks]:
        yield NullJobHooks()
