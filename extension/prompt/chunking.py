"""Pack tokenised prompt segments into 77-token chunks exactly like the web UI (spec §5, §6).

Pure Python: the tokenizer is passed in as a callable, so the same code serves CLIP-L, OpenCLIP and
the fake one-token-per-word tokenizers of the tests. Both web UI quirks of §6 (over-long embedding
chunks, comma backtracking that leaves an embedding's fix behind) are reproduced on purpose: the
goal is that an embedding trained here sees the same conditioning it will see in the web UI.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

CHUNK_LENGTH = 75  # body tokens per chunk; START and END make it 77

Tokenize = Callable[[list[str]], list[list[int]]]  # texts -> ids; no special tokens, no truncation

EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")


@dataclass(frozen=True)
class SpecialTokens:
    """Special token ids of one text encoder. ``pad != end`` means OpenCLIP padding (§5.4)."""

    start: int = 49406
    end: int = 49407
    pad: int = 49407
    comma: int = 267


CLIP_SPECIAL = SpecialTokens()  # SD1, SDXL CLIP-L
OPENCLIP_SPECIAL = SpecialTokens(pad=0)  # SD2, SDXL CLIP-G


@dataclass
class Chunk:
    """One encoder row: ``tokens``/``multipliers`` are 77 long (START, 75 body, END).

    ``fixes`` are ``(offset inside the 75-token body, embedding name)``: where the embedding's
    vectors replace the placeholder token embeddings at encode time (row ``offset + 1`` onward).
    """

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class PromptChunks:
    """The chunks of one prompt and the web UI's token count for it."""

    chunks: list[Chunk]
    token_count: int

    @property
    def target_token_count(self) -> int:
        """The "of N" number the web UI shows next to the token counter."""
        return math.ceil(max(self.token_count, 1) / CHUNK_LENGTH) * CHUNK_LENGTH


class _EmbeddingIndex:
    """Embedding names registered by their token ids, looked up like the web UI's database (§6)."""

    def __init__(self, embeddings: Mapping[str, int], tokenize: Tokenize):
        self.by_first: dict[int, list[tuple[list[int], str, int]]] = {}
        names = list(embeddings)
        if not names:
            return
        for name, ids in zip(names, tokenize(names)):
            vectors = int(embeddings[name])
            if not ids:
                raise ValueError(f"embedding name {name!r} produces no tokens; rename the embedding")
            if vectors < 1:
                raise ValueError(f"embedding {name!r} has {vectors} vectors; it needs at least 1")
            entries = self.by_first.setdefault(ids[0], [])
            entries.append((list(ids), name, vectors))
            # stable sort: among equally long names the first registered wins
            entries.sort(key=lambda entry: len(entry[0]), reverse=True)

    def at(self, tokens: Sequence[int], position: int) -> tuple[str, int, int] | None:
        """``(name, vectors, name length in tokens)`` of the embedding starting at ``position``."""
        for ids, name, vectors in self.by_first.get(tokens[position], ()):
            if list(tokens[position : position + len(ids)]) == ids:
                return name, vectors, len(ids)
        return None


class _Packer:
    def __init__(self, special: SpecialTokens, comma_backtrack: int):
        self.special = special
        self.backtrack = comma_backtrack
        self.chunks: list[Chunk] = []
        self.current = Chunk()
        self.token_count = 0
        self.last_comma = -1

    def close(self, is_last: bool = False) -> None:
        cur = self.current
        # the web UI counts a full 75 for every chunk but the last, however short it is
        self.token_count += len(cur.tokens) if is_last else CHUNK_LENGTH
        missing = CHUNK_LENGTH - len(cur.tokens)
        if missing > 0:  # an over-long chunk (oversize embedding) is left as it is
            cur.tokens += [self.special.end] * missing
            cur.multipliers += [1.0] * missing
        cur.tokens = [self.special.start, *cur.tokens, self.special.end]
        cur.multipliers = [1.0, *cur.multipliers, 1.0]
        self.chunks.append(cur)
        self.current = Chunk()
        self.last_comma = -1

    def add_segment(self, tokens: Sequence[int], weight: float, index: _EmbeddingIndex) -> None:
        position = 0
        while position < len(tokens):
            token = tokens[position]
            cur = self.current
            if token == self.special.comma:
                self.last_comma = len(cur.tokens)
            elif (
                self.backtrack != 0
                and len(cur.tokens) == CHUNK_LENGTH
                and self.last_comma != -1
                and CHUNK_LENGTH - self.last_comma <= self.backtrack
            ):
                cut = self.last_comma + 1
                moved_tokens, moved_mults = cur.tokens[cut:], cur.multipliers[cut:]
                del cur.tokens[cut:], cur.multipliers[cut:]
                self.close()  # the fixes stay with the closed chunk: the web UI's bug, kept (§6)
                self.current.tokens, self.current.multipliers = moved_tokens, moved_mults
            if len(self.current.tokens) == CHUNK_LENGTH:
                self.close()

            found = index.at(tokens, position)
            if found is None:
                self.current.tokens.append(token)
                self.current.multipliers.append(weight)
                position += 1
                continue
            name, vectors, name_length = found
            if len(self.current.tokens) + vectors > CHUNK_LENGTH:
                self.close()
            cur = self.current
            cur.fixes.append((len(cur.tokens), name))
            cur.tokens += [0] * vectors
            cur.multipliers += [weight] * vectors
            position += name_length

    def finish(self) -> PromptChunks:
        if self.current.tokens or not self.chunks:
            self.close(is_last=True)
        for chunk in self.chunks:
            apply_padding(chunk.tokens, self.special)
        return PromptChunks(self.chunks, self.token_count)


