"""Embedding files: the Embedding object, safe loading of every layout, and web-UI-compatible saving."""

from .atomic import atomic_write_bytes
from .errors import EmbeddingFormatError
from .load import SUPPORTED_SUFFIXES, load_embedding, read_safetensors
from .model import Embedding
from .names import name_from_path, sanitize_name
from .optim import load_optim_file, optim_checksum, optim_path, save_optim_file
from .save import save_embedding

__all__ = [
    "SUPPORTED_SUFFIXES",
    "Embedding",
    "EmbeddingFormatError",
    "atomic_write_bytes",
    "load_embedding",
    "load_optim_file",
    "name_from_path",
    "optim_checksum",
    "optim_path",
    "read_safetensors",
    "sanitize_name",
    "save_embedding",
    "save_optim_file",
]
