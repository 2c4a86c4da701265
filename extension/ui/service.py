"""The actions of the tab and the API (create, train, import, share, inspect), in one place.

Each bad request raises :class:`UserError` with an HTTP-like ``status`` (400 bad input, 404
unknown embedding, 409 conflict) and a message that says what to do; the tab shows the message,
the API returns it with that status.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..embedding import EmbeddingFormatError, load_embedding, save_embedding
from ..embedding.names import sanitize_name
from ..limits import name_problem, vectors_problem
from ..training.config import ConfigError, TrainConfig
from ..training.target import conflict_problem, with_existing_format
from .adapter import HostAdapter
from .catalog import EmbeddingCatalog, EmbeddingInfo, describe
from .inspector import inspect_prompt
from .jobs import JobBusyError, JobRunner, NothingToResumeError
from .share import ShareError, import_embedding, make_card
from .snapshots import Snapshot, SnapshotError, UsedSnapshot, find_run, list_snapshots, run_id, use_snapshot

# TrainConfig fields the host decides, never the tab or the API
HOST_FIELDS = ("model", "embeddings_dir", "log_dir", "device", "progress_bar", "tensorboard")
# fields that describe *what* to train; the tab has its own controls for them
TARGET_FIELDS = ("name", "embedding_file", "init_text", "vectors", "zeros")
TRAINABLE_SUFFIXES = {".safetensors": "safetensors", ".pt": "pt"}
# BenchSettings fields the tab and the API may set (the model is always the adapter's)
BENCH_FIELDS = (
    "batch_size", "grad_accumulation", "steps", "warmup", "size", "images", "vectors", "precision",
    "threads", "seed",
)  # fmt: skip


class UserError(ValueError):
    """A request that cannot be done as asked; ``status`` is 400, 404 or 409."""

    def __init__(self, message: str, status: int = 400, problems: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.problems = problems or [message]


def option_fields() -> list[dataclasses.Field]:
    """The TrainConfig fields the tab and the API expose (all but the host's)."""
    return [f for f in dataclasses.fields(TrainConfig) if f.name not in HOST_FIELDS]


class TrainerService:
    """Everything the tab and the API do, over one adapter, catalog and job runner."""

    def __init__(self, adapter: HostAdapter, runner: JobRunner | None = None):
        self.adapter = adapter
        self.runner = runner or JobRunner(adapter)
        self.catalog = EmbeddingCatalog()
        self._bench_lock = threading.Lock()

    # ------------------------------------------------------------------ defaults

    def defaults(self) -> TrainConfig:
        """TrainConfig defaults with the host's settings and folders applied."""
        try:
            base = TrainConfig.from_dict(dict(self.adapter.default_options()))
        except ConfigError as exc:  # a bad host setting: fall back to the plain defaults
            print(f"TI Trainer: ignoring bad default options: {exc}")
            base = TrainConfig()
        return dataclasses.replace(
            base, embeddings_dir=str(self.adapter.embeddings_dir()), log_dir=str(self.adapter.log_dir())
        )

    # ------------------------------------------------------------------ embeddings

    def embeddings(self) -> list[EmbeddingInfo]:
        return self.catalog.scan(self.adapter.embeddings_dir())[0]

    def known_embeddings(self) -> dict[str, int]:
        """Embedding name -> vectors, for the inspector (the host's database when it has one)."""
        known = getattr(self.adapter, "known_embeddings", None)
        if callable(known):
            return dict(known())
        return {e.name: e.n_vectors for e in self.embeddings()}

    def find(self, name: str) -> EmbeddingInfo:
        info = self.catalog.find(self.adapter.embeddings_dir(), name)
        if info is None:
            raise UserError(
                f"no embedding called {name!r} in {self.adapter.embeddings_dir()}; create or import it first",
                404,
            )
        return info

    def create(
        self,
        name: str,
        init_text: str = "*",
        vectors: int = 1,
        *,
        overwrite: bool = False,
        zeros: bool = False,
    ) -> EmbeddingInfo:
        """Create ``<embeddings dir>/<name>.safetensors`` (step 0) and register it."""
        from ..training.create import create_embedding

        name = (name or "").strip()
        if not name:
            raise UserError("enter a name for the embedding")
        problem = name_problem(name) or vectors_problem(vectors)
        if problem:
            raise UserError(problem)
        self._check_not_training(name)
        target = Path(self.adapter.embeddings_dir()) / f"{name}.safetensors"
        others = [e for e in self.embeddings() if e.name == name and Path(e.path) != target]
        if (target.exists() or others) and not overwrite:
            where = target if target.exists() else others[0].path
            raise UserError(
                f"an embedding called {name!r} already exists ({where}); tick overwrite or pick another name",
                409,
            )
        try:
            backend = self.adapter.backend()
        except (RuntimeError, ValueError) as exc:  # no trainable model loaded (HostModelError), Forge's refusals
            raise UserError(str(exc), 409) from None
        try:
            embedding = create_embedding(backend, name, init_text, int(vectors), zeros=zeros)
            path = save_embedding(embedding, target, "safetensors", overwrite=overwrite)
        except FileExistsError as exc:  # created meanwhile by someone else
            raise UserError(str(exc), 409) from None
        except (ValueError, EmbeddingFormatError, OSError) as exc:
            raise UserError(str(exc)) from None
        return dataclasses.replace(describe(embedding, Path(path)), note=self._register(Path(path)))

    def import_file(
        self, source: str | os.PathLike, *, name: str | None = None, overwrite: bool = False
    ) -> EmbeddingInfo:
        """Copy any supported embedding file into the embeddings folder and register it (409 while
        an embedding of that name is being trained: its run would write over the import)."""
        if name is not None and name.strip() and name_problem(name.strip()):
            raise UserError(name_problem(name.strip()) or "")
        if self.runner.busy:
            self._check_not_training(self._import_name(source, name))
        try:
            path, embedding = import_embedding(
                source, self.adapter.embeddings_dir(), name=name, overwrite=overwrite
            )
        except ShareError as exc:
            status = 409 if "already exists" in str(exc) else 400
            raise UserError(str(exc), status) from None
        return dataclasses.replace(describe(embedding, path), note=self._register(path))

    @staticmethod
    def _import_name(source: str | os.PathLike, name: str | None) -> str:
        """The name an import of ``source`` would get (as :func:`share.import_embedding` picks it)."""
        if name and name.strip():
            return name.strip()
        try:
            return sanitize_name(load_embedding(source).name)
        except (EmbeddingFormatError, OSError, ValueError):
            return ""  # the import itself says what is wrong with the file

    def _check_not_training(self, name: str) -> None:
        st = self.runner.status()
        if name and st.active and st.name == name:
            raise UserError(f"{name!r} is being trained right now; interrupt it first, or use another name", 409)

    def _register(self, path: Path) -> str:
        """Register ``path`` with the host; a failure (e.g. a width the loaded model cannot use)
        leaves the saved file in place and comes back as a note instead of an error."""
        try:
            self.adapter.register_embedding(path)
        except Exception as exc:
            return f"saved, but not usable with the loaded model yet: {exc}"
        return ""

    def snapshots(self, name: str, run: str | None = None) -> tuple[str, list[Snapshot]]:
        """(run id, snapshots) of ``name``'s run ``run`` (a folder relative to the log dir; default:
        its newest run with snapshots). 404 when there is none."""
        log_dir = Path(self.adapter.log_dir())
        try:
            run_dir = find_run(log_dir, name, run)
        except SnapshotError as exc:
            raise UserError(str(exc), 404) from None
        return run_id(log_dir, run_dir), list_snapshots(run_dir, name)

    def use_snapshot(self, name: str, step: int, run: str | None = None) -> tuple[EmbeddingInfo, UsedSnapshot]:
        """Make snapshot ``step`` of ``name``'s run the embedding ``name`` (the replaced file kept as
        ``<file>.bak``) and register it with the host at once."""
        if self.runner.busy and self.runner.status().name == name:
            raise UserError(f"{name!r} is being trained right now; interrupt it first", 409)
        _, found = self.snapshots(name, run)
        chosen = next((s for s in found if s.step == int(step)), None)
        if chosen is None:
            steps = ", ".join(str(s.step) for s in found)
            raise UserError(f"that run of {name!r} has no snapshot of step {step}; its snapshots: {steps}", 404)
        try:
            used = use_snapshot(chosen, name, Path(self.adapter.embeddings_dir()))
        except SnapshotError as exc:
            raise UserError(str(exc)) from None
        info = describe(load_embedding(used.path), used.path)
        return dataclasses.replace(info, note=self._register(used.path)), used

    def share_card(self, name: str, picture=None) -> Path:
        """A PNG card of embedding ``name`` (with ``picture``, else a plain one) under the log dir."""
        info = self.find(name)
        try:
            return make_card(info.path, Path(self.adapter.log_dir()) / "cards", picture)
        except ShareError as exc:
            raise UserError(str(exc)) from None

    def inspect(self, prompt: str, *, emphasis: str = "Original", steps: int = 20) -> dict[str, Any]:
        """The prompt inspector's analysis (see :func:`inspector.inspect_prompt`)."""
        from ..prompt.chunking import EMPHASIS_MODES

        if emphasis not in EMPHASIS_MODES:
            raise UserError(f"unknown emphasis mode {emphasis!r}; use one of {', '.join(EMPHASIS_MODES)}")
        if not 1 <= int(steps) <= 10000:
            raise UserError(f"steps must be between 1 and 10000, got {steps}")
        if len(prompt) > 100_000:
            raise UserError("the prompt is longer than 100000 characters")
        return inspect_prompt(prompt, self.known_embeddings(), emphasis=emphasis, steps=int(steps))

    # ------------------------------------------------------------------ training

    def train_config(self, options: Mapping[str, object], *, continue_existing: bool = True) -> TrainConfig:
        """The TrainConfig of a request: defaults, then ``options``, then the host's folders.

        Training an existing name means what it means in the CLI (see :mod:`training.target`): a
        new name is a new embedding from ``init_text``; an existing one needs ``resume`` (continue
        it) or ``overwrite`` (replace it), else 409. ``continue_existing`` (the tab, whose Train
        button trains the embedding picked in its list) asks for ``resume`` when neither is set.
        """
        options = dict(options)
        blocked = sorted(k for k in options if k in HOST_FIELDS)
        if blocked:
            raise UserError(f"option(s) {', '.join(blocked)} are set by the host and cannot be changed here")
        try:
            config = TrainConfig.from_dict(options, base=self.defaults())
        except ConfigError as exc:
            raise UserError(str(exc), 400, exc.problems) from None
        if not config.name:
            raise UserError("pick an embedding to train (or give its name)")
        problem = name_problem(config.name)
        if problem:
            raise UserError(problem)
        existing = self.catalog.find(self.adapter.embeddings_dir(), config.name)
        if existing is not None and not (config.resume or config.overwrite or config.embedding_file):
            suffix = Path(existing.path).suffix.lower()
            if suffix not in TRAINABLE_SUFFIXES:
                raise UserError(
                    f"{existing.path} is a {suffix} file; import it first (it is converted to .safetensors)", 409
                )
            if continue_existing:
                config = dataclasses.replace(config, resume=True)
        config = with_existing_format(config)
        conflict = conflict_problem(config)
        if conflict:
            raise UserError(conflict, 409)
        return config

    def start_training(
        self, options: Mapping[str, object], *, task_id: str | None = None, continue_existing: bool = True
    ) -> str:
        """Start a training job; returns its id (``continue_existing``: see :meth:`train_config`)."""
        self._check_idle()
        config = self.train_config(options, continue_existing=continue_existing)
        try:
            return self.runner.start(config, task_id=task_id)
        except ConfigError as exc:
            raise UserError(str(exc), 400, exc.problems) from None
        except (ValueError, OSError) as exc:  # a path the OS refuses to look at, say
            raise UserError(f"cannot use these options: {exc}") from None
        except JobBusyError as exc:
            raise UserError(str(exc), 409) from None

    def resume_training(self, *, task_id: str | None = None, max_steps: int | None = None) -> str:
        """Continue the last job of this session from its saved state."""
        self._check_idle()
        try:
            return self.runner.resume(task_id=task_id, max_steps=max_steps)
        except NothingToResumeError as exc:
            raise UserError(str(exc), 409) from None
        except ConfigError as exc:
            raise UserError(str(exc), 400, exc.problems) from None
        except JobBusyError as exc:
            raise UserError(str(exc), 409) from None

    def _check_idle(self) -> None:
        if self._bench_lock.locked():
            raise UserError("a benchmark is running; wait until it ends", 409)
        st = self.runner.status()
        if st.active:
            raise UserError(
                f"training {st.name!r} is running (step {st.step} of {st.max_steps}); interrupt it or wait until it ends",
                409,
            )

    def interrupt(self) -> None:
        if not self.runner.interrupt():
            raise UserError("no training is running", 409)

    # ------------------------------------------------------------------ benchmark

    def benchmark(
        self,
        options: Mapping[str, object] | None = None,
        *,
        compare_builtin: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> BenchOutcome:
        """Run ``python -m extension bench`` on the adapter's model, inside the host's job (its
        queue lock), and write the JSON under ``<log dir>/benchmarks``.

        ``options`` are :data:`BENCH_FIELDS` values; ``compare_builtin`` also times the host's own
        trainer on the same settings (only a host that has one: the adapter's optional
        ``builtin_benchmark(backend)`` extra, or the web UI's when ``is_host``; the callable it
        returns may have a ``check(settings)`` that refuses settings before anything runs). One
        benchmark at a time, and never while training runs (409).
        """
        from ..benchmark.report import format_table
        from ..benchmark.runner import WEBUI_ONLY, BenchError, BenchSettings, run_benchmark

        options = dict(options or {})
        unknown = sorted(k for k in options if k not in BENCH_FIELDS)
        if unknown:
            raise UserError(
                f"unknown benchmark option(s) {', '.join(unknown)}; use {', '.join(BENCH_FIELDS)}"
            )
        try:
            settings = BenchSettings(
                model=self.adapter.model_label(), compare_builtin=bool(compare_builtin), **options
            )
            settings.check()
        except BenchError as exc:
            raise UserError(str(exc)) from None
        builtin_factory = self._builtin_factory() if compare_builtin else None
        if compare_builtin and builtin_factory is None:
            raise UserError(WEBUI_ONLY)
        self._check_idle()
        if not self._bench_lock.acquire(blocking=False):
            raise UserError("a benchmark is running; wait until it ends", 409)
        try:
            with self.adapter.hosted_job("TI Trainer benchmark") as hooks:

                def say(message: str) -> None:
                    hooks.progress(0, 1, message.strip())
                    (log or _print_bench)(message)

                try:
                    backend = self.adapter.backend()
                    builtin = builtin_factory(backend) if builtin_factory is not None else None
                    check = getattr(builtin, "check", None)
                    if callable(check):  # refuse settings it cannot compare before anything runs
                        check(settings)
                    result = run_benchmark(settings, backend, log=say, builtin=builtin)
                except (ValueError, RuntimeError) as exc:  # bad settings for this model, a failed run
                    raise UserError(f"the benchmark failed: {exc}") from None
        finally:
            self._bench_lock.release()
        return self._bench_outcome(result, format_table(result))

    def _builtin_factory(self) -> Callable[[Any], Callable] | None:
        factory = getattr(self.adapter, "builtin_benchmark", None)
        if callable(factory):
            return factory
        if self.adapter.is_host:
            from ..webui.builtin_bench import make_builtin

            return make_builtin
        return None

    def _bench_outcome(self, result, table: str) -> BenchOutcome:
        from ..training.outputs import atomic_write

        comparison = None
        if result.builtin:
            from ..webui.builtin_bench import comparison as compare
            from ..webui.builtin_bench import format_comparison

            comparison = compare(result)
            table = table + "\n\n" + format_comparison(result)
        data = {**result.to_dict(), "comparison": comparison}
        path: Path | None = (
            Path(self.adapter.log_dir()) / "benchmarks" / time.strftime("bench-%Y%m%d-%H%M%S.json")
        )
        try:
            atomic_write(
                path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            )
        except OSError as exc:  # the figures are still shown
            table += f"\n(could not write the JSON to {path}: {exc})"
            path = None
        return BenchOutcome(data=data, table=table, json_path=path)


@dataclasses.dataclass
class BenchOutcome:
    """A finished benchmark: its JSON (``comparison`` included), the table, where the JSON went."""

    data: dict[str, Any]
    table: str
    json_path: Path | None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.data,
            "table": self.table,
            "json_path": str(self.json_path) if self.json_path else None,
        }


def _print_bench(message: str) -> None:
    print(f"TI Trainer benchmark: {message.strip()}", flush=True)
