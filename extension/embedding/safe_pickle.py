"""Loading ``.pt``/``.bin`` files without ever running code from them."""

from __future__ import annotations

import os
import pickle
import re
import warnings

import torch

from .errors import EmbeddingFormatError

MAX_TENSOR_FILE_BYTES = 256 * 1024 * 1024  # an embedding is kilobytes; this is a checkpoint or worse

_CONVERT_HINT = (
    "If you trust this file, load it in a trusted environment and re-save the vectors as "
    ".safetensors (for example with safetensors.torch.save_file), then use that file."
)


def _unsupported_global(message: str) -> str | None:
    # torch < 2.6 "Unsupported global: GLOBAL x.y was not...", newer "unsupported GLOBAL x.y whose module..."
    m = re.search(r"GLOBAL ([\w.]+)", message) or re.search(
        r"(?:global|GLOBAL)\s+'?([\w.]+(?:[ ./][\w.]+)?)'?", message
    )
    return m.group(1) if m else None


def safe_torch_load(path: str | os.PathLike) -> object:
    """``torch.load(path, weights_only=True, map_location="cpu")``, allow-listing only the legacy
    ``torch.nn.ParameterDict`` of the original textual-inversion files.

    Anything that would need another class or function is refused with EmbeddingFormatError
    (its code never runs); damaged files raise EmbeddingFormatError too.
    """
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise EmbeddingFormatError(f"cannot read the file ({exc.strerror or exc})", path) from None
    if size == 0:
        raise EmbeddingFormatError("the file is empty", path)
    if size > MAX_TENSOR_FILE_BYTES:
        raise EmbeddingFormatError(
            f"the file is {size // (1024 * 1024)} MiB, far too big for an embedding (is it a model checkpoint?)",
            path,
        )
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals([torch.nn.ParameterDict]):
            warnings.simplefilter("ignore")  # torch's chatter about odd pickle protocols in damaged files
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        name = _unsupported_global(msg)
        if "Weights only load failed" in msg or name:
            what = f"`{name}`" if name else "an object that is not a tensor"
            raise EmbeddingFormatError(
                f"refused to unpickle: the file needs {what}, which an embedding never contains; "
                f"loading it could run code. {_CONVERT_HINT}",
                path,
            ) from None
        raise EmbeddingFormatError(f"corrupt pickle data ({msg[:200]})", path) from None
    except MemoryError:
        raise EmbeddingFormatError("corrupt file: it asks for an impossible amount of memory", path) from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/ValueError/... for damaged files
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise EmbeddingFormatError(
            f"not a readable torch file (truncated or corrupt?): {type(exc).__name__}: {text}", path
        ) from None
