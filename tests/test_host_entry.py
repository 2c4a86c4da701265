"""The web UI entry point loads our package under a unique name, next to a foreign ``extension``."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "extension"


def test_package_uses_only_relative_imports() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "extension"]
    assert offenders == []


def test_entry_script_loads_package_under_unique_name(tmp_path: Path) -> None:
    # A foreign top-level module called "extension" is already imported, as another extension would.
    (tmp_path / "extension.py").write_text("FOREIGN = True\n")
    code = textwrap.dedent(
        f"""
        import importlib, pkgutil, runpy, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import extension
        assert extension.FOREIGN
        try:
            runpy.run_path({str(ROOT / "scripts" / "ti_trainer.py")!r})
        except ImportError as exc:  # no web UI here: registration needs the host's "modules"
            assert "modules" in str(exc), exc
        ours = sys.modules["ti_trainer_extension"]
        assert sys.modules["extension"].FOREIGN
        assert ours.__file__.startswith({str(PACKAGE)!r}), ours.__file__
        # every host-independent submodule imports under the unique name
        for info in pkgutil.walk_packages(ours.__path__, "ti_trainer_extension."):
            if ".webui" in info.name or info.name.endswith(".__main__"):
                continue
            importlib.import_module(info.name)
        print("OK")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK")
