"""Training a name that exists means one thing in the CLI, the REST API and the tab: a new name is
a new embedding from init_text; an existing one needs resume (continue it) or overwrite (replace
it); the tab's Train button trains the embedding picked in its list (resume)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from extension.cli import main
from extension.embedding import load_embedding, save_embedding
from extension.training.create import create_embedding
from extension.training.demo_data import make_demo_dataset

fastapi = pytest.importorskip("fastapi")
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from extension.ui.adapter import StandaloneAdapter  # noqa: E402
from extension.ui.service import TrainerService  # noqa: E402
from extension.webui.api import PREFIX, mount_api  # noqa: E402


@pytest.fixture(scope="module")
def backend():
    from extension.backends.tiny import build_tiny_backend

    return build_tiny_backend("sd1")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("target") / "imgs", n=3, size=32, seed=3)


@pytest.fixture
def api(tmp_path, backend):
    service = TrainerService(
        StandaloneAdapter(backend=backend, embeddings_dir=tmp_path / "emb", log_dir=tmp_path / "logs")
    )
    app = FastAPI()
    mount_api(app, service)
    yield TestClient(app, raise_server_exceptions=False), service
    if service.runner.busy:
        service.runner.interrupt()
    service.runner.wait(120)


def body(data: Path, **extra) -> dict:
    return {"data": str(data), "width": 32, "height": 32, "template": "subject", "max_steps": 2, **extra}


def cli_args(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--width", "32", "--height", "32", "--template", "subject",
            "--embeddings-dir", str(tmp_path / "emb"), "--log-dir", str(tmp_path / "logs"),
            "--no-progress-bar", "--no-tensorboard", *extra]  # fmt: skip


def test_api_new_name_is_a_new_embedding_from_init_text(api, data, tmp_path):
    client, service = api
    r = client.post(f"{PREFIX}/train", json=body(data, name="fresh", init_text="red cat", vectors=3))
    assert r.status_code == 200, r.text
    st = service.runner.wait(120)
    assert st.state == "finished", st.summary()
    emb = load_embedding(tmp_path / "emb" / "fresh.safetensors")
    assert emb.step == 2 and emb.n_vectors == 3


def test_api_existing_name_needs_resume_or_overwrite(api, data, tmp_path, backend):
    client, service = api
    path = Path(save_embedding(create_embedding(backend, "cat", "cat", 2), tmp_path / "emb" / "cat.safetensors"))
    before = path.read_bytes()
    r = client.post(f"{PREFIX}/train", json=body(data, name="cat"))
    assert r.status_code == 409 and "set resume (--resume) to continue" in r.json()["detail"]
    assert path.read_bytes() == before and not (tmp_path / "logs").exists()

    assert client.post(f"{PREFIX}/train", json=body(data, name="cat", resume=True)).status_code == 200
    assert service.runner.wait(120).state == "finished"
    assert load_embedding(path).step == 2 and load_embedding(path).n_vectors == 2

    r = client.post(f"{PREFIX}/train", json=body(data, name="cat", overwrite=True, vectors=5, max_steps=1))
    assert r.status_code == 200, r.text
    assert service.runner.wait(120).state == "finished"
    replaced = load_embedding(path)
    assert replaced.step == 1 and replaced.n_vectors == 5  # a new one from init_text


def test_the_tab_trains_the_picked_embedding(api, data, tmp_path):
    _, service = api
    service.create("picked", "dog", 2)
    service.start_training(body(data, name="picked"))  # what the tab's Train button sends
    assert service.runner.wait(120).state == "finished"
    assert load_embedding(tmp_path / "emb" / "picked.safetensors").step == 2


def test_cli_and_api_resume_a_pt_embedding_as_pt(api, data, tmp_path, backend, capsys):
    client, service = api
    emb = create_embedding(backend, "old", "cat", 1)
    emb.step = 1
    save_embedding(emb, tmp_path / "emb" / "old.pt")
    assert main(cli_args(tmp_path, data, "--name", "old", "--steps", "2", "--resume")) == 0, capsys.readouterr().err
    assert load_embedding(tmp_path / "emb" / "old.pt").step == 2
    assert client.post(f"{PREFIX}/train", json=body(data, name="old", resume=True, max_steps=3)).status_code == 200
    assert service.runner.wait(120).state == "finished"
    assert load_embedding(tmp_path / "emb" / "old.pt").step == 3
    assert not (tmp_path / "emb" / "old.safetensors").exists()


def test_a_second_file_of_the_same_name_is_refused_everywhere(api, data, tmp_path, backend, capsys):
    client, _ = api
    save_embedding(create_embedding(backend, "twin", "cat", 1), tmp_path / "emb" / "twin.pt")
    assert main(cli_args(tmp_path, data, "--name", "twin", "--steps", "1", "--overwrite")) == 2
    assert "twin.pt already exists (in the other format)" in capsys.readouterr().err
    r = client.post(f"{PREFIX}/train", json=body(data, name="twin", overwrite=True))
    assert r.status_code == 409 and "in the other format" in r.json()["detail"]
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == ["twin.pt"]
    assert torch.equal(load_embedding(tmp_path / "emb" / "twin.pt").vectors,
                       create_embedding(backend, "twin", "cat", 1).vectors)  # fmt: skip
