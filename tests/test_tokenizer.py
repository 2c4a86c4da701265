"""The real CLIP BPE tokenizer built from open_clip's merges file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extension import tokenizer as tk
from extension.prompt.chunking import OPENCLIP_SPECIAL, SpecialTokens, chunk_segments


@pytest.fixture(scope="module")
def clip():
    return tk.clip_tokenizer()


def _open_clip_simple_tokenizer():
    """open_clip's own tokenizer module, loaded alone (``import open_clip`` fails on this machine)."""
    spec = importlib.util.find_spec("open_clip")
    path = Path(spec.submodule_search_locations[0]) / "tokenizer.py"
    mod_spec = importlib.util.spec_from_file_location("_open_clip_tokenizer_alone", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.SimpleTokenizer()


def test_vocab_layout():
    merges = tk.read_merges(tk.vocab_path())
    vocab = tk.build_vocab(merges)
    assert len(vocab) == 49408
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert vocab[",</w>"] == 267
    assert vocab[tk.START_TOKEN] == 49406 and vocab[tk.END_TOKEN] == 49407
    assert vocab["in"] == 512  # the first merge line is "i n"
    assert len(set(tk.byte_to_unicode().values())) == 256


def test_special_ids(clip):
    assert clip.special == SpecialTokens(49406, 49407, 49407, 267)
    assert tk.open_clip_special() == OPENCLIP_SPECIAL and OPENCLIP_SPECIAL.pad == 0
    assert clip.vocab_size == 49408
    assert tk.clip_tokenizer() is clip  # cached


def test_real_text(clip):
    assert clip.encode_batch([","]) == [[267]]
    ids = clip.encode("a photo of a cat")
    assert ids == [320, 1125, 539, 320, 2368]
    assert clip.decode(ids) == "a photo of a cat"
    assert clip.encode("A PHOTO of a Cat") == ids  # lower-cased
    assert clip.encode("a   photo\nof a cat") == ids  # whitespace collapsed
    assert clip.encode_batch([]) == [] and clip.encode_batch([""]) == [[]]
    assert clip.token_strings([1125, 267]) == ["photo</w>", ",</w>"]


def test_no_truncation(clip):
    ids = clip.encode(" ".join(["cat"] * 200))
    assert ids == [2368] * 200


def test_segments_tokenize_separately(clip):
    whole = clip.encode("beautiful")
    split = clip.encode_batch(["beauti", "ful"])
    assert whole == [1215]
    assert split == [[1016, 2605], [857]]
    assert split[0] + split[1] != whole


def test_embedding_name_with_several_ids_is_matched(clip):
    name = "myface"
    name_ids = clip.encode(name)
    assert len(name_ids) == 2
    res = chunk_segments(
        [("a photo of ", 1.0), ("MyFace", 1.2), (", smiling", 1.0)],
        clip.encode_batch,
        clip.special,
        {name: 4},
    )
    (chunk,) = res.chunks
    assert chunk.tokens[:11] == [49406, 320, 1125, 539, 0, 0, 0, 0, 267, 9200, 49407]
    assert chunk.multipliers[4:8] == [1.2] * 4
    assert chunk.fixes == [(3, name)]
    # split by brackets, the name's tokens differ, so it is not found
    res = chunk_segments([("my", 1.0), ("face", 1.1)], clip.encode_batch, clip.special, {name: 4})
    assert res.chunks[0].fixes == []


def test_literal_end_token_and_openclip_variant(clip):
    assert clip.encode("a <|endoftext|> b") == [320, 49407, 321]
    oc = tk.open_clip_tokenizer()
    assert oc.special.pad == 0 and clip.special.pad == 49407
    assert oc.encode("fish &amp; chips") == clip.encode("fish & chips")


def test_matches_open_clip_simple_tokenizer():
    simple = _open_clip_simple_tokenizer()
    oc = tk.open_clip_tokenizer()
    texts = [
        "a (masterpiece:1.2), best quality, 8k uhd",
        "it's don't we'll they've",
        "naïve résumé 東京 😀 emoji",
        "ＡＢＣ full width",
        "a\tb\nc  d",
        "x_y-z/1.5 #tag @user",
        "&amp;amp; <b>&lt;</b>",
    ]
    assert oc.encode_batch(texts) == [simple.encode(t) for t in texts]


@settings(max_examples=60, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("abcxyz ,.!?()[]:0123456789éü東😀'\"-_&;<>\u00a0ＡÃ©")), max_size=30
    )
)
def test_matches_open_clip_on_random_text(text):
    assert tk.open_clip_tokenizer().encode(text) == _SIMPLE.encode(text)


_SIMPLE = _open_clip_simple_tokenizer()


def test_cache_folder_written_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TI_TRAINER_CACHE", str(tmp_path))
    folder = tk.tokenizer_files()
    assert folder.parent == tmp_path and folder.name.startswith("clip-bpe-")
    vocab = json.loads((folder / "vocab.json").read_text("utf-8"))
    assert vocab[",</w>"] == 267 and len(vocab) == 49408
    merges = (folder / "merges.txt").read_text("utf-8").splitlines()
    assert merges[0].startswith("#version") and merges[1] == "i n" and len(merges) == 1 + tk.MERGE_COUNT
    stamp = (folder / "vocab.json").stat().st_mtime_ns
    assert tk.tokenizer_files() == folder
    assert (folder / "vocab.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no staging folders left


def test_missing_open_clip_names_the_fix(monkeypatch):
    monkeypatch.setattr(tk.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install open_clip_torch"):
        tk.vocab_path()


def test_not_a_merges_file(tmp_path):
    import gzip

    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(gzip.compress(b"header\nnot a merges file\n"))
    with pytest.raises(ValueError, match="not a CLIP merges file"):
        tk.read_merges(bad)
