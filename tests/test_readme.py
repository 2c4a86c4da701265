"""The README's commands run as written, in order: a fresh copy of the checkout, a fresh virtual
environment, and every ``bash`` block of its "Command line" section run there (``toml`` blocks are
saved under the name their first line gives). What cannot run on a test machine is still checked:
the setup scripts exist and parse (they download packages and run this suite), and every other
``python -m extension`` line anywhere in the README (several GPUs, your own model, minutes-long
benchmarks) parses with the CLI's own parser."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from extension.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def sections() -> dict[str, list[tuple[str, str]]]:
    """``## heading`` -> its fenced blocks ``(language, text)`` in order."""
    found: dict[str, list[tuple[str, str]]] = {}
    for part in re.split(r"^## ", README.read_text(encoding="utf-8"), flags=re.M)[1:]:
        title = part.splitlines()[0].strip()
        found[title] = [(m.group(1), m.group(2)) for m in BLOCK.finditer(part)]
    return found


def commands(block: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def runs_here(block: str) -> bool:
    return not any(c.startswith("torchrun") for c in commands(block))


def fresh_copy(dest: Path) -> None:
    """The checkout's tracked files (what a clone holds), or the folder without caches."""
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        names = [n for n in files.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = []
    if not names:
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".git", "__pycache__", "ti_trainer_output"))
        return
    for name in names:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def test_setup_blocks_name_scripts_that_exist_and_parse():
    found = sections()["Fresh clone: demo and tests"]
    lines = [c for lang, text in found if lang == "bash" for c in commands(text)]
    assert any(c.startswith("python -m venv .venv") for c in lines)
    for line in lines:
        for script in re.findall(r"bash (tools/\S+\.sh)", line):
            assert (ROOT / script).is_file(), script
            assert subprocess.run(["bash", "-n", str(ROOT / script)]).returncode == 0, script


def test_every_other_extension_command_parses():
    text = README.read_text(encoding="utf-8")
    lines = [c for lang, block in BLOCK.findall(text) if lang == "bash" for c in commands(block)]
    checked = 0
    for line in lines:
        line = line.split(" # ")[0]
        if "-m extension " not in line:
            continue
        argv = shlex.split(line.split("-m extension ", 1)[1])
        try:
            build_parser([argv[0]]).parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"README command does not parse ({exc.code}): {line}")
        checked += 1
    assert checked >= 10


@pytest.mark.slow
def test_command_line_section_runs_as_written(tmp_path):
    clone, venv = tmp_path / "clone", tmp_path / "venv"
    clone.mkdir()
    fresh_copy(clone)
    # a fresh environment; --system-site-packages stands for `tools/install.sh`, which downloads
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv), OMP_NUM_THREADS="1")
    ran = []
    for lang, text in sections()["Command line"]:
        if lang == "toml":
            name = re.match(r"#\s*(\S+\.toml)", text).group(1)
            (clone / name).write_text(text, encoding="utf-8")
            continue
        if lang != "bash" or not runs_here(text):
            continue
        res = subprocess.run(["bash", "-e", "-c", text], cwd=clone, env=env, capture_output=True, text=True,
                             timeout=600)  # fmt: skip
        assert res.returncode == 0, f"README block failed:\n{text}\n--- stderr:\n{res.stderr[-3000:]}"
        assert "Traceback" not in res.stderr, res.stderr[-3000:]
        ran.append(text)
    assert len(ran) >= 4
    embeddings = clone / "ti_trainer_output" / "embeddings"
    assert {"myface.safetensors", "myface.resume", "mystyle.safetensors"} <= {p.name for p in embeddings.iterdir()}
    assert (clone / "myface-copy.safetensors").is_file() and (clone / "card.png").is_file()

    from extension.embedding import load_embedding

    assert load_embedding(embeddings / "myface.safetensors").step == 40  # the TOML run resumed it