def apply_padding(tokens: list[int], special: SpecialTokens) -> list[int]:
    """OpenCLIP padding (§5.4), in place: every token after the first END becomes ``special.pad``."""
    if special.pad != special.end and special.end in tokens:
        first_end = tokens.index(special.end)
        tokens[first_end + 1 :] = [special.pad] * (len(tokens) - first_end - 1)
    return tokens


def is_break(text: str, weight: float) -> bool:
    """Whether a parsed segment is a ``BREAK`` marker (only an unmultiplied one is, §2.3)."""
    return text == "BREAK" and weight == -1


def chunk_segments(
    segments: Sequence[tuple[str, float]],
    tokenize: Tokenize,
    special: SpecialTokens = CLIP_SPECIAL,
    embeddings: Mapping[str, int] | None = None,
    *,
    comma_backtrack: int = 20,
    tokenized: Sequence[Sequence[int]] | None = None,
) -> PromptChunks:
    """Pack ``(text, weight)`` segments into chunks (the web UI's ``tokenize_line``).

    ``embeddings`` maps embedding name -> number of vectors; names are tokenised with ``tokenize``.
    ``comma_backtrack`` is the "Prompt word wrap length limit" (0 turns it off). ``tokenized``
    supplies the token ids of every segment instead of calling ``tokenize`` on the texts.
    """
    if not 0 <= comma_backtrack < CHUNK_LENGTH:
        raise ValueError(f"comma_backtrack must be in 0..{CHUNK_LENGTH - 1}, got {comma_backtrack}")
    texts = [text for text, _ in segments]
    if tokenized is None:
        tokenized = tokenize(texts) if texts else []
    if len(tokenized) != len(segments):
        raise ValueError(f"got {len(tokenized)} token lists for {len(segments)} segments")
    index = _EmbeddingIndex(embeddings or {}, tokenize)
    packer = _Packer(special, comma_backtrack)
    for (text, weight), tokens in zip(segments, tokenized):
        if is_break(text, weight):
            packer.close()
            continue
        packer.add_segment(list(tokens), float(weight), index)
    return packer.finish()


def parse_segments(text: str, emphasis: str = "Original") -> list[tuple[str, float]]:
    """The segments the web UI tokenises: the emphasis parse, or the whole line for mode "None"."""
    if emphasis == "None":
        return [(text, 1.0)]
    from .emphasis import parse_emphasis

    return parse_emphasis(text)


def chunk_prompt(
    text: str,
    tokenize: Tokenize,
    special: SpecialTokens = CLIP_SPECIAL,
    embeddings: Mapping[str, int] | None = None,
    *,
    comma_backtrack: int = 20,
    emphasis: str = "Original",
) -> PromptChunks:
    """Parse one prompt line (emphasis + ``BREAK``) and pack it into chunks."""
    return chunk_segments(
        parse_segments(text, emphasis), tokenize, special, embeddings, comma_backtrack=comma_backtrack
    )


def empty_chunk(special: SpecialTokens = CLIP_SPECIAL) -> Chunk:
    """The filler chunk of a shorter prompt in a batch: START then 76 END (or END + pad)."""
    tokens = apply_padding([special.start] + [special.end] * (CHUNK_LENGTH + 1), special)
    return Chunk(tokens, [1.0] * (CHUNK_LENGTH + 2), [])


def chunk_batch(
    texts: Sequence[str],
    tokenize: Tokenize,
    special: SpecialTokens = CLIP_SPECIAL,
    embeddings: Mapping[str, int] | None = None,
    *,
    comma_backtrack: int = 20,
    emphasis: str = "Original",
) -> list[list[Chunk]]:
    """Chunk every text; shorter ones are filled up with empty chunks to the longest's count (§5.3)."""
    cache: dict[str, PromptChunks] = {}
    per_text: list[list[Chunk]] = []
    for text in texts:
        if text not in cache:
            cache[text] = chunk_prompt(
                text, tokenize, special, embeddings, comma_backtrack=comma_backtrack, emphasis=emphasis
            )
        per_text.append(
            [Chunk(list(c.tokens), list(c.multipliers), list(c.fixes)) for c in cache[text].chunks]
        )
    longest = max((len(chunks) for chunks in per_text), default=0)
    for chunks in per_text:
        chunks.extend(empty_chunk(special) for _ in range(longest - len(chunks)))
    return per_text
