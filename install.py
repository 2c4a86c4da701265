"""Run by the web UI when the extension is installed or the UI starts: installs only what the host lacks.

The web UI already ships torch, numpy, Pillow, safetensors and open_clip_torch; their pins are never
touched here. Only small pure-Python packages that a host may lack are listed.
"""

import importlib.util

import launch  # the web UI's launcher module

# import name -> pip requirement
OPTIONAL_REQUIREMENTS = {
    "tomli": "tomli>=2",  # TOML training configs on Python 3.10 (3.11+ has tomllib)
}


def _missing(import_name: str) -> bool:
    if import_name == "tomli":
        try:
            import tomllib  # noqa: F401
        except ModuleNotFoundError:
            pass
        else:
            return False
    return importlib.util.find_spec(import_name) is None


for name, requirement in OPTIONAL_REQUIREMENTS.items():
    if _missing(name):
        launch.run_pip(f"install {requirement}", f"{requirement} for TI Trainer")
