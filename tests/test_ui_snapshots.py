"""Picking the best snapshot: a real run on the tiny model saves snapshots, previews and losses;
the service lists them with the lowest validation loss marked, "Use this snapshot" makes one the
embedding (the replaced file kept as .bak, the host told at once), in the service and the API."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from extension.embedding import Embedding, load_embedding, save_embedding
from extension.training.logging import read_loss_csv
from extension.training.outputs import resume_state_path
from extension.ui.adapter import StandaloneAdapter
from extension.ui.service import TrainerService, UserError
from extension.ui.snapshots import latest_preview, list_snapshots, run_folders

pytestmark = pytest.mark.slow

RUN = {"save_every": 2, "validation_every": 2, "preview_every": 2, "preview_steps": 2, "max_steps": 6}


@pytest.fixture(scope="module")
def backend():
    from extension.backends.tiny import build_tiny_backend

    return build_tiny_backend("sd1")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from extension.training.demo_data import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("data"), n=4, size=64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, backend, data):
    """A service whose embedding "cat" was trained 6 steps with snapshots at 2, 4 and 6."""
    tmp = tmp_path_factory.mktemp("run")
    adapter = StandaloneAdapter(backend=backend, embeddings_dir=tmp / "emb", log_dir=tmp / "logs")
    service = TrainerService(adapter)
    service.create("cat", "cat", 1)
    service.start_training({"name": "cat", "data": str(data), "width": 64, "height": 64, **RUN})
    st = service.runner.wait(300)
    assert st.state == "finished", st.summary()
    return service, tmp


def test_a_runs_snapshots_with_their_losses_and_previews(trained) -> None:
    service, tmp = trained
    run, snaps = service.snapshots("cat")
    assert run == st_run(service, tmp)
    assert [s.step for s in snaps] == [2, 4, 6]
    logged = {r.step: r for r in read_loss_csv(tmp / "logs" / run / "loss.csv")}
    for s in snaps:
        assert s.path.is_file() and s.path.name == f"cat-{s.step}.safetensors"
        assert s.preview is not None and s.preview.name == f"cat-{s.step}.png" and s.preview.is_file()
        assert s.validation_loss == pytest.approx(logged[s.step].validation_loss)
        assert s.loss is not None
    lowest = min(s.validation_loss for s in snaps)
    assert [s.best for s in snaps] == [s.validation_loss == lowest for s in snaps]
    assert sum(s.best for s in snaps) == 1
    assert latest_preview(tmp / "logs", "cat") == snaps[-1].preview


def backup_embedding(path: Path) -> Embedding:
    """A backup read back, as a user restoring it would: renamed to its format's suffix."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        restored = Path(tmp) / path.name.split(".bak")[0]
        shutil.copy(path, restored)
        return load_embedding(restored)


def st_run(service: TrainerService, tmp: Path) -> str:
    run_dir = Path(service.runner.status().run_dir)
    return run_dir.relative_to(tmp / "logs").as_posix()


def test_use_a_snapshot_keeps_the_replaced_file_and_registers_it(trained) -> None:
    service, tmp = trained
    final = tmp / "emb" / "cat.safetensors"
    before = load_embedding(final)
    assert before.step == 6 and resume_state_path(final).is_file()
    _, snaps = service.snapshots("cat")
    info, used = service.use_snapshot("cat", 2)

    now = load_embedding(final)
    assert used.path == final and info.step == 2 and now.step == 2 and now.name == "cat"
    assert now.same_vectors(load_embedding(snaps[0].path))
    assert service.adapter.registered[-1] == final  # the host knows at once
    backups = {p.name for p in used.backups}
    assert backups == {"cat.safetensors.bak", "cat.resume.bak"}
    assert backup_embedding(tmp / "emb" / "cat.safetensors.bak").same_vectors(before)
    assert not resume_state_path(final).exists()  # it belonged to the step-6 vectors
    assert [e.name for e in service.embeddings()] == ["cat"]  # a .bak is no embedding

    # a second use never replaces the first backup
    _, used_again = service.use_snapshot("cat", 4)
    assert [p.name for p in used_again.backups] == ["cat.safetensors.bak1"]
    assert backup_embedding(tmp / "emb" / "cat.safetensors.bak").step == 6
    assert load_embedding(final).step == 4


