"""The REST API under ``/ti-trainer/v1/``, for the web UI (``--api``) and the standalone server.

Routes: ``POST create``, ``POST train`` (every training option as JSON, defaults as in the tab;
returns a job id), ``GET status``, ``POST interrupt``, ``GET embeddings``, ``POST inspect``,
``POST import`` (a file as base64), ``GET snapshots`` and ``POST snapshots/use`` (make a run's
snapshot the embedding). The pydantic models work with pydantic 1 (the web UI) and 2
(Forge). A bad request gets a 4xx with ``{"detail": message, "problems": [...]}``.

This module imports no ``modules.*``: the host passes its auth dependencies to :func:`mount_api`.
"""

# No ``from __future__ import annotations`` here: FastAPI must see the real model classes, some of
# which are built at mount time.

import base64
import binascii
import tempfile
from pathlib import Path
from typing import Any

import pydantic
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..embedding.load import SUPPORTED_SUFFIXES
from ..limits import sanitize_name
from ..ui.service import TrainerService, UserError, option_fields

PREFIX = "/ti-trainer/v1"
MAX_IMPORT_BYTES = 64 * 1024 * 1024
PYDANTIC_V2 = int(pydantic.VERSION.split(".")[0]) >= 2

if PYDANTIC_V2:

    class _Strict(BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")

else:  # pragma: no cover - exercised in the web UI's pydantic 1 environment

    class _Strict(BaseModel):
        class Config:
            extra = "forbid"


def _dump(model: BaseModel) -> dict[str, Any]:
    """The fields the client actually sent."""
    if PYDANTIC_V2:
        return model.model_dump(exclude_unset=True)
    return model.dict(exclude_unset=True)  # pragma: no cover - pydantic 1


class ErrorResponse(BaseModel):
    detail: str = Field(description="What is wrong and how to fix it")
    problems: list[str] = Field(default_factory=list, description="Every problem found, one per item")


class CreateRequest(_Strict):
    name: str = Field(description="Embedding name (letters, digits and '._- ')")
    init_text: str = Field("*", description="Text whose token embeddings start the vectors; empty = zeros")
    vectors: int = Field(1, description="Vectors per token (1-75)")
    overwrite: bool = Field(False, description="Replace an existing embedding of that name")
    zeros: bool = Field(False, description="Start from zero vectors instead of the init text")


class EmbeddingResponse(BaseModel):
    name: str
    path: str
    step: int | None = None
    vectors: int
    shape: str
    family: str
    note: str = Field("", description="Set when the file was saved but the host could not load it yet")


class EmbeddingsResponse(BaseModel):
    embeddings: list[EmbeddingResponse]


class JobResponse(BaseModel):
    job_id: str


class StatusResponse(BaseModel):
    job_id: str | None = None
    state: str = Field(description="idle, preparing, running, stopping, finished, interrupted or failed")
    active: bool
    name: str
    step: int
    start_step: int
    max_steps: int
    loss: float | None = None
    val_loss: float | None = None
    lr: float | None = None
    eta_seconds: float | None = None
    elapsed_seconds: float
    files: list[str]
    previews: list[str]
    last_preview: str | None = None
    embedding_path: str | None = None
    messages: list[str]
    error: str | None = None
    reason: str | None = None


class InterruptResponse(BaseModel):
    interrupted: bool


class InspectRequest(_Strict):
    prompt: str
    emphasis: str = Field("Original", description="Original, No norm, Ignore or None")
    steps: int = Field(20, description="Sampling steps, for prompt editing [a:b:when]")


class InspectResponse(BaseModel):
    prompt: str
    token_count: int
    target_token_count: int
    extra_networks: list[str] = Field(description="Extra-network tags (removed before encoding)")
    parts: list[dict[str, Any]] = Field(
        description="AND parts, each with its prompt-editing schedule and per text its emphasis runs and 77-token chunks"
    )
    embeddings: dict[str, dict[str, Any]] = Field(description="The known embeddings the prompt uses")
    lint: list[dict[str, Any]] = Field(description="Lint warnings: severity, position, message")
    errors: int


class ImportRequest(_Strict):
    filename: str = Field(
        description="Original file name; its extension decides the format (.pt, .bin, .safetensors, .png, .webp)"
    )
    data: str = Field(description="The file's bytes, base64-encoded")
    name: str | None = Field(None, description="Store under this name instead of the file's")
    overwrite: bool = False


class UseSnapshotRequest(_Strict):
    name: str = Field(description="The embedding")
    step: int = Field(description="The snapshot's step (see GET snapshots)")
    run: str | None = Field(None, description="The run, e.g. 2024-06-01/cat (default: the newest with snapshots)")


class UsedSnapshotResponse(EmbeddingResponse):
    backups: list[str] = Field(description="The replaced files, kept under these names")


class BenchRequest(_Strict):
    steps: int = Field(20, description="Timed optimizer steps of each path")
    warmup: int = Field(5, description="Untimed warm-up steps before them")
    batch_size: int = 2
    grad_accumulation: int = 2
    size: int = Field(0, description="Image side in pixels; 0 = the model's native size")
    images: int = 8
    vectors: int = 1
    precision: str = "auto"
    threads: int = Field(0, description="torch threads; 0 = torch's setting")
    seed: int = 0
    compare_builtin: bool = Field(False, description="Also time the web UI's own trainer (web UI only)")


_FIELD_TYPES: dict[str, Any] = {"learn_rate": str | float, "clip_grad_value": str | float}


def train_request_model(service: TrainerService) -> type[BaseModel]:
    """The ``POST train`` body: every option the tab has, with the tab's defaults."""
    defaults = service.defaults()
    fields: dict[str, Any] = {}
    for f in option_fields():
        kind = _FIELD_TYPES.get(f.name, type(getattr(defaults, f.name)))
        fields[f.name] = (kind, Field(getattr(defaults, f.name)))
    fields["name"] = (
        str,
        Field(description="The embedding to train (created from init_text if it does not exist)"),
    )
    return pydantic.create_model("TrainRequest", __base__=_Strict, **fields)


def _error(exc: UserError) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "problems": list(exc.problems)}, status_code=exc.status)


