"""The per-backend prompt chunk cache: same chunks as uncached, each distinct prompt tokenised once."""

from __future__ import annotations

from extension.backends.text_encoder import ChunkCache, EncoderSpec, TextOptions, chunk_prompts
from extension.prompt.chunking import CLIP_SPECIAL
from extension.tokenizer import clip_tokenizer


def _spec(tokenize) -> EncoderSpec:
    return EncoderSpec("clip_l", None, tokenize, CLIP_SPECIAL, 1, True)


def test_cached_chunks_equal_uncached_and_tokenise_once() -> None:
    tok = clip_tokenizer()
    calls: list[list[str]] = []

    def counting(texts: list[str]) -> list[list[int]]:
        calls.append(list(texts))
        return tok.encode_batch(texts)

    spec = _spec(counting)
    prompts = ["a photo of me", "a (photo:1.3) of me, " * 10 + "BREAK end", "a photo of me"]
    sizes = {"me": 2}
    options = TextOptions()
    plain = chunk_prompts(spec, prompts, sizes, options)
    cache = ChunkCache()
    calls.clear()
    first = chunk_prompts(spec, prompts, sizes, options, cache)
    n_first = len(calls)
    second = chunk_prompts(spec, prompts, sizes, options, cache)
    assert first == plain and second == plain
    assert n_first > 0 and len(calls) == n_first  # the second batch tokenised nothing
    # padding a batch to equal chunk counts must not leak into the cached entries
    assert len(chunk_prompts(spec, ["a photo of me"], sizes, options, cache)[0]) == 1


def test_cache_key_includes_what_changes_chunks() -> None:
    tok = clip_tokenizer()
    spec = _spec(tok.encode_batch)
    cache = ChunkCache(max_entries=2)
    a = chunk_prompts(spec, ["me, me"], {"me": 1}, TextOptions(), cache)
    b = chunk_prompts(spec, ["me, me"], {"me": 3}, TextOptions(), cache)
    c = chunk_prompts(spec, ["(me:2)"], {"me": 1}, TextOptions(emphasis="None"), cache)
    assert a[0][0].fixes != b[0][0].fixes
    assert c == chunk_prompts(spec, ["(me:2)"], {"me": 1}, TextOptions(emphasis="None"))
    assert len(cache._entries) == 2  # bounded