def test_training_goes_on_from_the_snapshot_used(trained, data) -> None:
    service, tmp = trained
    service.use_snapshot("cat", 2)
    service.start_training({"name": "cat", "data": str(data), "width": 64, "height": 64, **RUN, "max_steps": 4})
    st = service.runner.wait(300)
    assert st.state == "finished", st.summary()
    assert load_embedding(tmp / "emb" / "cat.safetensors").step == 4
    # its run folder is a new one (listed first): the old run's snapshots 4 and 6 are kept
    new, old = run_folders(tmp / "logs", "cat")
    assert [s.step for s in list_snapshots(new, "cat")] == [4]
    assert [s.step for s in list_snapshots(old, "cat")] == [2, 4, 6]


def test_snapshot_errors(trained, tmp_path: Path) -> None:
    service, tmp = trained
    first = run_folders(tmp / "logs", "cat")[-1].relative_to(tmp / "logs").as_posix()
    with pytest.raises(UserError, match="no snapshot of step 5; its snapshots: 2, 4, 6") as info:
        service.use_snapshot("cat", 5, first)
    assert info.value.status == 404
    with pytest.raises(UserError, match="no saved snapshots") as info:
        service.snapshots("dog")
    assert info.value.status == 404
    with pytest.raises(UserError, match="no run '1999-01-01/cat'"):
        service.snapshots("cat", "1999-01-01/cat")


def test_runs_of_a_name_and_its_numbered_folders(tmp_path: Path) -> None:
    def snapshot(folder: str, name: str, step: int) -> Path:
        path = tmp_path / "logs" / folder / "embeddings" / f"{name}-{step}.safetensors"
        return save_embedding(Embedding(f"{name}-{step}", torch.zeros(1, 32), step=step), path)

    snapshot("2024-01-01/cat", "cat", 10)
    snapshot("2024-01-02/cat-2", "cat", 20)  # cat's second run that day folder
    snapshot("2024-01-02/cat-2-2", "cat-2", 5)  # ... and the runs of an embedding called cat-2
    snapshot("2024-01-03/cat-2", "cat-2", 7)
    runs = [p.relative_to(tmp_path / "logs").as_posix() for p in run_folders(tmp_path / "logs", "cat")]
    assert sorted(runs) == ["2024-01-01/cat", "2024-01-02/cat-2"]
    runs2 = [p.relative_to(tmp_path / "logs").as_posix() for p in run_folders(tmp_path / "logs", "cat-2")]
    assert sorted(runs2) == ["2024-01-02/cat-2-2", "2024-01-03/cat-2"]
    (snap,) = list_snapshots(tmp_path / "logs" / "2024-01-02" / "cat-2", "cat")
    assert (snap.step, snap.loss, snap.validation_loss, snap.preview, snap.best) == (20, None, None, None, False)


def test_use_refused_while_that_embedding_trains(tmp_path: Path, backend, data) -> None:
    adapter = StandaloneAdapter(backend=backend, embeddings_dir=tmp_path / "emb", log_dir=tmp_path / "logs")
    service = TrainerService(adapter)
    service.create("cat", "cat", 1)
    service.start_training({"name": "cat", "data": str(data), "width": 64, "height": 64, "max_steps": 500})
    try:
        with pytest.raises(UserError, match="being trained right now") as info:
            service.use_snapshot("cat", 2)
        assert info.value.status == 409
    finally:
        service.runner.interrupt()
        service.runner.wait(120)


def test_the_api_lists_and_uses_snapshots(trained) -> None:
    pytest.importorskip("fastapi")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from extension.webui.api import PREFIX, mount_api

    service, _ = trained
    app = FastAPI()
    mount_api(app, service)
    client = TestClient(app, raise_server_exceptions=False)
    body = client.get(f"{PREFIX}/snapshots", params={"name": "cat"}).json()
    run = body["run"]
    steps = [s["step"] for s in body["snapshots"]]
    assert body["name"] == "cat" and steps and steps == sorted(steps)
    assert sum(s["best"] for s in body["snapshots"]) == 1
    chosen = steps[0]
    r = client.post(f"{PREFIX}/snapshots/use", json={"name": "cat", "step": chosen, "run": run})
    assert r.status_code == 200, r.text
    used = r.json()
    assert used["step"] == chosen and used["path"].endswith("cat.safetensors") and used["backups"]
    assert load_embedding(used["path"]).step == chosen
    r = client.post(f"{PREFIX}/snapshots/use", json={"name": "cat", "step": 99999})
    assert r.status_code == 404 and "its snapshots" in r.json()["detail"]
    r = client.get(f"{PREFIX}/snapshots", params={"name": "nobody"})
    assert r.status_code == 404 and "no saved snapshots" in r.json()["detail"]
    r = client.post(f"{PREFIX}/snapshots/use", json={"name": "cat", "step": chosen, "path": "/etc/passwd"})
    assert r.status_code == 422  # snapshots are named by run and step, never by a path
