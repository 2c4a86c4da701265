"""The abuse table: every bad input, through the CLI (``main(argv)`` in-process), the REST API (the
FastAPI test client) and the tab's service where it has the action. Each case must get exit status
2 (1 for file and OS errors) or a 4xx, with a message naming the problem; never a traceback or a
500; and the files the user has (dataset, embeddings, logs) are exactly as they were.

The issue's cases come first (sizes, vectors, validation folder, convert's output type, names),
then wrong types, huge numbers, unicode and path tricks in every name and path field, and
concurrent requests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

fastapi = pytest.importorskip("fastapi")
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from extension.cli import main  # noqa: E402
from extension.embedding import Embedding, save_embedding  # noqa: E402
from extension.training.demo_data import make_demo_dataset  # noqa: E402
from extension.ui.adapter import StandaloneAdapter  # noqa: E402
from extension.ui.service import TrainerService, UserError  # noqa: E402
from extension.webui import api as api_module  # noqa: E402
from extension.webui.api import PREFIX, mount_api  # noqa: E402

pytestmark = pytest.mark.slow

NAME_TRICKS = [
    "../x", "a/b", "a\\b", "..", ".", ".hidden", "con", "LPT1.txt", "x" * 300, "é" * 100, "\u202eevil",
    "a\x00b", "tab\tname", "new\nline", "name.", "🐱cat", "  ", "",
]  # fmt: skip
MARKER = "ti_trainer_abuse_marker"  # a malicious pickle would create this file


# ---------------------------------------------------------------------------- the workspace


@pytest.fixture(scope="module")
def backend():
    from extension.backends.tiny import build_tiny_backend

    return build_tiny_backend("sd1")


@pytest.fixture(scope="module")
def template_tree(tmp_path_factory, backend) -> Path:
    """What a user has: a dataset, their embeddings (one being their favourite), an old run's logs."""
    from extension.training.create import create_embedding

    root = tmp_path_factory.mktemp("abuse_template")
    make_demo_dataset(root / "data", n=3, size=32, seed=4)
    save_embedding(create_embedding(backend, "cat", "cat", 2), root / "emb" / "cat.safetensors")
    save_embedding(create_embedding(backend, "old", "dog", 1), root / "emb" / "old.pt")
    (root / "emb" / "notes.txt").write_text("my notes", encoding="utf-8")
    (root / "logs" / "2020-01-01" / "cat").mkdir(parents=True)
    (root / "logs" / "2020-01-01" / "cat" / "loss.csv").write_text("step,loss\n1,0.5\n", encoding="utf-8")
    return root


@pytest.fixture
def ws(tmp_path, template_tree, backend):
    """A fresh copy of the user's files, and an API client and service over it."""
    root = tmp_path / "user"
    shutil.copytree(template_tree, root)
    outside = tmp_path / "outside"  # uploads, odd files: not the user's tree
    outside.mkdir()
    service = TrainerService(StandaloneAdapter(backend=backend, embeddings_dir=root / "emb", log_dir=root / "logs"))
    app = FastAPI()
    mount_api(app, service)
    client = TestClient(app, raise_server_exceptions=False)
    yield Workspace(root, outside, service, client)
    if service.runner.busy:
        service.runner.interrupt()
    service.runner.wait(120)


@dataclass
class Workspace:
    root: Path
    outside: Path
    service: TrainerService
    client: TestClient

    @property
    def places(self) -> dict[str, str]:
        return {
            "{data}": str(self.root / "data"), "{emb}": str(self.root / "emb"), "{logs}": str(self.root / "logs"),
            "{existing}": str(self.root / "emb" / "cat.safetensors"), "{outside}": str(self.outside),
        }  # fmt: skip

    def fill(self, value: Any) -> Any:
        if isinstance(value, str):
            for key, real in self.places.items():
                value = value.replace(key, real)
            return value
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        return value

    def tree(self) -> dict[str, str]:
        """Every file and folder of the user's tree with its content hash."""
        found = {}
        for path in sorted(self.root.rglob("*")):
            rel = str(path.relative_to(self.root))
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        return found


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    captured = capsys.readouterr()
    return int(code), captured.out + captured.err


