"""Writing ``.pt`` files the web UI 1.10 accepts, and checking files the way its safety check does.

The web UI (``modules/safe.py``) only accepts torch zip files whose members are
``<dir>/data.pkl``, ``<dir>/byteorder``, ``<dir>/version``, ``<dir>/data/<n>`` and
``<dir>/.data/serialization_id``, and pickles whose globals are on a short allowlist.  torch >= 2.7
also writes ``.format_version`` and ``.storage_alignment``, which that check rejects, so we let
torch write to memory and re-pack the zip with only the allowed members, each record's data
aligned to 64 bytes as torch does.
"""

from __future__ import annotations

import io
import pickletools
import re
import struct
import zipfile

import torch

WEBUI_MEMBER_RE = re.compile(r"^([^/]+)/((data/\d+)|version|byteorder|.data/serialization_id|(data\.pkl))$")

# The globals the web UI's restricted unpickler allows (module.name).
WEBUI_ALLOWED_GLOBALS = frozenset(
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_device_tensor_from_numpy",
        *(f"torch.{k}Storage" for k in ("Float", "Half", "Int", "Long", "Double", "Byte", "BFloat16")),
        "torch.float32",
        "torch.nn.modules.container.ParameterDict",
        "numpy.core.multiarray.scalar",
        "numpy.core.multiarray._reconstruct",
        "numpy.dtype",
        "numpy.ndarray",
        "_codecs.encode",
        "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
        "pytorch_lightning.callbacks.model_checkpoint",
        "__builtin__.set",
    }
)

_ALIGN = 64
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _aligned_info(name: str, offset: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    header = 30 + len(name.encode("utf-8"))
    pad = (-(offset + header)) % _ALIGN
    if pad:
        if pad < 4:  # an extra field needs at least its 4-byte id + length
            pad += _ALIGN
        # same padding record torch uses: id "FB", length, filler
        info.extra = b"FB" + struct.pack("<H", pad - 4) + b"Z" * (pad - 4)
    return info


def torch_save_bytes(obj: object, archive_name: str = "archive") -> bytes:
    """``torch.save(obj)`` as bytes in the container layout torch 2.1 (the web UI's pin) writes."""
    raw = io.BytesIO()
    torch.save(obj, raw, pickle_protocol=2)
    raw.seek(0)
    out = io.BytesIO()
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            _, _, rest = info.filename.partition("/")
            name = f"{archive_name}/{rest}"
            if not WEBUI_MEMBER_RE.match(name):
                continue  # .format_version, .storage_alignment and anything newer
            dst.writestr(_aligned_info(name, out.tell()), src.read(info))
    return out.getvalue()


def pickle_globals(data: bytes, max_pickles: int = 1) -> list[str]:
    """The ``module.name`` globals referenced by the pickle(s) at the start of ``data``.

    Disassembles only (never unpickles).  ``max_pickles`` consecutive pickles are scanned (the
    legacy torch format stores five).  Raises ValueError on malformed pickle data.
    """
    found: list[str] = []
    stream = io.BytesIO(data)
    for _ in range(max_pickles):
        if stream.tell() >= len(data):
            break
        memo: dict[int, object] = {}
        recent: list[object] = []
        for op, arg, _pos in pickletools.genops(stream):
            if op.name in ("GLOBAL", "INST"):
                module, _, name = str(arg).partition(" ")
                found.append(f"{module}.{name}")
            elif op.name == "STACK_GLOBAL":
                module, name = (recent[-2], recent[-1]) if len(recent) >= 2 else ("?", "?")
                found.append(f"{module}.{name}")
            elif "UNICODE" in op.name or op.name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
                recent.append(arg)
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and recent:
                memo[int(arg)] = recent[-1]
            elif op.name == "MEMOIZE" and recent:
                memo[len(memo)] = recent[-1]
            elif op.name in ("BINGET", "LONG_BINGET", "GET"):
                recent.append(memo.get(int(arg), "?"))
            if op.name == "STOP":
                break
    return found


def webui_load_problems(data: bytes) -> list[str]:
    """Why the web UI 1.10 safety check would refuse this ``.pt``/``.bin`` (empty list: it passes)."""
    problems: list[str] = []
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                names = z.namelist()
                bad = [n for n in names if not WEBUI_MEMBER_RE.match(n)]
                if bad:
                    problems.append(
                        f"zip members {bad} are not allowed by the web UI's safety check "
                        "(written by torch >= 2.7); re-save with `python -m extension convert`"
                    )
                pkls = [n for n in names if n.endswith("/data.pkl")]
                if len(pkls) != 1:
                    problems.append(f"expected exactly one data.pkl, found {len(pkls)}")
                    return problems
                globals_ = pickle_globals(z.read(pkls[0]))
        except Exception as exc:  # any damage in the container or the pickle
            return [*problems, f"unreadable zip container ({type(exc).__name__}: {exc})"]
    else:
        try:
            globals_ = pickle_globals(data, max_pickles=5)
        except Exception as exc:  # malformed pickle stream of any kind
            return [f"unreadable pickle ({type(exc).__name__}: {exc})"]
    forbidden = sorted({g for g in globals_ if g not in WEBUI_ALLOWED_GLOBALS})
    if forbidden:
        problems.append(f"pickle uses globals the web UI forbids: {', '.join(forbidden)}")
    return problems
