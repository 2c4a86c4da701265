"""Web UI entry point for TI Trainer: loads the package under a unique name and registers callbacks.

The web UI puts every extension folder on one sys.path and shares sys.modules, so another
extension's top-level ``extension`` module may exist: ours is loaded as ``ti_trainer_extension``.
"""

import importlib
import importlib.util
import os
import sys

PACKAGE_NAME = "ti_trainer_extension"
_PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "extension")


def _load_package():
    if PACKAGE_NAME in sys.modules:
        return sys.modules[PACKAGE_NAME]
    spec = importlib.util.spec_from_file_location(
        PACKAGE_NAME, os.path.join(_PACKAGE_DIR, "__init__.py"), submodule_search_locations=[_PACKAGE_DIR]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE_NAME] = module
    spec.loader.exec_module(module)
    return module


_load_package()
importlib.import_module(PACKAGE_NAME + ".webui.entry").register()
