"""Text encoding of the standalone backend: chunking, injection, gradients, emphasis, CLIP skip, SDXL extras."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from extension.backends import SizeConditioning, TextOptions
from extension.prompt.chunking import chunk_prompt
from extension.weighting import apply_emphasis

START, END = 49406, 49407


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny matrices: extra threads only add overhead (a lot of it on a busy 2-core machine)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



@pytest.fixture
def sd1(backends):
    b = backends["sd1"]
    yield b
    b.text_options = TextOptions()


def vectors_for(backend, n: int, seed: int = 0, grad: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(n, w, generator=gen).requires_grad_(grad) for k, w in backend.encoder_widths.items()}


def chunk_ids(backend, key: str, text: str) -> torch.Tensor:
    tokenize, special = backend.tokenizers()[key]
    ids = tokenize([text])[0]
    assert len(ids) <= 75
    row = [START, *ids, END] + [special.pad] * (75 - len(ids))
    return torch.tensor([row])


def test_no_injection_equals_the_models_own_forward(backends):
    text = "a photo of a cat on a red sofa"
    # SD1, clip skip 1: the model's last_hidden_state (final LayerNorm applied)
    sd1 = backends["sd1"]
    model = sd1.text_encoders["clip_l"]
    with torch.no_grad():
        ours = sd1.encode_text([text], {}).crossattn
        own = model(input_ids=chunk_ids(sd1, "clip_l", text)).last_hidden_state
    torch.testing.assert_close(ours, own, rtol=0, atol=1e-6)

    # SD2: penultimate layer + final LayerNorm, ids padded with 0 after the first END
    sd2 = backends["sd2"]
    model = sd2.text_encoders["clip_g"]
    with torch.no_grad():
        ours = sd2.encode_text([text], {}).crossattn
        out = model(input_ids=chunk_ids(sd2, "clip_g", text), output_hidden_states=True)
        own = model.final_layer_norm(out.hidden_states[-2])
    torch.testing.assert_close(ours, own, rtol=0, atol=1e-6)

    # SDXL: L and G penultimate without LayerNorm, concatenated; pooled = the model's text_embeds
    xl = backends["sdxl"]
    with torch.no_grad():
        cond = xl.encode_text([text], {})
        out_l = xl.text_encoders["clip_l"](input_ids=chunk_ids(xl, "clip_l", text), output_hidden_states=True)
        out_g = xl.text_encoders["clip_g"](input_ids=chunk_ids(xl, "clip_g", text), output_hidden_states=True)
    torch.testing.assert_close(cond.crossattn, torch.cat([out_l.hidden_states[-2], out_g.hidden_states[-2]], -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(cond.pooled, out_g.text_embeds, rtol=0, atol=1e-6)


def test_clip_skip_sd1(sd1):
    text = "a cat"
    model = sd1.text_encoders["clip_l"]
    sd1.text_options = TextOptions(clip_skip=2)
    with torch.no_grad():
        ours = sd1.encode_text([text], {}).crossattn
        out = model(input_ids=chunk_ids(sd1, "clip_l", text), output_hidden_states=True)
    torch.testing.assert_close(ours, model.final_layer_norm(out.hidden_states[-2]), rtol=0, atol=1e-6)
    sd1.text_options = TextOptions(clip_skip=9)
    with pytest.raises(ValueError, match="clip skip"):
        sd1.encode_text([text], {})


def test_shapes(backends):
    prompts = ["a cat", "a dog " * 60]  # the second needs two chunks; the first is padded to two
    for family, width in (("sd1", 32), ("sd2", 48), ("sdxl", 80)):
        cond = backends[family].encode_text(prompts, {})
        assert cond.crossattn.shape == (2, 154, width)
        assert (cond.pooled is None) == (family != "sdxl")


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_injection_matches_a_substituted_embedding_table(backends, family):
    """Injected vectors == the same model whose token table holds the vectors at spare ids."""
    backend = backends[family]
    emb = vectors_for(backend, 3, seed=5)
    prompt = "a painting of myemb, in a (forest:1.2)"
    cond = backend.encode_text([prompt], {"myemb": emb})

    spare = [1000, 1001, 1002]
    parts, pooled = [], None
    for key, spec in backend._specs().items():
        tokenize, special = backend.tokenizers()[key]
        chunk = chunk_prompt(prompt, tokenize, special, {"myemb": 3}).chunks[0]
        assert len(chunk.fixes) == 1
        offset, name = chunk.fixes[0]
        assert name == "myemb"
        ids = list(chunk.tokens)
        assert ids[offset + 1 : offset + 4] == [0, 0, 0]
        assert not set(spare) & set(ids)
        ids[offset + 1 : offset + 4] = spare
        model = copy.deepcopy(backend.text_encoders[key])
        table = spec.token_embedding.weight
        inner = getattr(model, "text_model", model)
        with torch.no_grad():
            inner.embeddings.token_embedding.weight[spare] = emb[key].to(table.dtype)
            out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        z = out.hidden_states[-spec.skip]
        if spec.final_norm:
            z = inner.final_layer_norm(z)
        z = apply_emphasis(z, torch.tensor([chunk.multipliers]), "Original")
        parts.append(z)
        if family == "sdxl" and key == "clip_g":
            pooled = out.text_embeds
    torch.testing.assert_close(cond.crossattn, torch.cat(parts, -1), rtol=1e-5, atol=1e-5)
    if pooled is not None:
        torch.testing.assert_close(cond.pooled, pooled, rtol=1e-5, atol=1e-5)

    # and the vectors matter: other vectors give another conditioning
    other = backend.encode_text([prompt], {"myemb": vectors_for(backend, 3, seed=6)})
    assert not torch.allclose(other.crossattn, cond.crossattn)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_gradient_reaches_only_the_vectors(backends, family):
    backend = backends[family]
    emb = vectors_for(backend, 2, grad=True)
    with backend.frozen():
        cond = backend.encode_text(["a photo of myemb", "myemb BREAK on a beach"], {"myemb": emb})
        x = torch.randn(2, 4, 8, 8)
        loss = backend.denoise(x, torch.tensor([10, 700]), cond).square().mean()
        loss.backward()
        assert all(p.grad is None for p in backend.parameters())
    for vec in emb.values():
        assert vec.grad is not None and vec.grad.abs().sum() > 0
    assert all(p.requires_grad for p in backend.parameters())  # flags restored


def test_no_gradient_when_the_name_is_absent(sd1):
    emb = vectors_for(sd1, 2, grad=True)
    with sd1.frozen():
        cond = sd1.encode_text(["a photo of a cat"], {"myemb": emb})
        assert not cond.crossattn.requires_grad


def test_frozen_restores_mixed_flags(sd1):
    params = list(sd1.parameters())
    params[0].requires_grad_(False)
    try:
        with sd1.frozen():
            assert not any(p.requires_grad for p in params)
        assert not params[0].requires_grad and all(p.requires_grad for p in params[1:])
    finally:
        params[0].requires_grad_(True)


def test_emphasis_applied_like_apply_emphasis(sd1):
    prompt = "a (cat:1.5) on a [sofa]"
    sd1.text_options = TextOptions(emphasis="Ignore")
    plain = sd1.encode_text([prompt], {}).crossattn
    tokenize, special = sd1.tokenizers()["clip_l"]
    multipliers = torch.tensor([chunk_prompt(prompt, tokenize, special).chunks[0].multipliers])
    assert sorted(set(multipliers[0].tolist())) == pytest.approx([1 / 1.1, 1.0, 1.5])
    for mode in ("Original", "No norm"):
        sd1.text_options = TextOptions(emphasis=mode)
        weighted = sd1.encode_text([prompt], {}).crossattn
        torch.testing.assert_close(weighted, apply_emphasis(plain, multipliers, mode), rtol=1e-6, atol=1e-6)
        assert not torch.allclose(weighted, plain)


def test_original_emphasis_normalises_over_the_batch(sd1):
    """The web UI rescales to the mean of the whole chunk batch, so a prompt depends on its batch mates."""
    alone = sd1.encode_text(["a (cat:1.5)"], {}).crossattn
    paired = sd1.encode_text(["a (cat:1.5)", "a dog"], {}).crossattn
    assert not torch.allclose(alone[0], paired[0])
    sd1.text_options = TextOptions(emphasis="No norm")
    alone = sd1.encode_text(["a (cat:1.5)"], {}).crossattn
    paired = sd1.encode_text(["a (cat:1.5)", "a dog"], {}).crossattn
    torch.testing.assert_close(alone[0], paired[0], rtol=1e-5, atol=1e-6)


def test_break_adds_a_chunk(sd1):
    cond = sd1.encode_text(["a cat BREAK a dog"], {}).crossattn
    assert cond.shape[1] == 154
    torch.testing.assert_close(cond[:, 77:], sd1.encode_text(["a dog"], {}).crossattn, rtol=0, atol=1e-6)
    torch.testing.assert_close(cond[:, :77], sd1.encode_text(["a cat"], {}).crossattn, rtol=0, atol=1e-6)
    sd1.text_options = TextOptions(emphasis="None")  # no parsing: BREAK is a word
    assert sd1.encode_text(["a cat BREAK a dog"], {}).crossattn.shape[1] == 77


def test_openclip_padding(backends):
    for family, key, pad in (("sd1", "clip_l", END), ("sd2", "clip_g", 0), ("sdxl", "clip_l", END), ("sdxl", "clip_g", 0)):
        tokenize, special = backends[family].tokenizers()[key]
        tokens = chunk_prompt("a cat", tokenize, special).chunks[0].tokens
        assert special.pad == pad and tokens[:4] == [START, 320, 2368, END]  # START a cat END
        assert tokens[4:] == [pad] * 73


def test_sdxl_pooled_and_time_ids(backends):
    xl = backends["sdxl"]
    sizes = [SizeConditioning((512, 768), (16, 0), (1024, 1024)), SizeConditioning((64, 64), (0, 0), (64, 64))]
    cond = xl.encode_text(["a cat", "a dog BREAK grass"], {}, sizes)
    assert cond.pooled.shape == (2, 48)
    assert cond.extra["time_ids"].tolist() == [[512, 768, 16, 0, 1024, 1024], [64, 64, 0, 0, 64, 64]]
    # pooled comes from chunk 0 and ignores emphasis
    alone = xl.encode_text(["a cat"], {}).pooled
    torch.testing.assert_close(cond.pooled[:1], alone, rtol=1e-6, atol=1e-6)
    weighted = xl.encode_text(["a (cat:1.4)"], {}).pooled
    torch.testing.assert_close(weighted, alone, rtol=1e-6, atol=1e-6)
    default = xl.encode_text(["a cat"], {}).extra["time_ids"]
    assert default.tolist() == [[64, 64, 0, 0, 64, 64]]
    with pytest.raises(ValueError, match="size conditionings"):
        xl.encode_text(["a", "b"], {}, sizes[:1])


def test_sdxl_embedding_needs_both_encoders(backends):
    xl = backends["sdxl"]
    with pytest.raises(ValueError, match="no vectors for the clip_g"):
        xl.encode_text(["myemb"], {"myemb": {"clip_l": torch.zeros(1, 32)}})
    with pytest.raises(ValueError, match="width 768"):
        xl.encode_text(["myemb"], {"myemb": {"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 48)}})


def test_embedding_kept_whole_across_chunks(sd1):
    emb = vectors_for(sd1, 5)
    prompt = " ".join(["word"] * 73) + " myemb"  # 73 tokens, then 5 vectors do not fit: new chunk
    tokenize, special = sd1.tokenizers()["clip_l"]
    chunks = chunk_prompt(prompt, tokenize, special, {"myemb": 5}).chunks
    assert len(chunks) == 2 and chunks[1].fixes == [(0, "myemb")]
    assert sd1.encode_text([prompt], {"myemb": emb}).crossattn.shape == (1, 154, 32)


def test_token_embeddings(backends):
    for backend in backends.values():
        table = backend.token_embeddings("a red cat")
        for key, rows in table.items():
            tokenize, _ = backend.tokenizers()[key]
            ids = tokenize(["a red cat"])[0]
            weight = backend._specs()[key].token_embedding.weight
            assert rows.shape == (len(ids), backend.encoder_widths[key]) and not rows.requires_grad
            torch.testing.assert_close(rows, weight[ids].detach())


def test_text_options_are_replaceable(sd1):
    sd1.text_options = replace(TextOptions(), comma_backtrack=0)
    assert sd1.encode_text(["a, b"], {}).crossattn.shape == (1, 77, 32)


def test_embedding_longer_than_a_chunk_is_refused(sd1):
    with pytest.raises(ValueError, match="more than 75 vectors"):
        sd1.encode_text(["huge"], {"huge": vectors_for(sd1, 80)})


def test_sd2_layer_choice_follows_the_encoder_depth():
    """A 24-block ViT-H gives its penultimate block; diffusers' truncated 23-block copy its last."""
    from transformers import CLIPTextModel

    from extension.backends import StandaloneBackend
    from extension.backends.tiny import text_encoder_config, tiny_components

    parts = tiny_components("sd2")
    for layers, skip in ((23, 1), (24, 2), (3, 2)):
        encoder = CLIPTextModel(text_encoder_config(16, layers, "gelu"))
        backend = StandaloneBackend("sd2", unet=parts["unet"], vae=parts["vae"], text_encoders={"clip_g": encoder},
                                    scheduler_config=parts["scheduler_config"])
        assert backend._specs()["clip_g"].skip == skip


def test_sdxl_aligns_chunk_counts_of_its_two_tokenizers(backends, monkeypatch):
    """If CLIP-G's tokenizer needs more chunks than CLIP-L's, L is filled up with empty chunks."""
    xl = backends["sdxl"]
    real = xl._tokenizers["clip_g"]

    class Doubling:  # every token twice: 40 words become 80 tokens, two chunks
        special = real.special

        def encode_batch(self, texts):
            return [[t for t in ids for _ in range(2)] for ids in real.encode_batch(texts)]

    prompt = "cat " * 40
    alone = xl.encode_text([prompt], {}).crossattn
    empty = xl.encode_text([""], {}).crossattn
    monkeypatch.setitem(xl._tokenizers, "clip_g", Doubling())
    cond = xl.encode_text([prompt], {}).crossattn
    assert alone.shape == (1, 77, 80) and cond.shape == (1, 154, 80)
    torch.testing.assert_close(cond[:, :77, :32], alone[:, :, :32], rtol=0, atol=1e-6)
    torch.testing.assert_close(cond[:, 77:, :32], empty[:, :, :32], rtol=0, atol=1e-6)
