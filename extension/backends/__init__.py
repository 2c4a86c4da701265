"""Model backends: the interface the trainer uses (:mod:`.base`) and its standalone implementation.

Nothing here imports diffusers or transformers at module import time, so the package loads inside
the web UI; they are imported when a standalone model is built or loaded.
"""

from .base import (
    Backend,
    Conditioning,
    LatentDistribution,
    NoiseSchedule,
    PreviewRequest,
    SizeConditioning,
)
from .loading import ModelLoadError, load_backend, save_diffusers
from .standalone import StandaloneBackend
from .text_encoder import TextOptions
from .tiny import build_tiny_backend

__all__ = [
    "Backend",
    "Conditioning",
    "LatentDistribution",
    "ModelLoadError",
    "NoiseSchedule",
    "PreviewRequest",
    "SizeConditioning",
    "StandaloneBackend",
    "TextOptions",
    "build_tiny_backend",
    "load_backend",
    "save_diffusers",
]
