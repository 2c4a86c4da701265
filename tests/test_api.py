"""The REST API under /ti-trainer/v1/ (FastAPI test client): each route's success and each error
as a 4xx with a message, never a 500."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi import Depends, FastAPI, HTTPException  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from extension.embedding import Embedding, load_embedding, save_embedding  # noqa: E402
from extension.ui.adapter import StandaloneAdapter  # noqa: E402
from extension.ui.service import TrainerService  # noqa: E402
from extension.webui.api import PREFIX, mount_api  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend():
    from extension.backends.tiny import build_tiny_backend

    return build_tiny_backend("sd1")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from extension.training.demo_data import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("data"), n=4, size=64)


@pytest.fixture
def env(tmp_path: Path, backend):
    adapter = StandaloneAdapter(backend=backend, embeddings_dir=tmp_path / "emb", log_dir=tmp_path / "logs")
    service = TrainerService(adapter)
    app = FastAPI()
    mount_api(app, service)
    client = TestClient(app, raise_server_exceptions=False)
    yield client, service, tmp_path
    if service.runner.busy:
        service.runner.interrupt()
    service.runner.wait(60)


def url(route: str) -> str:
    return f"{PREFIX}/{route}"


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    text = str(body["detail"]).lower()
    for word in words:
        assert word.lower() in text, (word, body)
    if status != 422:  # our own errors list every problem
        assert body["problems"]


# ---------------------------------------------------------------------------- create / embeddings


def test_create_without_a_usable_model_is_a_4xx_not_a_500(tmp_path: Path) -> None:
    """In the web UI the backend raises HostModelError (a RuntimeError) when no model is loaded,
    Forge's a ForgeModelError (a ValueError) for a model it refuses or cannot load; creating an
    embedding must then answer with that message, not a 500."""
    from extension.forge.families import load_failure
    from extension.webui.glue import FORGE_MESSAGE, HostModelError

    for error, words in ((HostModelError(FORGE_MESSAGE), "Forge"),
                         (load_failure("x.safetensors", ValueError("Failed to recognize model type!")), "x.safetensors")):  # fmt: skip

        class NoModel(StandaloneAdapter):
            def backend(self, error=error):
                raise error

        app = FastAPI()
        mount_api(app, TrainerService(NoModel(embeddings_dir=tmp_path / "emb", log_dir=tmp_path / "logs")))
        client = TestClient(app, raise_server_exceptions=False)
        assert_error(client.post(url("create"), json={"name": "cat"}), 409, words)
        assert not (tmp_path / "emb" / "cat.safetensors").exists()


def test_create_and_list(env) -> None:
    client, service, tmp = env
    assert client.get(url("embeddings")).json() == {"embeddings": []}
    r = client.post(url("create"), json={"name": "cat", "init_text": "a cat", "vectors": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "cat" and body["vectors"] == 3 and body["step"] == 0 and body["shape"] == "3 x 32"
    emb = load_embedding(tmp / "emb" / "cat.safetensors")
    assert emb.n_vectors == 3 and emb.step == 0
    assert service.adapter.registered == [tmp / "emb" / "cat.safetensors"]
    listed = client.get(url("embeddings")).json()["embeddings"]
    assert [(e["name"], e["vectors"]) for e in listed] == [("cat", 3)]


def test_create_errors(env) -> None:
    client, _, _ = env
    assert client.post(url("create"), json={"name": "cat"}).status_code == 200
    assert_error(client.post(url("create"), json={"name": "cat"}), 409, "already exists", "overwrite")
    assert (
        client.post(url("create"), json={"name": "cat", "overwrite": True, "vectors": 2}).json()["vectors"]
        == 2
    )
    assert_error(client.post(url("create"), json={"name": "../evil"}), 400, "not a safe file name")
    assert_error(client.post(url("create"), json={"name": "  "}), 400, "enter a name")
    assert_error(client.post(url("create"), json={"name": "dog", "vectors": 0}), 400, "between 1 and 75")
    assert_error(client.post(url("create"), json={"name": "dog", "vectors": 76}), 400, "between 1 and 75")
    assert client.post(url("create"), json={"init_text": "x"}).status_code == 422  # name missing
    assert (
        client.post(url("create"), json={"name": "dog", "colour": "red"}).status_code == 422
    )  # unknown field
    assert client.post(url("create"), json={"name": "dog", "vectors": "many"}).status_code == 422


def test_malformed_json_is_a_4xx(env) -> None:
    client, _, _ = env
    for route in ("create", "train", "inspect", "import"):
        r = client.post(url(route), content=b'{"name": ', headers={"content-type": "application/json"})
        assert r.status_code == 422, (route, r.text)
        assert "json" in r.text.lower()
        r = client.post(url(route), content=b"[1, 2]", headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (route, r.text)


# ---------------------------------------------------------------------------- train / status / interrupt


def test_train_status_interrupt(env, data: Path) -> None:
    client, service, tmp = env
    client.post(url("create"), json={"name": "cat", "init_text": "cat"})
    r = client.post(
        url("train"),
        json={
            "name": "cat",
            "data": str(data),
            "width": 64,
            "height": 64,
            "max_steps": 3,
            "learn_rate": 0.002,
            "resume": True,
        },
    )
    assert r.status_code == 200, r.text
    job = r.json()["job_id"]
    # a second job while the first runs: refused
    assert_error(client.post(url("train"), json={"name": "cat", "data": str(data)}), 409, "is running")
    st = client.get(url("status"), params={"job_id": job})
    assert st.status_code == 200 and st.json()["job_id"] == job and st.json()["name"] == "cat"
    service.runner.wait(120)
    st = client.get(url("status")).json()
    assert st["state"] == "finished" and st["step"] == 3 and st["active"] is False, st
    assert st["loss"] is not None and st["lr"] == pytest.approx(0.002)
    assert str(tmp / "emb" / "cat.safetensors") in st["files"]
    assert load_embedding(tmp / "emb" / "cat.safetensors").step == 3
    assert_error(client.post(url("interrupt")), 409, "no training is running")
    assert_error(client.get(url("status"), params={"job_id": "nope"}), 404, "no job")

    # resume continues the embedding in place; interrupt right away
    r = client.post(
        url("train"),
        json={"name": "cat", "data": str(data), "width": 64, "height": 64, "max_steps": 8, "resume": True},
    )
    assert r.status_code == 200, r.text
    assert client.post(url("interrupt")).json() == {"interrupted": True}
    st = service.runner.wait(120)
    assert st.state == "interrupted", st.summary()
    assert 3 <= load_embedding(tmp / "emb" / "cat.safetensors").step < 8


def test_resume_continues_a_pt_embedding_in_its_own_format(env, data: Path, backend) -> None:
    """The tab's Resume on a picked ``.pt`` embedding (e.g. one the web UI trained) while the save
    format setting is safetensors: it continues that file, it does not say "nothing to resume"."""
    from extension.training.create import create_embedding

    client, service, tmp = env
    emb = create_embedding(backend, "old", "cat", 1)
    emb.step = 2
    save_embedding(emb, tmp / "emb" / "old.pt")
    body = {"name": "old", "data": str(data), "width": 64, "height": 64, "max_steps": 3, "resume": True}
    r = client.post(url("train"), json=body)
    assert r.status_code == 200, r.text
    st = service.runner.wait(120)
    assert st.state == "finished" and st.step == 3, st.summary()
    assert load_embedding(tmp / "emb" / "old.pt").step == 3
    assert not (tmp / "emb" / "old.safetensors").exists()


def test_train_errors(env, data: Path) -> None:
    client, _, tmp = env
    client.post(url("create"), json={"name": "cat"})
    ok = {"name": "cat", "data": str(data), "width": 64, "height": 64}
    before = (tmp / "emb" / "cat.safetensors").read_bytes()
    # an existing name needs resume or overwrite, as in the CLI; nothing is touched
    assert_error(client.post(url("train"), json=ok), 409, "already exists", "resume", "overwrite")
    assert (tmp / "emb" / "cat.safetensors").read_bytes() == before
    ok["resume"] = True
    r = client.post(url("train"), json={**ok, "learn_rate": "0.005:100, 0.001:50"})
    assert_error(r, 400, "learn_rate", "steps must increase")
    r = client.post(url("train"), json={**ok, "learn_rate": "fast", "width": 60})
    assert_error(r, 400, "learn_rate", "width 60")
    assert len(r.json()["problems"]) == 2
    assert_error(client.post(url("train"), json={**ok, "data": str(tmp / "nowhere")}), 400, "does not exist")
    assert_error(client.post(url("train"), json={**ok, "precision": "fp8"}), 400, "precision")
    assert_error(client.post(url("train"), json={**ok, "name": "dog"}), 400, "nothing to resume")
    # unknown options and the host's own fields are rejected by the model
    assert client.post(url("train"), json={**ok, "max_stepz": 3}).status_code == 422
    assert client.post(url("train"), json={**ok, "log_dir": "/etc"}).status_code == 422
    assert client.post(url("train"), json={**ok, "max_steps": "lots"}).status_code == 422
    assert client.post(url("train"), json={"data": str(data)}).status_code == 422  # no name
    assert not (tmp / "logs").exists()


def test_train_defaults_are_the_tabs(env) -> None:
    client, service, _ = env
    schema = client.get("/openapi.json").json()["components"]["schemas"]["TrainRequest"]["properties"]
    defaults = service.defaults()
    for name in ("max_steps", "batch_size", "template", "preview_every", "save_format", "clip_skip"):
        assert schema[name]["default"] == getattr(defaults, name), name
    from extension.ui.tab import tab_fields

    assert set(tab_fields()) <= set(schema)


# ---------------------------------------------------------------------------- inspect


def test_inspect(env) -> None:
    client, _, _ = env
    client.post(url("create"), json={"name": "cat", "vectors": 3})
    r = client.post(url("inspect"), json={"prompt": "a photo of (cat:1.2), BREAK [[dog]]"})
    assert r.status_code == 200, r.text
    body = r.json()
    variant = body["parts"][0]["variants"][0]
    assert ["a photo of ", 1.0] in variant["runs"] and ["cat", 1.2] in variant["runs"]
    assert len(variant["chunks"]) == 2
    assert body["embeddings"] == {"cat": {"vectors": 3, "used": True}}
    assert body["token_count"] >= 3 + 3
    assert_error(client.post(url("inspect"), json={"prompt": "x", "emphasis": "Loud"}), 400, "emphasis")
    assert_error(client.post(url("inspect"), json={"prompt": "x", "steps": 0}), 400, "steps")
    assert client.post(url("inspect"), json={"prompt": ["x"]}).status_code == 422
    bad = client.post(url("inspect"), json={"prompt": "(a:1.2.3)"})
    assert bad.status_code == 200 and bad.json()["errors"] == 1


# ---------------------------------------------------------------------------- import


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_import(env) -> None:
    client, service, tmp = env
    import torch

    src = tmp / "src"
    path = save_embedding(Embedding("mine", torch.randn(2, 32)), src / "mine.safetensors")
    r = client.post(
        url("import"), json={"filename": "mine.safetensors", "data": b64(Path(path).read_bytes())}
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "mine"
    assert load_embedding(tmp / "emb" / "mine.safetensors") == load_embedding(path)
    assert service.adapter.registered[-1] == tmp / "emb" / "mine.safetensors"
    again = {"filename": "mine.safetensors", "data": b64(Path(path).read_bytes())}
    assert_error(client.post(url("import"), json=again), 409, "already exists")
    r = client.post(url("import"), json={**again, "name": "other"})
    assert r.status_code == 200 and r.json()["name"] == "other"

    # a PNG card made by the share action imports too
    card = service.share_card("mine")
    r = client.post(
        url("import"), json={"filename": card.name, "data": b64(card.read_bytes()), "name": "fromcard"}
    )
    assert r.status_code == 200, r.text
    assert load_embedding(tmp / "emb" / "fromcard.safetensors").same_vectors(load_embedding(path))


def test_import_errors(env) -> None:
    client, _, _ = env
    from PIL import Image

    assert_error(client.post(url("import"), json={"filename": "a.pt", "data": "!!!"}), 400, "base64")
    assert_error(
        client.post(url("import"), json={"filename": "a.txt", "data": b64(b"hello")}),
        400,
        "unsupported file type",
    )
    assert_error(
        client.post(url("import"), json={"filename": "a.safetensors", "data": b64(b"garbage")}),
        400,
        "cannot import",
    )
    assert_error(
        client.post(url("import"), json={"filename": "a.pt", "data": b64(b"PK\x03\x04junk")}),
        400,
        "cannot import",
    )
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buf, "PNG")
    assert_error(
        client.post(url("import"), json={"filename": "plain.png", "data": b64(buf.getvalue())}),
        400,
        "no embedding",
    )
    import torch

    raw = io.BytesIO()
    from extension.embedding.save import safetensors_bytes

    raw.write(safetensors_bytes(Embedding("x", torch.zeros(1, 32))))
    r = client.post(
        url("import"), json={"filename": "x.safetensors", "data": b64(raw.getvalue()), "name": "a/b"}
    )
    assert_error(r, 400, "not a safe file name")
    assert client.post(url("import"), json={"filename": "x.pt"}).status_code == 422


# ---------------------------------------------------------------------------- auth


def test_dependencies_guard_every_route(tmp_path: Path, backend) -> None:
    def deny():
        raise HTTPException(status_code=401, detail="log in")

    service = TrainerService(
        StandaloneAdapter(backend=backend, embeddings_dir=tmp_path / "e", log_dir=tmp_path / "l")
    )
    app = FastAPI()
    mount_api(app, service, dependencies=[Depends(deny)])
    client = TestClient(app)
    for method, route in (("get", "embeddings"), ("get", "status"), ("post", "create"), ("post", "train"),
                          ("post", "interrupt"), ("post", "inspect"), ("post", "import")):  # fmt: skip
        r = getattr(client, method)(url(route), **({"json": {}} if method == "post" else {}))
        assert r.status_code == 401, (route, r.text)


def test_a_host_that_cannot_load_the_file_gives_a_note_not_an_error(tmp_path: Path, backend) -> None:
    class PickyHost(StandaloneAdapter):
        def register_embedding(self, path: Path) -> None:
            raise ValueError("width 32 does not fit the loaded model (768)")

    service = TrainerService(
        PickyHost(backend=backend, embeddings_dir=tmp_path / "emb", log_dir=tmp_path / "logs")
    )
    app = FastAPI()
    mount_api(app, service)
    r = TestClient(app).post(url("create"), json={"name": "cat"})
    assert r.status_code == 200, r.text
    assert "not usable with the loaded model yet" in r.json()["note"] and "768" in r.json()["note"]
    assert (tmp_path / "emb" / "cat.safetensors").is_file()


def test_bench(env) -> None:
    client, _service, _tmp = env
    r = client.post(url("bench"), json={"steps": 3, "warmup": 1, "size": 32, "images": 4, "threads": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["checks"]["params_with_grad"] == 0 and body["checks"]["model_unchanged"]
    assert body["overhead_ratio"] > 0
    assert_error(client.post(url("bench"), json={"steps": 0}), 400, "steps")
    assert_error(client.post(url("bench"), json={"compare_builtin": True, "steps": 2}), 400, "web UI")
    assert client.post(url("bench"), json={"stepz": 2}).status_code == 422


# ---------------------------------------------------------------------------- conflicts and server paths


def test_import_over_the_embedding_being_trained_is_a_409(env, data: Path) -> None:
    import torch

    client, service, tmp = env
    client.post(url("create"), json={"name": "cat", "init_text": "cat"})
    r = client.post(
        url("train"),
        json={"name": "cat", "data": str(data), "width": 64, "height": 64, "max_steps": 100_000, "resume": True},
    )
    assert r.status_code == 200, r.text
    upload = save_embedding(Embedding("cat", torch.full((1, 32), 7.0)), tmp / "src" / "cat.safetensors")
    data_b64 = b64(Path(upload).read_bytes())
    for extra in ({}, {"overwrite": True}):
        assert_error(
            client.post(url("import"), json={"filename": "cat.safetensors", "data": data_b64, **extra}),
            409, "being trained",
        )  # fmt: skip
    renamed = {"filename": "x.safetensors", "data": data_b64, "name": "cat", "overwrite": True}
    assert_error(client.post(url("import"), json=renamed), 409, "being trained")
    assert client.post(url("import"), json={**renamed, "name": "dog"}).status_code == 200
    assert service.runner.busy
    client.post(url("interrupt"))
    st = service.runner.wait(120)
    assert st.state == "interrupted", st.summary()
    assert not torch.equal(load_embedding(tmp / "emb" / "cat.safetensors").vectors, torch.full((1, 32), 7.0))


def test_validation_folder_is_checked_up_front_and_never_listed(env, data: Path, tmp_path: Path) -> None:
    client, service, _ = env
    client.post(url("create"), json={"name": "cat"})
    server = tmp_path / "etc"
    server.mkdir()
    for name in ("adduser.conf", "passwd", "hosts"):
        (server / name).write_text("x", encoding="utf-8")
    ok = {"name": "cat", "data": str(data), "width": 64, "height": 64, "resume": True, "validation_every": 2}
    r = client.post(url("train"), json={**ok, "validation_data": str(server)})
    assert_error(r, 400, "validation folder", "has no images")
    assert "adduser" not in r.text and "passwd" not in r.text
    (server / "broken.png").write_bytes(b"not a png")
    r = client.post(url("train"), json={**ok, "validation_data": str(server)})
    assert_error(r, 400, "broken.png")
    assert "adduser" not in r.text and "passwd" not in r.text
    assert service.runner.status().state == "idle"


def test_a_run_never_lists_the_other_files_of_its_folders(env, tmp_path: Path) -> None:
    from extension.training.demo_data import make_demo_dataset

    client, service, _ = env
    folder = make_demo_dataset(tmp_path / "mixed", n=2, size=64)
    for name in ("passwd", "id_rsa", "notes.md"):
        (folder / name).write_text("secret", encoding="utf-8")
    body = {"name": "fresh", "data": str(folder), "width": 64, "height": 64, "max_steps": 1}
    assert client.post(url("train"), json=body).status_code == 200
    st = service.runner.wait(120)
    assert st.state == "finished", st.summary()
    text = str(client.get(url("status")).json())
    assert "passwd" not in text and "id_rsa" not in text and "notes.md" not in text
