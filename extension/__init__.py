"""TI Trainer: textual-inversion embedding training for the Stable Diffusion web UI and standalone.

Inside the package every import is relative, so it keeps working when the web UI loads it under a
unique module name next to another extension's top-level ``extension`` module.
"""

__version__ = "0.1.0"
