"""The sd-ti-embedding JSON text: byte-compatible encoding, bounded decoding."""

from __future__ import annotations

import base64
import hashlib
import json
import math

import pytest
import torch
from embedding_helpers import REF, sidecar
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from extension.embedding import EmbeddingFormatError
from extension.png import decode_payload, encode_payload
from extension.png.payload_json import MAX_DEPTH


def _reference_json(name: str) -> bytes:
    with Image.open(REF / name) as im:
        return base64.b64decode(im.text["sd-ti-embedding"])


@pytest.mark.parametrize("name", ["sd15-4v.text.png", "sdxl-2v.text.png", "a1111-test_embedding.png"])
def test_reencoding_the_reference_payload_is_byte_identical(name):
    raw = _reference_json(name)
    payload = decode_payload(raw)
    assert encode_payload(payload) == raw
    want = sidecar(REF / name).get("payload_json_sha256")
    if want:
        assert hashlib.sha256(raw).hexdigest() == want


def test_float32_tensor_encodes_like_the_webui():
    # float32 payload tensors (what the web UI holds) give the same bytes as the decoded float64 ones
    payload = decode_payload(_reference_json("sd15-4v.text.png"))
    payload["string_to_param"]["*"] = payload["string_to_param"]["*"].float()
    assert encode_payload(payload) == _reference_json("sd15-4v.text.png")


def test_number_and_string_formatting():
    # json.dumps escapes 0x7F as \u007f (the spec's note says it is not escaped; the web UI uses json.dumps)
    t = torch.tensor([0.0001, 1e-05, 16777216.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e16])
    text = encode_payload({"name": 'é"\n/\x7f😀', "t": t, "n": None, "i": 265})
    assert text == (
        b'{"name": "\\u00e9\\"\\n/\\u007f\\ud83d\\ude00", "t": {"TORCHTENSOR": [9.999999747378752e-05, '
        b"9.999999747378752e-06, 16777216.0, -0.0, NaN, Infinity, -Infinity, 1.0000000272564224e+16]}, "
        b'"n": null, "i": 265}'
    )
    back = decode_payload(text)
    assert back["name"] == 'é"\n/\x7f😀' and back["t"].dtype == torch.float64
    assert math.isnan(back["t"][4]) and back["t"][5] == math.inf


def test_decoding_types_like_the_webui():
    assert decode_payload(b'{"TORCHTENSOR": [[1, 2]]}').dtype == torch.int64
    assert decode_payload(b'{"TORCHTENSOR": [[1, 2.5]]}').dtype == torch.float64
    assert decode_payload(b'{"TORCHTENSOR": 3.0}').shape == ()


@pytest.mark.parametrize(
    "text",
    [
        b"{",
        b'{"a": }',
        b"\xff\xfe\x00",
        b'{"TORCHTENSOR": [[1, 2], [3]]}',
        b'{"TORCHTENSOR": ["a"]}',
        b'{"TORCHTENSOR": [1e999999999999]}' + b"x",
        b'{"TORCHTENSOR": [100000000000000000000000000000000]}',
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
        b"[" * 100000,
    ],
)
def test_malformed_json_is_a_format_error(text):
    with pytest.raises(EmbeddingFormatError):
        decode_payload(text)


def test_size_limit(monkeypatch):
    monkeypatch.setattr("extension.png.payload_json.MAX_JSON_BYTES", 100)
    with pytest.raises(EmbeddingFormatError, match="larger than"):
        decode_payload(b'{"a": "' + b"x" * 200 + b'"}')


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(),
    values=st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=20),
    step=st.one_of(st.none(), st.integers(-(2**40), 2**40)),
)
def test_encoding_matches_json_dumps_and_round_trips(name, values, step):
    t = torch.tensor([values], dtype=torch.float32)
    payload = {"name": name, "step": step, "string_to_param": {"*": t}}
    text = encode_payload(payload)
    # the web UI's encoder is json.dumps with tensors as nested lists of doubles
    assert (
        text
        == json.dumps(
            {"name": name, "step": step, "string_to_param": {"*": {"TORCHTENSOR": [values]}}}
        ).encode()
    )
    back = decode_payload(text)
    assert back["name"] == name and back["step"] == step
    assert torch.equal(back["string_to_param"]["*"].float().view(torch.int32), t.view(torch.int32))