def assert_refused(text: str, words: tuple[str, ...], where: str) -> None:
    assert "Traceback" not in text, (where, text)
    low = text.lower()
    for word in words:
        assert word.lower() in low, (where, word, text[:1500])


def post_json(client: TestClient, route: str, body: Any):
    """POST ``body`` as JSON, NaN and Infinity included (as a client in another language may send them)."""
    return client.post(f"{PREFIX}/{route}", content=json.dumps(body), headers={"content-type": "application/json"})


def api_text(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text
    return str(body.get("detail", body)) + " " + " ".join(map(str, body.get("problems", [])))


# ---------------------------------------------------------------------------- train


@dataclass
class TrainCase:
    id: str
    changes: dict[str, Any]
    words: tuple[str, ...]
    status: int = 400  # the API's
    rc: int = 2
    cli_words: tuple[str, ...] | None = None  # argparse says it its own way
    api: bool = True
    cli: bool = True
    tab: bool = True
    never: tuple[str, ...] = ()  # words no answer may contain (server files)


BASE_TRAIN = {"name": "newcat", "data": "{data}", "width": 32, "height": 32, "template": "subject", "max_steps": 2}

TRAIN_CASES = [
    # the issue's own
    TrainCase("size-1e6", {"width": 1_000_000, "height": 1_000_000}, ("width 1000000 is larger than 4096",)),
    TrainCase("size-total", {"width": 4096, "height": 4096}, ("pixels is more than 4194304",)),
    TrainCase("preview-size", {"preview_width": 100_000}, ("preview width 100000",)),
    TrainCase("vectors-10000", {"vectors": 10_000}, ("between 1 and 75",)),
    TrainCase("vectors-0", {"vectors": 0}, ("between 1 and 75",)),
    TrainCase("validation-etc", {"validation_data": "/etc", "validation_every": 5}, ("validation folder", "has no images"),
              never=("passwd", "hosts", "adduser")),
    # huge and impossible numbers
    TrainCase("repeats-huge", {"repeats": 10**12}, ("repeats", "at most 10000")),
    TrainCase("val-timesteps-huge", {"validation_timesteps": 10**9}, ("validation_timesteps", "at most 1000")),
    TrainCase("preview-steps-huge", {"preview_steps": 10**6}, ("preview_steps", "at most 1000")),
    TrainCase("max-steps-negative", {"max_steps": -5}, ("max_steps -5 must be at least 1",)),
    TrainCase("max-steps-huge", {"max_steps": 10**30}, ("max_steps", "at most")),
    TrainCase("seed-huge", {"seed": 2**80}, ("seed",)),
    TrainCase("batch-0", {"batch_size": 0}, ("batch_size 0 must be at least 1",)),
    TrainCase("batch-too-big", {"batch_size": 50}, ("larger than the dataset", "--clamp-batch")),
    TrainCase("accumulation-huge", {"grad_accumulation": 10**9}, ("grad_accumulation", "at most")),
    TrainCase("clip-skip-huge", {"clip_skip": 99}, ("clip_skip 99 must be at most 12",)),
    TrainCase("bucket-step-huge", {"bucket_step": 10**6}, ("bucket_step",)),
    TrainCase("tag-dropout-5", {"tag_dropout": 5.0}, ("tag_dropout 5.0 must be between 0 and 1",)),
    TrainCase("flip-nan", {"flip_probability": math.nan}, ("flip_probability nan",)),
    TrainCase("weight-decay-inf", {"weight_decay": math.inf}, ("weight_decay inf",)),
    TrainCase("cfg-nan", {"preview_cfg_scale": math.nan}, ("preview_cfg_scale nan",)),
    TrainCase("lr-words", {"learn_rate": "fast"}, ("learn_rate schedule 'fast' is invalid",)),
    TrainCase("lr-huge", {"learn_rate": "1e400"}, ("too large",)),
    TrainCase("lr-negative", {"learn_rate": "-1"}, ("must be positive",)),
    TrainCase("clip-negative", {"clip_grad": "norm", "clip_grad_value": "-3"}, ("clip_grad_value",)),
    # choices
    TrainCase("precision", {"precision": "fp8"}, ("precision 'fp8' is unknown",), cli_words=("invalid choice",)),
    TrainCase("emphasis", {"emphasis": "Loud"}, ("emphasis 'Loud' is unknown",), cli_words=("invalid choice",)),
    TrainCase("save-format", {"save_format": "exe"}, ("save_format 'exe' is unknown",), cli_words=("invalid choice",)),
    TrainCase("sampling", {"latent_sampling": "often"}, ("latent_sampling",), cli_words=("invalid choice",)),
    TrainCase("caption-image-ext", {"caption_extension": ".png"}, ("is an image extension",)),
    TrainCase("caption-ext-path", {"caption_extension": "../../x"}, ("invalid caption extension",)),
    TrainCase("regex", {"filename_word_regex": "("}, ("file-name word regex",)),
    # path tricks in every path field
    TrainCase("template-unknown", {"template": "nonexistent_tpl"}, ("unknown prompt template",)),
    TrainCase("template-dev-zero", {"template": "/dev/zero"}, ("does not exist",)),
    TrainCase("template-big", {"template": "{outside}/big.txt"}, ("at most 1 MiB",)),
    TrainCase("template-nul", {"template": "/etc/x\x00.txt"}, ("NUL",)),
    TrainCase("template-dir-missing", {"template_dir": "{outside}/nowhere"}, ("template folder", "does not exist")),
    TrainCase("data-etc", {"data": "/etc"}, ("has no images",), never=("passwd", "hosts")),
    TrainCase("data-dotdot", {"data": "{data}/../../../../nowhere"}, ("does not exist",)),
    TrainCase("data-file", {"data": "{existing}"}, ("not a folder",)),
    TrainCase("data-empty", {"data": ""}, ("no dataset folder",)),
    TrainCase("data-unicode", {"data": "données/🐱\u202e"}, ("does not exist",)),
    TrainCase("data-nul", {"data": "{data}\x00"}, ("NUL",)),
    TrainCase("data-home", {"data": "~nosuchuser/photos"}, ("does not exist",)),
    TrainCase("validation-missing", {"validation_data": "{outside}/nope"}, ("validation folder", "does not exist")),
    TrainCase("embedding-file-passwd", {"embedding_file": "/etc/passwd"}, ("embedding file cannot be read",)),
    TrainCase("embedding-file-missing", {"embedding_file": "{outside}/none.pt"}, ("does not exist",)),
    TrainCase("embedding-file-evil", {"embedding_file": "{outside}/evil.pt"}, ("refused to unpickle",)),
    # the embedding being trained
    TrainCase("existing-no-choice", {"name": "cat"}, ("already exists", "resume", "overwrite"), status=409, tab=False),
    TrainCase("existing-other-format", {"name": "old", "overwrite": True}, ("in the other format",), status=409),
    TrainCase("resume-nothing", {"resume": True}, ("nothing to resume",)),
    TrainCase("resume-and-file", {"name": "cat", "resume": True, "embedding_file": "{outside}/other.safetensors"},
              ("resume and embedding_file both given",)),
    *[TrainCase(f"name-{i}", {"name": name}, ("name",)) for i, name in enumerate(NAME_TRICKS)],
    # wrong types and unknown options (the API's schema, argparse on the command line)
    TrainCase("type-steps", {"max_steps": "lots"}, ("max_steps",), status=422, cli_words=("invalid int value",), tab=False),
    TrainCase("type-width", {"width": 12.5}, ("width",), status=422, cli_words=("invalid int value",), tab=False),
    TrainCase("type-name", {"name": 5}, ("name",), status=422, cli=False, tab=False),
    TrainCase("type-data-list", {"data": ["a", "b"]}, ("data",), status=422, cli=False, tab=False),
    TrainCase("type-bool", {"resume": "maybe"}, ("resume",), status=422, cli=False, tab=False),
    TrainCase("type-null", {"width": None}, ("width",), status=422, cli=False, tab=False),
    TrainCase("unknown-option", {"bogus": 1}, ("bogus",), status=422, cli_words=("unrecognized arguments",)),
    *[TrainCase(f"host-field-{k}", {k: v}, (k,), status=422, cli=False)
      for k, v in (("log_dir", "/etc"), ("embeddings_dir", "/tmp"), ("model", "/etc/passwd"), ("device", "cuda"))],
]


def cli_flags(options: dict[str, Any]) -> list[str]:
    argv = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            argv += [flag, str(value)]
    return argv


def prepare_files(ws: Workspace) -> None:
    """Files some cases point at, outside the user's tree."""
    with open(ws.outside / "big.txt", "wb") as fh:
        fh.truncate(3 * 2**20)

    class Evil:
        def __reduce__(self):
            return (open, (str(ws.outside / MARKER), "w"))

    torch.save({"string_to_param": {"*": torch.zeros(1, 32)}, "x": Evil()}, ws.outside / "evil.pt")
    save_embedding(Embedding("other", torch.zeros(1, 32)), ws.outside / "other.safetensors")


@pytest.mark.parametrize("case", TRAIN_CASES, ids=lambda c: c.id)
def test_train(ws, capsys, case: TrainCase):
    prepare_files(ws)
    before = ws.tree()
    options = ws.fill({**BASE_TRAIN, **case.changes})
    if case.cli:
        argv = ["train", *cli_flags(options), "--embeddings-dir", str(ws.root / "emb"),
                "--log-dir", str(ws.root / "logs"), "--no-progress-bar", "--no-tensorboard"]  # fmt: skip
        code, text = run_cli(argv, capsys)
        assert code == case.rc, (code, text)
        assert_refused(text, case.cli_words or case.words, "cli")
        assert not any(w in text for w in case.never), text
        assert ws.tree() == before
    if case.api:
        response = post_json(ws.client, "train", options)
        assert response.status_code == case.status, response.text
        assert_refused(api_text(response), case.words, "api")
        assert not any(w in response.text for w in case.never), response.text
        assert ws.tree() == before and not ws.service.runner.busy
    if case.tab:
        with pytest.raises(UserError) as info:
            ws.service.start_training(options)
        assert info.value.status == (400 if case.status == 422 else case.status)  # no schema in the tab
        assert ws.tree() == before
    assert not (ws.outside / MARKER).exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_train_on_a_device_this_torch_cannot_use(ws, capsys):
    before = ws.tree()
    for device in ("cuda", "cuda:7", "tpu", "mps:0\x00"):
        code, text = run_cli(["train", *cli_flags(ws.fill(BASE_TRAIN)), "--device", device,
                              "--embeddings-dir", str(ws.root / "emb"), "--log-dir", str(ws.root / "logs")], capsys)  # fmt: skip
        assert code == 2 and "device" in text and "Traceback" not in text, (device, text)
    assert ws.tree() == before


# ---------------------------------------------------------------------------- create


CREATE_CASES = [
    *[(f"name-{i}", {"name": name}, ("name",), 400) for i, name in enumerate(NAME_TRICKS)],
    ("vectors-0", {"vectors": 0}, ("between 1 and 75",), 400),
    ("vectors-76", {"vectors": 76}, ("between 1 and 75",), 400),
    ("vectors-huge", {"vectors": 10**9}, ("between 1 and 75",), 400),
    ("vectors-negative", {"vectors": -1}, ("between 1 and 75",), 400),
    ("existing", {"name": "cat"}, ("already exists", "overwrite"), 409),
]


@pytest.mark.parametrize("case", CREATE_CASES, ids=lambda c: c[0])
def test_create(ws, capsys, case):
    _, changes, words, status = case
    before = ws.tree()
    options = {"name": "newcat", "init_text": "cat", "vectors": 1, **changes}
    code, text = run_cli(["create", "--model", "tiny-sd1", "--name", options["name"], "--vectors",
                          str(options["vectors"]), "--out", str(ws.root / "emb")], capsys)  # fmt: skip
    assert code == 2, text
    assert_refused(text, words if options["name"].strip() else ("name",), "cli")
    response = ws.client.post(f"{PREFIX}/create", json=options)
    assert response.status_code == status, response.text
    assert_refused(api_text(response), words if options["name"].strip() else ("name",), "api")
    with pytest.raises(UserError) as info:
        ws.service.create(options["name"], "cat", options["vectors"])
    assert info.value.status == status
    assert ws.tree() == before


@pytest.mark.parametrize(
    "body", [{"name": "x", "vectors": "many"}, {"name": "x", "zeros": "often"}, {"name": ["x"]}, {}, {"name": "x", "extra": 1}]
)
def test_create_wrong_types_are_422(ws, body):
    before = ws.tree()
    response = ws.client.post(f"{PREFIX}/create", json=body)
    assert response.status_code == 422, response.text
    assert ws.tree() == before


def test_create_cli_wrong_types_and_paths(ws, capsys):
    before = ws.tree()
    for argv, words in (
        (["create", "--name", "x", "--vectors", "many"], ("invalid int value",)),
        (["create", "--name", "x", "--out", "{existing}"], ("is a file, not a folder",)),
        (["create", "--name", "x", "--format", "exe"], ("invalid choice",)),
        (["create", "--name", "x", "--model", "/etc/passwd", "--out", "{outside}/o"], ("cannot load model",)),
    ):
        code, text = run_cli(ws.fill(argv), capsys)
        assert code == 2, (argv, text)
        assert_refused(text, words, "cli")
    assert ws.tree() == before


# ---------------------------------------------------------------------------- import (API and tab)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_import(ws, monkeypatch):
    prepare_files(ws)
    good = (ws.outside / "other.safetensors").read_bytes()
    evil = (ws.outside / "evil.pt").read_bytes()
    cases = [
        ({"filename": "x.exe", "data": b64(good)}, 400, ("unsupported file type",)),
        ({"filename": "", "data": b64(good)}, 400, ("unsupported file type",)),
        ({"filename": "x.safetensors\x00.pt", "data": b64(good)}, 400, ("cannot import",)),
        ({"filename": "x.pt", "data": "!!!not base64"}, 400, ("base64",)),
        ({"filename": "x.pt", "data": ""}, 400, ("cannot import",)),
        ({"filename": "x.safetensors", "data": b64(b"garbage")}, 400, ("cannot import",)),
        ({"filename": "evil.pt", "data": b64(evil)}, 400, ("refused to unpickle",)),
        ({"filename": "../../etc/passwd.pt", "data": b64(b"root:x:0:0")}, 400, ("cannot import",)),
        ({"filename": "x.safetensors", "data": b64(good), "name": "cat"}, 409, ("already exists",)),
        *[({"filename": "x.safetensors", "data": b64(good), "name": n}, 400, ("name",))
          for n in NAME_TRICKS if n.strip()],
        ({"filename": "x.safetensors", "data": 5}, 422, ("data",)),
        ({"filename": "x.safetensors", "data": b64(good), "overwrite": "often"}, 422, ("overwrite",)),
        ({"filename": "x.safetensors"}, 422, ("data",)),
    ]
    before = ws.tree()
    for body, status, words in cases:
        response = ws.client.post(f"{PREFIX}/import", json=body)
        assert response.status_code == status, (body.get("filename"), body.get("name"), response.text)
        assert_refused(api_text(response), words, "api")
        assert ws.tree() == before, body.get("filename")
    monkeypatch.setattr(api_module, "MAX_IMPORT_BYTES", 10)
    response = ws.client.post(f"{PREFIX}/import", json={"filename": "x.safetensors", "data": b64(good)})
    assert response.status_code == 413 and "larger than" in response.text
    # the tab imports a file from disk: the same answers
    for name, status in (("../x", 400), ("cat", 409), ("con", 400)):
        with pytest.raises(UserError) as info:
            ws.service.import_file(ws.outside / "other.safetensors", name=name)
        assert info.value.status == status, name
    with pytest.raises(UserError, match="refused to unpickle"):
        ws.service.import_file(ws.outside / "evil.pt")
    assert ws.tree() == before and not (ws.outside / MARKER).exists()


def test_import_path_tricks_land_in_the_embeddings_folder(ws):
    good = b64((Path(save_embedding(Embedding("q", torch.ones(1, 32)), ws.outside / "q.safetensors"))).read_bytes())
    for filename in ("../../../escape.safetensors", "/etc/abs.safetensors", "..\\..\\win.safetensors", "név 1.safetensors",
                     "nul\x00byte.safetensors", "\u202eevil.safetensors"):
        response = ws.client.post(f"{PREFIX}/import", json={"filename": filename, "data": good})
        assert response.status_code == 200, (filename, response.text)
        written = Path(response.json()["path"])
        assert written.parent == ws.root / "emb", (filename, written)
    assert not (ws.root / "escape.safetensors").exists() and not Path("/etc/abs.safetensors").exists()
    assert (ws.root / "emb" / "notes.txt").read_text(encoding="utf-8") == "my notes"


# ---------------------------------------------------------------------------- convert and inspect (CLI)


def test_convert_and_inspect(ws, capsys):
    prepare_files(ws)
    src = ws.root / "emb" / "cat.safetensors"
    cases = [
        (["convert", str(src), "{outside}/x.jpg"], 2, ("unsupported output type",)),
        (["convert", str(src), "{outside}/x"], 2, ("unsupported output type",)),
        *[(["convert", str(src), "{outside}/y.safetensors", "--name", n], 2, ("name",)) for n in NAME_TRICKS],
        (["convert", str(src), "{outside}/y.safetensors", "--image", "x.png"], 2, ("--image",)),
        (["convert", "{outside}/missing.pt", "{outside}/y.safetensors"], 1, ("missing.pt",)),
        (["convert", "{emb}", "{outside}/y.safetensors"], 1, ("error",)),
        (["convert", "{outside}/evil.pt", "{outside}/y.safetensors"], 1, ("refused to unpickle",)),
        (["convert", str(src), "{emb}/old.pt"], 1, ("already exists",)),
        (["convert", str(src), "{emb}/notes.txt"], 2, ("unsupported output type",)),
        (["convert", str(src), "{outside}/card.png", "--image", "/etc/passwd"], 1, ("cannot read the picture",)),
        (["inspect", "{outside}/missing.pt"], 1, ("error",)),
        (["inspect", "{emb}"], 1, ("error",)),
        (["inspect", "{emb}/notes.txt"], 1, ("unsupported file type",)),
        (["inspect", "{outside}/evil.pt"], 1, ("refused to unpickle",)),
        (["inspect", "{outside}/big.txt"], 1, ("error",)),
    ]
    before = ws.tree()
    for argv, rc, words in cases:
        code, text = run_cli(ws.fill(argv), capsys)
        assert code == rc, (argv, text)
        assert_refused(text, words, " ".join(argv))
        assert ws.tree() == before, argv
    assert not (ws.outside / MARKER).exists()


def test_inspect_prompt_api(ws):
    for body, status, words in (
        ({"prompt": "x", "steps": 0}, 400, ("steps",)),
        ({"prompt": "x", "steps": 10**12}, 400, ("steps",)),
        ({"prompt": "x" * 200_000}, 400, ("longer than",)),
        ({"prompt": "x", "emphasis": "Loud"}, 400, ("emphasis",)),
        ({"prompt": ["x"]}, 422, ("prompt",)),
        ({"prompt": "x", "steps": "many"}, 422, ("steps",)),
    ):
        response = ws.client.post(f"{PREFIX}/inspect", json=body)
        assert response.status_code == status, response.text
        assert_refused(api_text(response), words, "api")
    weird = ws.client.post(f"{PREFIX}/inspect", json={"prompt": "\x00 (((( [[[ \u202e 🐱 <lora:../../x:1> AND AND"})
    assert weird.status_code == 200, weird.text


# ---------------------------------------------------------------------------- bench, status, ui


def test_bench_status_and_interrupt(ws, capsys):
    before = ws.tree()
    for body, status, words in (
        ({"size": 100_000}, 400, ("larger than 4096",)),
        ({"steps": 10**9}, 400, ("steps must be at most",)),
        ({"images": 10**9}, 400, ("images must be at most",)),
        ({"vectors": 500}, 400, ("between 1 and 75",)),
        ({"precision": "fp8"}, 400, ("precision",)),
        ({"size": 12}, 400, ("multiple of 8",)),
        ({"steps": "x"}, 422, ("steps",)),
        ({"bogus": 1}, 422, ("bogus",)),
    ):
        response = ws.client.post(f"{PREFIX}/bench", json=body)
        assert response.status_code == status, response.text
        assert_refused(api_text(response), words, "api")
    for argv, words in ((["bench", "--size", "100000"], ("larger than 4096",)),
                        (["bench", "--steps", "1000000000"], ("at most",)),
                        (["bench", "--precision", "fp8"], ("invalid choice",))):  # fmt: skip
        code, text = run_cli(argv, capsys)
        assert code == 2 and "Traceback" not in text
        assert_refused(text, words, "cli")
    response = ws.client.get(f"{PREFIX}/status", params={"job_id": "../../etc/passwd"})
    assert response.status_code == 404
    assert ws.client.post(f"{PREFIX}/interrupt").status_code == 409
    assert ws.tree() == before


def test_ui_bad_addresses(capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for argv, words in ((["ui", "--port", str(port)], ("is in use",)),
                            (["ui", "--port", "70000"], ("out of range",)),
                            (["ui", "--port", "-1"], ("out of range",)),
                            (["ui", "--host", "no-such-host.invalid"], ("not an address",)),
                            (["ui", "--port", "many"], ("invalid int value",))):  # fmt: skip
            code, text = run_cli(argv, capsys)
            assert code == 2, (argv, text)
            assert_refused(text, words, "cli")
            assert "http://" not in text


# ---------------------------------------------------------------------------- concurrent requests


def in_parallel(n: int, request: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * n
    start = threading.Barrier(n)

    def worker(i: int) -> None:
        start.wait()
        results[i] = request(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_concurrent_creates_of_one_name(ws):
    from extension.embedding import load_embedding

    responses = in_parallel(6, lambda i: ws.client.post(f"{PREFIX}/create", json={"name": "dup", "vectors": i + 1}))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 5, [r.text for r in responses]
    winner = next(r for r in responses if r.status_code == 200).json()
    assert load_embedding(ws.root / "emb" / "dup.safetensors").n_vectors == winner["vectors"]
    assert not any(p.name.startswith(".dup") for p in (ws.root / "emb").iterdir())  # no temp files left


def test_concurrent_imports_of_one_name(ws):
    data = b64(Path(save_embedding(Embedding("imp", torch.ones(2, 32)), ws.outside / "imp.safetensors")).read_bytes())
    responses = in_parallel(6, lambda i: ws.client.post(f"{PREFIX}/import", json={"filename": "imp.safetensors", "data": data}))
    assert sorted(r.status_code for r in responses) == [200] + [409] * 5, [r.text for r in responses]


def test_concurrent_trainings_and_the_embedding_being_trained(ws):
    before = {k: v for k, v in ws.tree().items() if k.startswith(("data", "emb/cat", "emb/old", "emb/notes", "logs/2020"))}
    body = ws.fill({**BASE_TRAIN, "max_steps": 100_000})
    responses = in_parallel(6, lambda i: ws.client.post(f"{PREFIX}/train", json={**body, "name": f"run{i}"}))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 5, [r.text for r in responses]
    running = ws.service.runner.status().name
    # while it runs: creating, importing or training that name again is a 409, never a lost file
    assert ws.client.post(f"{PREFIX}/create", json={"name": running, "overwrite": True}).status_code == 409
    data = b64(Path(save_embedding(Embedding(running, torch.ones(1, 32)), ws.outside / "up.safetensors")).read_bytes())
    imported = ws.client.post(f"{PREFIX}/import", json={"filename": "up.safetensors", "data": data, "name": running,
                                                        "overwrite": True})  # fmt: skip
    assert imported.status_code == 409, imported.text
    assert ws.client.post(f"{PREFIX}/train", json={**body, "name": running, "resume": True}).status_code == 409
    statuses = in_parallel(4, lambda i: ws.client.get(f"{PREFIX}/status").status_code)
    assert statuses == [200] * 4
    interrupts = in_parallel(3, lambda i: ws.client.post(f"{PREFIX}/interrupt").status_code)
    assert 200 in interrupts and set(interrupts) <= {200, 409}
    st = ws.service.runner.wait(120)
    assert st.state in ("interrupted", "finished"), st.summary()
    after = {k: v for k, v in ws.tree().items() if k in before}
    assert after == before  # the user's own files are untouched

