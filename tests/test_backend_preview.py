"""Preview sampling of the standalone backend."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from extension.backends import PreviewRequest
from extension.backends.base import Conditioning
from extension.backends.sampling import (
    ScheduledConditioning,
    prompt_parts,
    stack_conditionings,
    strip_extra_networks,
)


def request(**kw) -> PreviewRequest:
    base = dict(prompt="a photo of a cat", negative_prompt="blurry", steps=3, cfg_scale=5.0, seed=7, width=64, height=48)
    base.update(kw)
    return PreviewRequest(**base)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_preview_size_and_determinism(backends, family):
    backend = backends[family]
    first = backend.sample_preview(request(), {})
    assert isinstance(first, Image.Image) and first.size == (64, 48) and first.mode == "RGB"
    assert backend.sample_preview(request(), {}).tobytes() == first.tobytes()
    assert backend.sample_preview(request(seed=8), {}).tobytes() != first.tobytes()


def test_preview_uses_prompt_negative_cfg_and_embeddings(backends):
    backend = backends["sd1"]
    base = backend.sample_preview(request(prompt="a photo of myemb"), {}).tobytes()
    emb = {"myemb": {"clip_l": torch.randn(2, 32, generator=torch.Generator().manual_seed(0)) * 5}}
    assert backend.sample_preview(request(prompt="a photo of myemb"), emb).tobytes() != base
    assert backend.sample_preview(request(prompt="a photo of myemb", negative_prompt=""), {}).tobytes() != base
    assert backend.sample_preview(request(prompt="a photo of myemb", cfg_scale=1.0), {}).tobytes() != base


def test_preview_accepts_the_full_prompt_syntax(backends):
    for backend in backends.values():
        img = backend.sample_preview(
            request(prompt="a [cat:dog:2] (on:1.2) [grass|sand] <lora:x:0.5> BREAK sky AND a tree:0.5", steps=4), {}
        )
        assert img.size == (64, 48)


def test_sdxl_empty_negative_is_zeros_not_encoded(backends, monkeypatch):
    """With an empty negative prompt, SDXL previews use zero conditioning (as the web UI does)."""
    xl = backends["sdxl"]
    seen = []
    original = type(xl).denoise

    def spy(self, x, t, cond):
        seen.append(cond)
        return original(self, x, t, cond)

    monkeypatch.setattr(type(xl), "denoise", spy)
    xl.sample_preview(request(negative_prompt="", steps=1), {})
    assert torch.count_nonzero(seen[0].crossattn[0]) == 0 and torch.count_nonzero(seen[0].pooled[0]) == 0
    assert torch.count_nonzero(seen[0].crossattn[1]) > 0
    seen.clear()
    xl.sample_preview(request(negative_prompt="ugly", steps=1), {})
    assert torch.count_nonzero(seen[0].crossattn[0]) > 0


def test_and_parts_combine_with_their_weights(backends):
    """One AND part of weight w equals plain CFG with scale w*cfg."""
    backend = backends["sd1"]
    weighted = backend.sample_preview(request(prompt="a cat:0.5", cfg_scale=6.0), {})
    plain = backend.sample_preview(request(prompt="a cat", cfg_scale=3.0), {})
    assert weighted.tobytes() == plain.tobytes()


def test_bad_requests(backends):
    backend = backends["sd1"]
    with pytest.raises(ValueError, match="multiples of 8"):
        backend.sample_preview(request(width=60), {})
    with pytest.raises(ValueError, match="steps"):
        backend.sample_preview(request(steps=0), {})


def test_helpers():
    assert strip_extra_networks("a <lora:x:0.8> cat<hypernet:y:1>") == "a  cat"
    assert prompt_parts("a AND b:0.5") == [("a", 1.0), (" b", 0.5)]
    z = torch.arange(6.0).reshape(1, 2, 3)
    stacked = stack_conditionings([Conditioning(z), Conditioning(torch.zeros(1, 4, 3))])
    assert stacked.crossattn.shape == (2, 4, 3)
    assert torch.equal(stacked.crossattn[0, 2:], z[0, -1:].expand(2, 3))  # last token repeated
    sched = ScheduledConditioning([2, 5], Conditioning(torch.tensor([[[1.0]], [[2.0]]])))
    assert [float(sched.at(i).crossattn) for i in range(8)] == [1, 1, 1, 2, 2, 2, 1, 1]