_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404, 409, 413)}


def build_router(service: TrainerService, *, dependencies: list | None = None) -> APIRouter:
    """The API's routes over ``service`` (not yet mounted)."""
    router = APIRouter(prefix=PREFIX, tags=["TI Trainer"], dependencies=list(dependencies or []))
    TrainRequest = train_request_model(service)

    @router.post(
        "/create", response_model=EmbeddingResponse, responses=_ERRORS, summary="Create an embedding"
    )
    def create(req: CreateRequest):
        try:
            info = service.create(
                req.name, req.init_text, req.vectors, overwrite=req.overwrite, zeros=req.zeros
            )
        except UserError as exc:
            return _error(exc)
        return info.to_dict()

    @router.post(
        "/train", response_model=JobResponse, responses=_ERRORS, summary="Start training (one job at a time)"
    )
    def train(req: TrainRequest):  # type: ignore[valid-type]
        try:
            # an existing name needs resume or overwrite, as in the CLI (the tab trains the picked one)
            return {"job_id": service.start_training(_dump(req), continue_existing=False)}
        except UserError as exc:
            return _error(exc)

    @router.get(
        "/status", response_model=StatusResponse, responses=_ERRORS, summary="The current (or last) job"
    )
    def status(job_id: str | None = None):
        st = service.runner.status()
        if job_id is not None and job_id != st.job_id:
            return _error(UserError(f"no job {job_id!r}; the current job is {st.job_id!r}", 404))
        return st.to_dict()

    @router.post(
        "/interrupt",
        response_model=InterruptResponse,
        responses=_ERRORS,
        summary="Stop training (it saves first)",
    )
    def interrupt():
        try:
            service.interrupt()
        except UserError as exc:
            return _error(exc)
        return {"interrupted": True}

    @router.get(
        "/embeddings", response_model=EmbeddingsResponse, summary="The embeddings in the embeddings folder"
    )
    def embeddings():
        return {"embeddings": [e.to_dict() for e in service.embeddings()]}

    @router.post("/bench", responses=_ERRORS, summary="Benchmark the trainer on the loaded model (blocks until done)")
    def bench(req: BenchRequest):
        options = _dump(req)
        compare = bool(options.pop("compare_builtin", False))
        try:
            return service.benchmark(options, compare_builtin=compare).to_dict()
        except UserError as exc:
            return _error(exc)

    @router.post("/inspect", response_model=InspectResponse, responses=_ERRORS, summary="Inspect a prompt")
    def inspect(req: InspectRequest):
        try:
            return service.inspect(req.prompt, emphasis=req.emphasis, steps=req.steps)
        except UserError as exc:
            return _error(exc)

    @router.post(
        "/import", response_model=EmbeddingResponse, responses=_ERRORS, summary="Import an embedding file"
    )
    def import_file(req: ImportRequest):
        try:
            data = base64.b64decode(req.data, validate=True)
        except (binascii.Error, ValueError):
            return _error(UserError("data is not valid base64; send the file's bytes base64-encoded"))
        if len(data) > MAX_IMPORT_BYTES:
            return _error(
                UserError(f"the file is larger than {MAX_IMPORT_BYTES // 2**20} MiB; is it a model?", 413)
            )
        suffix = Path(req.filename).suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            return _error(
                UserError(
                    f"unsupported file type {suffix[:20] or '(none)'}; import one of {', '.join(SUPPORTED_SUFFIXES)}"
                )
            )
        # keep the stem (tensor files take their embedding name from it), as a safe file name
        stem = sanitize_name(Path(Path(req.filename).stem).name, fallback="upload")
        with tempfile.TemporaryDirectory(prefix="ti_trainer_import_") as tmp:
            source = Path(tmp) / (stem + suffix)
            source.write_bytes(data)
            try:
                info = service.import_file(source, name=req.name, overwrite=req.overwrite)
            except UserError as exc:
                return _error(exc)
        return info.to_dict()

    @router.get("/snapshots", responses=_ERRORS, summary="A run's snapshots: step, losses, preview, best")
    def snapshots(name: str, run: str | None = None):
        try:
            run_id, found = service.snapshots(name, run)
        except UserError as exc:
            return _error(exc)
        return {"name": name, "run": run_id, "snapshots": [s.to_dict() for s in found]}

    @router.post(
        "/snapshots/use", response_model=UsedSnapshotResponse, responses=_ERRORS,
        summary="Make a snapshot the embedding (the replaced file is kept as .bak) and register it",
    )  # fmt: skip
    def use_snapshot(req: UseSnapshotRequest):
        try:
            info, used = service.use_snapshot(req.name, req.step, req.run)
        except UserError as exc:
            return _error(exc)
        return {**info.to_dict(), "backups": [str(p) for p in used.backups]}

    return router


def mount_api(app: FastAPI, service: TrainerService, *, dependencies: list | None = None) -> APIRouter:
    """Add the API routes to ``app`` (behind ``dependencies``, e.g. the host's auth check).

    Pass the same ``service`` the tab uses, so both see one job runner.
    """
    router = build_router(service, dependencies=dependencies)
    app.include_router(router)
    return router


__all__ = ["PREFIX", "build_router", "mount_api", "train_request_model"]
