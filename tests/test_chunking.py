"""Chunk packing (spec §5, §6) with a fake one-token-per-word tokenizer."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extension.prompt.chunking import (
    CHUNK_LENGTH,
    OPENCLIP_SPECIAL,
    Chunk,
    PromptChunks,
    SpecialTokens,
    apply_padding,
    chunk_batch,
    chunk_prompt,
    chunk_segments,
    empty_chunk,
)

SP = SpecialTokens()
START, END, COMMA = SP.start, SP.end, SP.comma


class FakeTokenizer:
    """One token per word; ``,`` is its own token (id 267); ``wN`` is id 1000+N; others get new ids."""

    def __init__(self):
        self.ids: dict[str, int] = {",": COMMA}
        self.calls: list[list[str]] = []

    def id(self, word: str) -> int:
        m = re.fullmatch(r"w(\d+)", word)
        if m:
            return 1000 + int(m.group(1))
        return self.ids.setdefault(word, 100 + len(self.ids))

    def __call__(self, texts: list[str]) -> list[list[int]]:
        self.calls.append(list(texts))
        return [[self.id(w) for w in re.findall(r"[^\s,]+|,", text)] for text in texts]


def words(a: int, b: int) -> str:
    return " ".join(f"w{i}" for i in range(a, b))


def ids(a: int, b: int) -> list[int]:
    return [1000 + i for i in range(a, b)]


def body(chunk: Chunk) -> list[int]:
    """The 75 (or more) tokens between START and END."""
    assert chunk.tokens[0] == START and chunk.tokens[-1] == END
    return chunk.tokens[1:-1]


def content(chunk: Chunk) -> list[int]:
    """The body without the trailing END padding."""
    b = body(chunk)
    while b and b[-1] == END:
        b.pop()
    return b


def one(text: str, **kw) -> PromptChunks:
    tok = FakeTokenizer()
    return chunk_segments([(text, 1.0)], tok, SP, **kw)


# ---- the worked example of §5.2 -------------------------------------------------------------------

WORKED = f"{words(0, 60)}, {words(100, 130)}"


@pytest.mark.parametrize(
    ("backtrack", "first", "second", "count"),
    [
        (20, [*ids(0, 60), COMMA], ids(100, 130), 105),
        (15, [*ids(0, 60), COMMA], ids(100, 130), 105),  # 75 - 60 = 15 <= 15: still moves
        (14, [*ids(0, 60), COMMA, *ids(100, 114)], ids(114, 130), 91),
        (5, [*ids(0, 60), COMMA, *ids(100, 114)], ids(114, 130), 91),
        (0, [*ids(0, 60), COMMA, *ids(100, 114)], ids(114, 130), 91),
    ],
)
def test_worked_example(backtrack, first, second, count):
    res = one(WORKED, comma_backtrack=backtrack)
    assert [content(c) for c in res.chunks] == [first, second]
    assert all(len(c.tokens) == 77 and len(c.multipliers) == 77 for c in res.chunks)
    assert res.token_count == count
    assert res.target_token_count == 150


def test_backtrack_needs_a_full_chunk_and_a_non_comma_next_token():
    # the chunk is exactly full when the next token is a comma: no backtrack, the comma opens chunk 2
    text = f"{words(0, 60)}, {words(100, 114)}, {words(200, 210)}"
    res = one(text)
    assert content(res.chunks[0]) == [*ids(0, 60), COMMA, *ids(100, 114)]
    assert content(res.chunks[1]) == [COMMA, *ids(200, 210)]
    assert res.token_count == 75 + 11


def test_short_prompt_weights_and_layout():
    tok = FakeTokenizer()
    res = chunk_segments([("a b", 1.0), ("c", 1.5), ("d", 0.5)], tok, SP)
    (chunk,) = res.chunks
    assert chunk.tokens[:5] == [START, tok.id("a"), tok.id("b"), tok.id("c"), tok.id("d")]
    assert chunk.tokens[5:] == [END] * 72
    assert chunk.multipliers[:5] == [1.0, 1.0, 1.0, 1.5, 0.5]
    assert chunk.multipliers[5:] == [1.0] * 72
    assert res.token_count == 4 and res.target_token_count == 75


def test_exactly_75_tokens_is_one_chunk_76_is_two():
    assert len(one(words(0, 75)).chunks) == 1
    assert one(words(0, 75)).token_count == 75
    res = one(words(0, 76))
    assert [content(c) for c in res.chunks] == [ids(0, 75), ids(75, 76)]
    assert res.token_count == 76 and res.target_token_count == 150


def test_empty_prompt():
    for segments in ([("", 1.0)], []):
        res = chunk_segments(segments, FakeTokenizer(), SP)
        assert [c.tokens for c in res.chunks] == [[START] + [END] * 76]
        assert res.chunks[0].multipliers == [1.0] * 77
        assert res.token_count == 0 and res.target_token_count == 75


# ---- BREAK ---------------------------------------------------------------------------------------

B = ("BREAK", -1)


@pytest.mark.parametrize(
    ("segments", "contents", "count"),
    [
        ([("a", 1.0), B, ("b", 1.0)], [["a"], ["b"]], 76),
        ([("", 1.0), B, ("", 1.0)], [[]], 75),  # "BREAK" alone: one padding chunk, counted as 75
        ([("", 1.0), B, ("a", 1.0)], [[], ["a"]], 76),  # "BREAK a": an all-padding chunk first
        ([("a", 1.0), B, ("", 1.0), B, ("b", 1.0)], [["a"], [], ["b"]], 151),
        ([("a", 1.0), B, ("", 1.0)], [["a"]], 75),  # trailing BREAK adds no empty chunk
        ([("a", 1.0), ("BREAK", -1.0), ("b", 1.0)], [["a"], ["b"]], 76),  # float -1.0 is a break too
        ([("a", 1.1), ("BREAK", -1.1), ("b", 1.1)], [["a", "BREAK", "b"]], 3),  # multiplied: a word
        ([("a", 1.0), ("BREAK", 1.0)], [["a", "BREAK"]], 2),
        ([("a BREAK b", 1.0)], [["a", "BREAK", "b"]], 3),  # only the marker segment breaks
    ],
)
def test_break(segments, contents, count):
    tok = FakeTokenizer()
    res = chunk_segments(segments, tok, SP)
    assert [content(c) for c in res.chunks] == [[tok.id(w) for w in ws] for ws in contents]
    assert res.token_count == count


def test_break_marker_is_not_tokenized_as_text_weight():
    tok = FakeTokenizer()
    res = chunk_segments([("a", 1.1), ("BREAK", -1.1), ("b", 1.1)], tok, SP)
    assert res.chunks[0].multipliers[1:4] == [1.1, -1.1, 1.1]


def test_break_after_full_chunk():
    res = chunk_segments([(words(0, 75), 1.0), B, ("w99", 1.0)], FakeTokenizer(), SP)
    # the full chunk is only closed by the next token, so BREAK closes it and adds no empty chunk
    assert [content(c) for c in res.chunks] == [ids(0, 75), ids(99, 100)]
    assert res.token_count == 76


# ---- embeddings (§6) -----------------------------------------------------------------------------


def test_embedding_placeholders_and_fix():
    tok = FakeTokenizer()
    res = chunk_segments([("a", 1.0), ("myface b", 1.3)], tok, SP, {"myface": 3})
    (chunk,) = res.chunks
    assert content(chunk) == [tok.id("a"), 0, 0, 0, tok.id("b")]
    assert chunk.multipliers[1:6] == [1.0, 1.3, 1.3, 1.3, 1.3]
    assert chunk.fixes == [(1, "myface")]
    assert res.token_count == 5


def test_embedding_never_split():
    res = one(f"{words(0, 70)} emb8 {words(100, 102)}", embeddings={"emb8": 8})
    assert [content(c) for c in res.chunks] == [ids(0, 70), [0] * 8 + ids(100, 102)]
    assert [c.fixes for c in res.chunks] == [[], [(0, "emb8")]]
    assert res.token_count == 75 + 10


def test_embedding_filling_the_chunk_exactly():
    res = one(f"{words(0, 67)} emb8", embeddings={"emb8": 8})
    assert [content(c) for c in res.chunks] == [ids(0, 67) + [0] * 8]
    assert res.chunks[0].fixes == [(67, "emb8")]


def test_multi_token_name_longest_first_and_within_segment_only():
    tok = FakeTokenizer()
    embs = {"my": 2, "my face": 4}
    res = chunk_segments([("my face my", 1.0), ("my", 1.2), ("face", 1.2)], tok, SP, embs)
    assert content(res.chunks[0]) == [0, 0, 0, 0, 0, 0, 0, 0, tok.id("face")]
    assert res.chunks[0].fixes == [(0, "my face"), (4, "my"), (6, "my")]


def test_same_ids_first_registered_wins():
    tok = FakeTokenizer()
    res = chunk_segments(
        [("face", 1.0)], lambda texts: tok([t.lower() for t in texts]), SP, {"Face": 2, "face": 5}
    )
    assert res.chunks[0].fixes == [(0, "Face")] and content(res.chunks[0]) == [0, 0]


def test_backtrack_bug_leaves_fix_behind():
    """``w0…w59, style8 w100…w119``: the placeholders move to chunk 2, the fix stays in chunk 1."""
    res = one(f"{words(0, 60)}, style8 {words(100, 120)}", embeddings={"style8": 8})
    first, second = res.chunks
    assert content(first) == [*ids(0, 60), COMMA]
    assert first.fixes == [(61, "style8")]  # now points at END padding
    assert content(second) == [0] * 8 + ids(100, 120)
    assert second.fixes == []
    assert res.token_count == 75 + 28


def test_oversize_embedding_quirk():
    res = one(f"huge {words(0, 80)}", embeddings={"huge": 80})
    first, second = res.chunks
    assert first.tokens == [START] + [END] * 76 and first.fixes == []
    assert len(second.tokens) == 162 and len(second.multipliers) == 162
    assert second.tokens == [START] + [0] * 80 + ids(0, 80) + [END]
    assert second.fixes == [(0, "huge")]
    assert res.token_count == 75 + 160


def test_bad_embedding_names():
    with pytest.raises(ValueError, match="produces no tokens"):
        one("a", embeddings={" ": 2})
    with pytest.raises(ValueError, match="at least 1"):
        one("a", embeddings={"x": 0})


# ---- supplied token ids (corpus mode), padding, batches ------------------------------------------


def test_tokenized_ids_are_used_instead_of_tokenize():
    tok = FakeTokenizer()
    emb_id = tok.id("emb")
    res = chunk_segments(
        [("anything", 1.0), ("BREAK", -1), ("x", 2.0)],
        tok,
        SP,
        {"emb": 2},
        tokenized=[[5, emb_id, 6], [], [7]],
    )
    assert [content(c) for c in res.chunks] == [[5, 0, 0, 6], [7]]
    assert res.chunks[1].multipliers[1] == 2.0
    assert tok.calls == [["emb"]]  # only the embedding name was tokenised
    with pytest.raises(ValueError, match="token lists"):
        chunk_segments([("a", 1.0)], tok, SP, tokenized=[])


def test_openclip_padding():
    tok = FakeTokenizer()
    res = chunk_segments([("a b", 1.0)], tok, OPENCLIP_SPECIAL)
    assert res.chunks[0].tokens == [START, tok.id("a"), tok.id("b"), END] + [0] * 73
    assert res.chunks[0].multipliers == [1.0] * 77
    # a literal END inside the prompt starts the padding there
    res = chunk_segments([("x", 1.0)], tok, OPENCLIP_SPECIAL, tokenized=[[5, END, 6]])
    assert res.chunks[0].tokens == [START, 5, END] + [0] * 74
    assert apply_padding([1, 2, 3], OPENCLIP_SPECIAL) == [1, 2, 3]
    assert empty_chunk(OPENCLIP_SPECIAL).tokens == [START, END] + [0] * 75


def test_chunk_batch_pads_with_empty_chunks():
    tok = FakeTokenizer()
    batch = chunk_batch(["a", words(0, 80), "a"], tok, SP, emphasis="None")
    assert [len(chunks) for chunks in batch] == [2, 2, 2]
    assert batch[0][1].tokens == [START] + [END] * 76 and batch[0][1].multipliers == [1.0] * 77
    assert batch[0][0].tokens == batch[2][0].tokens and batch[0][0] is not batch[2][0]
    assert sum(1 for call in tok.calls if call == ["a"]) == 1  # identical texts are chunked once
    assert chunk_batch([], tok, SP) == []


def test_emphasis_none_keeps_brackets_and_break_as_text():
    tok = FakeTokenizer()
    res = chunk_prompt("(a:1.5) BREAK b", tok, SP, emphasis="None")
    assert tok.calls == [["(a:1.5) BREAK b"]]
    assert len(res.chunks) == 1 and res.token_count == 3


def test_backtrack_range_checked():
    with pytest.raises(ValueError, match="comma_backtrack"):
        one("a", comma_backtrack=75)


# ---- properties ----------------------------------------------------------------------------------

EMBS = {"e1": 1, "e3": 3, "two words": 5, "e40": 40, "e75": 75}
VOCAB = ["a", "b", "c", ",", "e1", "e3", "two", "words", "e40", "e75", *(f"w{i}" for i in range(8))]

segment_st = st.tuples(
    st.lists(st.sampled_from(VOCAB), max_size=40).map(" ".join),
    st.sampled_from([1.0, 1.1, 0.5, -1.0, 2.0]),
)
segments_st = st.lists(st.one_of(segment_st, st.just(("BREAK", -1))), max_size=8)


def expected_stream(segments, tok):
    """Input tokens with embedding names replaced by their placeholders, and the embedding sizes."""
    out, sizes = [], []
    names = sorted(((tok([n])[0], v) for n, v in EMBS.items()), key=lambda x: -len(x[0]))
    for text, weight in segments:
        if text == "BREAK" and weight == -1:
            continue
        toks = tok([text])[0]
        i = 0
        while i < len(toks):
            for name_ids, vectors in names:
                if toks[i : i + len(name_ids)] == name_ids:
                    out += [0] * vectors
                    sizes.append(vectors)
                    i += len(name_ids)
                    break
            else:
                out.append(toks[i])
                i += 1
    return out, sizes


@settings(max_examples=150, deadline=None)
@given(segments=segments_st, backtrack=st.sampled_from([0, 1, 20, 74]), openclip=st.booleans())
def test_properties(segments, backtrack, openclip):
    tok = FakeTokenizer()
    special = OPENCLIP_SPECIAL if openclip else SP
    res = chunk_segments(segments, tok, special, EMBS, comma_backtrack=backtrack)
    pad = special.pad
    stream, sizes = expected_stream(segments, tok)
    got: list[int] = []
    emb_iter = iter(sizes)
    for chunk in res.chunks:
        assert len(chunk.tokens) == 77 and len(chunk.multipliers) == 77
        assert chunk.tokens[0] == START and chunk.multipliers[0] == 1.0
        end_at = chunk.tokens.index(END, 1)
        assert all(t == pad for t in chunk.tokens[end_at + 1 :])
        assert all(m == 1.0 for m in chunk.multipliers[end_at:])
        real = chunk.tokens[1:end_at]
        got += real
        # every embedding's placeholders sit whole inside one chunk
        i = 0
        while i < len(real):
            if real[i] == 0:
                n = next(emb_iter)
                assert real[i : i + n] == [0] * n
                i += n
            else:
                i += 1
        # with backtracking off, every fix points at its placeholders
        if backtrack == 0:
            for offset, name in chunk.fixes:
                assert real[offset : offset + EMBS[name]] == [0] * EMBS[name]
    assert got == stream
    assert next(emb_iter, None) is None
    assert res.token_count >= len(stream)
    assert res.target_token_count % CHUNK_LENGTH == 0 and res.target_token_count >= res.token_count


# ---- with the emphasis parser --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "contents", "weights", "count"),
    [
        ("a (b) c", [["a", "b", "c"]], [[1.0, 1.1, 1.0]], 3),
        ("a BREAK b", [["a"], ["b"]], [[1.0], [1.0]], 76),
        ("BREAK", [[]], [[]], 75),
        ("", [[]], [[]], 0),
        ("BREAK a", [[], ["a"]], [[], [1.0]], 76),
        ("a BREAK BREAK b", [["a"], [], ["b"]], [[1.0], [], [1.0]], 151),
        ("(a BREAK b)", [["a", "BREAK", "b"]], [[1.1, -1.1, 1.1]], 3),  # inside brackets: a word
        ("(a BREAK b:1)", [["a"], ["b"]], [[1.0], [1.0]], 76),
    ],
)
def test_chunk_prompt_with_emphasis(prompt, contents, weights, count):
    tok = FakeTokenizer()
    res = chunk_prompt(prompt, tok, SP)
    assert [content(c) for c in res.chunks] == [[tok.id(w) for w in ws] for ws in contents]
    assert [c.multipliers[1 : 1 + len(ws)] for c, ws in zip(res.chunks, weights)] == weights
    assert res.token_count == count


@pytest.mark.parametrize("mode", ["Original", "No norm", "Ignore"])
def test_every_parsing_mode_honours_break(mode):
    assert len(chunk_prompt("a BREAK b", FakeTokenizer(), SP, emphasis=mode).chunks) == 2


def test_embedding_inside_brackets_takes_the_weight():
    tok = FakeTokenizer()
    res = chunk_prompt("x (emb:1.5) y", tok, SP, {"emb": 2})
    assert content(res.chunks[0]) == [tok.id("x"), 0, 0, tok.id("y")]
    assert res.chunks[0].multipliers[1:5] == [1.0, 1.5, 1.5, 1.0]
