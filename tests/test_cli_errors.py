"""The CLI's answers to bad input and a hostile machine: one line, the right exit code, nothing
partial left behind, never a traceback; ``--help`` and argument errors without importing torch."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from extension.cli import build_parser, main
from extension.embedding import Embedding, save_embedding

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pt_file(tmp_path_factory) -> Path:
    """A web UI style SD1 embedding file."""
    return Path(save_embedding(Embedding("face", torch.randn(4, 768)), tmp_path_factory.mktemp("src") / "face.pt"))


def run_cli(*args: str, cwd: Path = ROOT, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*prefix, sys.executable, "-X", "importtime", "-m", "extension", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def imported_torch(stderr: str) -> bool:
    """Whether ``-X importtime`` lists the top-level ``torch`` module."""
    return any(re.search(r"\|\s+torch$", line.rstrip()) for line in stderr.splitlines())


def messages(stderr: str) -> str:
    """stderr without the -X importtime lines."""
    return "\n".join(line for line in stderr.splitlines() if not line.startswith("import time:"))


# ---------------------------------------------------------------------------- instant help and argument errors


@pytest.mark.parametrize(
    "args, code",
    [
        (["--help"], 0),
        (["train", "--help"], 0),
        (["create", "--help"], 0),
        (["convert", "--help"], 0),
        (["inspect", "--help"], 0),
        (["train", "--steps", "many"], 2),
        (["create"], 2),  # --name missing
        (["nonsense"], 2),
    ],
)
def test_help_and_argument_errors_do_not_import_torch(args, code):
    res = run_cli(*args)
    assert res.returncode == code, res.stderr[-2000:]
    assert not imported_torch(res.stderr), args


def test_the_torch_detector_sees_torch():
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", "import torch"], capture_output=True, text=True)
    assert imported_torch(res.stderr)


def test_name_and_vector_errors_do_not_import_torch(tmp_path):
    res = run_cli("create", "--name", "../x", "--vectors", "100000", "--out", str(tmp_path))
    assert res.returncode == 2 and not imported_torch(res.stderr)
    text = messages(res.stderr)
    assert "not a safe file name" in text and "between 1 and 75" in text
    assert list(tmp_path.iterdir()) == []


def test_train_help_says_each_default_once():
    text = build_parser(["train"])._subparsers._group_actions[0].choices["train"].format_help()
    flat = " ".join(text.split())
    assert flat.count("(default 0: the model's native size") == 2  # width and height, each once
    assert "native size) (default: 0)" not in flat and "SDXL) (default: 0)" not in flat
    assert "else cpu) (default" not in flat and "(default: '')" not in flat
    assert "(default: 1000)" in flat  # the others keep theirs


# ---------------------------------------------------------------------------- operating-system errors


def test_create_into_a_read_only_or_full_folder_is_one_line_and_leaves_nothing(tmp_path):
    """A real read-only and a real full file system (tmpfs in a private mount namespace)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip("mount namespaces are not allowed here")
    ro, full = tmp_path / "ro", tmp_path / "full"
    ro.mkdir()
    full.mkdir()
    script = (
        f"mount -t tmpfs -o ro tmpfs {ro} && mount -t tmpfs -o size=4k tmpfs {full} && "
        f"head -c 4096 /dev/zero > {full}/filler; "
        f"{sys.executable} -m extension create --model tiny-sd1 --name cat --vectors 75 --out {ro}/sub; echo rc=$?; "
        f"{sys.executable} -m extension create --model tiny-sd1 --name cat --vectors 75 --out {full}; echo rc=$?; "
        f"ls -A {full}"
    )
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    if "mount:" in res.stderr:
        pytest.skip(f"cannot mount here: {res.stderr[:200]}")
    assert res.stdout.count("rc=1") == 2, (res.stdout, res.stderr)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "Traceback" not in res.stderr, res.stderr
    assert "Read-only file system - the folder is on a read-only file system" in errors[0]
    assert "No space left on device - the disk is full" in errors[1]
    assert res.stdout.strip().splitlines()[-1] == "filler"  # no partial or temporary file


