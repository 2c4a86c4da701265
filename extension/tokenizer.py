"""The CLIP BPE tokenizer, available offline.

The merges come from open_clip's package folder (``bpe_simple_vocab_16e6.txt.gz``), located without
importing open_clip (its import pulls in torchvision). From them we write the ``vocab.json`` and
``merges.txt`` that ``transformers.CLIPTokenizer`` reads, into a cache folder keyed by the merges
file's hash, and let transformers do the BPE: that is the tokenizer the web UI itself uses for SD1.

Text clean-up follows the web UI's tokenizers: ``ftfy.fix_text`` first (transformers' slow CLIP
tokenizer does it itself; for the fast one we do it here), and for the OpenCLIP variant (SD2, SDXL
CLIP-G, where the web UI uses open_clip's tokenizer) also a double HTML unescape.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import html
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .prompt.chunking import CLIP_SPECIAL, OPENCLIP_SPECIAL, SpecialTokens

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
MERGE_COUNT = 49152 - 256 - 2  # the merge lines CLIP uses, after the header line
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"


def vocab_path() -> Path:
    """The CLIP merges file shipped with open_clip (found without importing open_clip)."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / VOCAB_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the CLIP vocabulary {VOCAB_FILE} was not found: open_clip is not installed"
        + (f" or lacks the file (looked in {', '.join(folders)})" if folders else "")
        + "; fix: pip install open_clip_torch"
    )


def byte_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table (the first 256 vocabulary entries)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)  # unprintable bytes move past Latin-1
            extra += 1
    return table


def read_merges(path: Path) -> list[str]:
    """The merge lines ("a b") CLIP uses from the gzipped merges file."""
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : MERGE_COUNT + 1]
    if len(merges) != MERGE_COUNT or any(len(m.split(" ")) != 2 for m in merges):
        raise ValueError(f"{path} is not a CLIP merges file; reinstall open_clip_torch")
    return merges


def build_vocab(merges: Sequence[str]) -> dict[str, int]:
    """Token -> id, built the way CLIP does: bytes, bytes + ``</w>``, one per merge, then specials."""
    chars = list(byte_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in merges]
    tokens += [START_TOKEN, END_TOKEN]
    return {token: i for i, token in enumerate(tokens)}


def _cache_root() -> Path:
    env = os.environ.get("TI_TRAINER_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ti-trainer"


def _write_tokenizer_files(folder: Path, merges: Sequence[str]) -> None:
    (folder / "vocab.json").write_text(json.dumps(build_vocab(merges), ensure_ascii=False), "utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")


def tokenizer_files(path: Path | None = None) -> Path:
    """A folder holding ``vocab.json`` and ``merges.txt`` for ``path`` (written once, atomically)."""
    path = path or vocab_path()
    key = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    roots = [
        _cache_root(),
        Path(tempfile.gettempdir()) / f"ti-trainer-{os.getuid() if hasattr(os, 'getuid') else 0}",
    ]
    last_error: OSError | None = None
    for root in roots:
        folder = root / f"clip-bpe-{key}"
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            return folder
        try:
            root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".clip-bpe-", dir=root))
            try:
                _write_tokenizer_files(staging, read_merges(path))
                os.replace(staging, folder)
            except OSError:
                if not (folder / "vocab.json").is_file():  # not just another process winning the race
                    raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return folder
        except OSError as exc:
            last_error = exc
    raise OSError(
        f"cannot write the CLIP tokenizer files to {roots[0]}; set TI_TRAINER_CACHE to a writable folder"
    ) from last_error


class ClipBPE:
    """The CLIP BPE tokenizer (via ``transformers.CLIPTokenizer``) plus the ids the chunker needs."""

    def __init__(self, folder: Path, special: SpecialTokens = CLIP_SPECIAL, *, html_unescape: bool = False):
        try:
            from transformers import CLIPTokenizer
        except ImportError as exc:
            raise ImportError("the CLIP tokenizer needs transformers; fix: pip install transformers") from exc
        self._tok = CLIPTokenizer.from_pretrained(str(folder))
        self.special = special
        self.html_unescape = html_unescape
        self._fix_text = None
        if getattr(self._tok, "is_fast", False):
            try:
                from ftfy import fix_text
            except ImportError:  # without ftfy, the slow tokenizer of the web UI skips it too
                fix_text = None
            self._fix_text = fix_text
        checks = {START_TOKEN: special.start, END_TOKEN: special.end, ",</w>": special.comma}
        vocab = self._tok.get_vocab()
        wrong = {t: vocab.get(t) for t, i in checks.items() if vocab.get(t) != i}
        if wrong:
            raise ValueError(f"CLIP vocabulary in {folder} has unexpected ids {wrong}; delete that folder")

    @property
    def vocab_size(self) -> int:
        return len(self._tok.get_vocab())

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of every text: no start/end tokens, no truncation (the chunker's ``Tokenize``)."""
        if not texts:
            return []
        texts = [self._clean(text) for text in texts]
        return [
            list(ids) for ids in self._tok(texts, truncation=False, add_special_tokens=False)["input_ids"]
        ]

    def _clean(self, text: str) -> str:
        if self._fix_text is not None:
            text = self._fix_text(text)
        if self.html_unescape:
            text = html.unescape(html.unescape(text))
        return text

    __call__ = encode_batch

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` (word ends become spaces; special tokens are kept)."""
        return self._tok.decode([int(i) for i in ids])

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """The vocabulary entry of every id, e.g. ``'photo</w>'``."""
        return list(self._tok.convert_ids_to_tokens([int(i) for i in ids]))

    def with_special(self, special: SpecialTokens, *, html_unescape: bool | None = None) -> ClipBPE:
        """The same tokenizer with other special ids (e.g. :data:`OPENCLIP_SPECIAL`)."""
        clone = object.__new__(ClipBPE)
        clone.__dict__.update(self.__dict__)
        clone.special = special
        if html_unescape is not None:
            clone.html_unescape = html_unescape
        return clone


@functools.lru_cache(maxsize=1)
def clip_tokenizer() -> ClipBPE:
    """The shared CLIP-L tokenizer (SD1 / SDXL CLIP-L: pad = END)."""
    return ClipBPE(tokenizer_files())


def open_clip_special() -> SpecialTokens:
    """Special ids for the OpenCLIP encoders (SD2, SDXL CLIP-G): pad 0 after the first END."""
    return OPENCLIP_SPECIAL


def open_clip_tokenizer() -> ClipBPE:
    """The tokenizer of the OpenCLIP encoders: pad 0, and HTML entities unescaped like open_clip."""
    return clip_tokenizer().with_special(OPENCLIP_SPECIAL, html_unescape=True)
