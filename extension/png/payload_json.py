"""The JSON text of the ``sd-ti-embedding`` payload, byte-compatible with the web UI.

Encoding is Python's ``json.dumps`` defaults (``", "`` / ``": "`` separators, ASCII escapes,
``NaN``/``Infinity`` tokens, shortest round-trip float repr) with every tensor written as
``{"TORCHTENSOR": <nested lists>}`` of its values widened to double.  Decoding turns every object
containing ``TORCHTENSOR`` back into a tensor (float64 if any element is a float, int64 if all are
integers), within size and nesting limits.
"""

from __future__ import annotations

import json
import re

import numpy as np
import torch

from ..embedding.errors import EmbeddingFormatError

MAX_JSON_BYTES = 32 * 1024 * 1024  # an SDXL embedding with 75 vectors is about 4 MB of JSON
MAX_DEPTH = 32

_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _default(obj: object) -> object:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()  # exact widening; numpy has no bfloat16
        return {"TORCHTENSOR": t.numpy().tolist()}
    if isinstance(obj, np.ndarray):
        return {"TORCHTENSOR": obj.tolist()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__} in an embedding payload")


def encode_payload(payload: dict) -> bytes:
    """The payload's JSON text as bytes, exactly as the web UI's encoder writes it."""
    return json.dumps(payload, default=_default).encode("ascii")


def _check_depth(text: bytes, max_depth: int) -> None:
    depth = 0
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise EmbeddingFormatError(f"payload JSON is nested deeper than {max_depth} levels")
        elif tok in (b"]", b"}"):
            depth -= 1


def _tensor(value: object) -> torch.Tensor:
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise EmbeddingFormatError(f"TORCHTENSOR is not a rectangular array of numbers ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise EmbeddingFormatError(f"TORCHTENSOR holds {arr.dtype} values, expected numbers")
    return torch.from_numpy(np.array(arr, order="C", copy=True))


def _hook(obj: dict) -> object:
    if "TORCHTENSOR" in obj:
        return _tensor(obj["TORCHTENSOR"])
    return obj


def decode_payload(text: bytes | str) -> object:
    """Parse payload JSON; tensors come back as float64/int64/bool torch tensors.

    Raises EmbeddingFormatError for malformed JSON, oversize text or excessive nesting.
    """
    if isinstance(text, str):
        try:
            text = text.encode("utf-8")
        except UnicodeEncodeError:
            raise EmbeddingFormatError("payload JSON is not valid text") from None
    if len(text) > MAX_JSON_BYTES:
        raise EmbeddingFormatError(f"payload JSON is larger than {MAX_JSON_BYTES // (1024 * 1024)} MiB")
    _check_depth(text, MAX_DEPTH)
    try:
        return json.loads(text, object_hook=_hook)
    except EmbeddingFormatError:
        raise
    except (ValueError, RecursionError, TypeError, OverflowError) as exc:  # JSONDecodeError, bad UTF-8...
        raise EmbeddingFormatError(f"malformed payload JSON ({str(exc)[:160]})") from None