@pytest.mark.parametrize("code, words", [(errno.EROFS, "read-only"), (errno.ENOSPC, "disk is full")])
def test_write_errors_inside_the_cli_are_one_line(tmp_path, capsys, monkeypatch, code, words):
    """The same path where the machine cannot make such folders: the OS error is raised where the
    atomic writer flushes the file."""
    from extension.embedding import atomic

    def failing_fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    args = ["create", "--model", "tiny-sd1", "--name", "cat", "--out", str(tmp_path)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_a_clear_error_before_loading(tmp_path, capsys):
    from extension.training.demo_data import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", n=2, size=32)
    for args in (
        ["train", "--device", "cuda", "--data", str(data), "--name", "cat", "--embeddings-dir", str(tmp_path / "e")],
        ["create", "--device", "cuda", "--name", "cat", "--out", str(tmp_path / "e")],
        ["train", "--device", "tpu9", "--data", str(data), "--name", "cat", "--embeddings-dir", str(tmp_path / "e")],
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert "--device cpu" in err or "not a torch device" in err, err
        assert "Traceback" not in err and "AssertionError" not in err
    assert not (tmp_path / "e").exists()


def test_unexpected_errors_are_one_line_unless_asked(monkeypatch, capsys, pt_file):
    from extension.cli import inspect_file

    def boom(path):
        raise RuntimeError("something odd\nsecond line")

    monkeypatch.setattr(inspect_file, "describe", boom)
    assert main(["inspect", str(pt_file)]) == 1
    err = capsys.readouterr().err
    assert err == "error: unexpected RuntimeError: something odd (set TI_TRAINER_TRACEBACK=1 to see where, and please report it)\n"
    monkeypatch.setenv("TI_TRAINER_TRACEBACK", "1")
    with pytest.raises(RuntimeError):
        main(["inspect", str(pt_file)])


# ---------------------------------------------------------------------------- convert and inspect


@pytest.mark.parametrize("out", ["x.jpg", "x", "x.safetensors.txt", "x.gif"])
def test_convert_to_an_unsupported_type_is_an_error(tmp_path, capsys, out, pt_file):
    assert main(["convert", str(pt_file), str(tmp_path / out)]) == 2
    assert "unsupported output type" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert main(["convert", str(pt_file), str(tmp_path / "x.bin")]) == 0  # the supported ones still work


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "con", ""])
def test_convert_refuses_names_create_and_train_refuse(tmp_path, capsys, name, pt_file):
    assert main(["convert", str(pt_file), str(tmp_path / "y.safetensors"), "--name", name]) == 2
    assert "embedding name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_inspect_gives_the_same_verdicts_for_the_same_vectors_in_any_container(tmp_path, capsys):
    verdicts = {}
    for width in (32, 768):
        emb = Embedding("x", torch.randn(2, width))
        for suffix in (".pt", ".safetensors"):
            path = save_embedding(emb, tmp_path / f"w{width}{suffix}")
            assert main(["inspect", str(path), "--json"]) == 0
            verdicts[(width, suffix)] = json.loads(capsys.readouterr().out)["compatibility"]
    for width in (32, 768):
        assert verdicts[(width, ".pt")]["webui"] == verdicts[(width, ".safetensors")]["webui"], width
    assert "width 32 matches no SD1/SD2/SDXL model" in verdicts[(32, ".pt")]["webui"]["reason"]


def test_malicious_pickle_message_names_the_callable(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"string_to_param": {"*": torch.zeros(1, 768)}, "x": Evil()}, tmp_path / "evil.pt")
    assert main(["inspect", str(tmp_path / "evil.pt")]) == 1
    err = capsys.readouterr().err
    assert f"the file needs `{os.system.__module__}.system`, which an embedding never contains" in err
    assert "whose" not in err


# ---------------------------------------------------------------------------- ui


def test_ui_on_a_port_in_use_says_so_before_anything_starts(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["ui", "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert f"port {port} on 127.0.0.1 is in use" in captured.err and "--port" in captured.err
    assert "http://" not in captured.out
    assert main(["ui", "--port", "70000"]) == 2
    assert main(["ui", "--host", "no-such-host.invalid"]) == 2
    assert "not an address of this machine" in capsys.readouterr().err
