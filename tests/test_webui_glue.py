"""The host-free logic of the web UI glue (extension/webui/glue.py).

The glue itself is checked against the real web UI code outside this repo (see the host helper's
report); these tests pin down the decisions it makes on plain inputs.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from extension.backends.base import SizeConditioning
from extension.webui import glue


def test_model_family_from_host_flags():
    assert glue.model_family(is_sdxl=True, is_sd2=False, is_sd1=False, has_conditioner=True) == "sdxl"
    assert glue.model_family(is_sdxl=False, is_sd2=True, is_sd1=False, has_conditioner=False) == "sd2"
    assert glue.model_family(is_sdxl=False, is_sd2=False, is_sd1=True, has_conditioner=False) == "sd1"
    with pytest.raises(glue.HostModelError, match=r"SD1\.x, SD2\.x or SDXL"):
        glue.model_family(is_sdxl=False, is_sd2=False, is_sd1=False, has_conditioner=False)


def test_encoder_keys_of_hijacked_encoders():
    assert glue.encoder_keys(["FrozenCLIPEmbedderWithCustomWords"], "sd1") == ["clip_l"]
    assert glue.encoder_keys(["FrozenOpenCLIPEmbedderWithCustomWords"], "sd2") == ["clip_g"]
    sdxl = ["FrozenCLIPEmbedderForSDXLWithCustomWords", "FrozenOpenCLIPEmbedder2WithCustomWords"]
    assert glue.encoder_keys(sdxl, "sdxl") == ["clip_l", "clip_g"]
    with pytest.raises(glue.HostModelError, match="refiner"):
        glue.encoder_keys(["FrozenOpenCLIPEmbedder2WithCustomWords"], "sdxl")
    with pytest.raises(glue.HostModelError, match="XLMR"):
        glue.encoder_keys(["FrozenXLMREmbedderWithCustomWords"], "sd1")


def test_prediction_type():
    assert glue.prediction_type("eps") == "epsilon"
    assert glue.prediction_type("v") == "v_prediction"
    with pytest.raises(glue.HostModelError, match="'x0'"):
        glue.prediction_type("x0")


def test_unsupported_conditioning():
    assert glue.unsupported_conditioning("crossattn", "txt", False) is None
    assert glue.unsupported_conditioning("hybrid", "txt", False) is None  # inpainting
    assert "pix2pix" in glue.unsupported_conditioning("hybrid", "edit", False)
    assert "depth" in glue.unsupported_conditioning("hybrid", "txt", True)
    assert "crossattn-adm" in glue.unsupported_conditioning("crossattn-adm", "txt", False)


def test_low_vram_refusal():
    assert glue.low_vram_problem(lowvram=False, medvram=False, medvram_sdxl=False, is_sdxl=True) is None
    assert glue.low_vram_problem(lowvram=False, medvram=False, medvram_sdxl=True, is_sdxl=False) is None
    msg = glue.low_vram_problem(lowvram=False, medvram=False, medvram_sdxl=True, is_sdxl=True)
    assert "--medvram-sdxl" in msg and "Restart the web UI without" in msg
    assert "--lowvram" in glue.low_vram_problem(lowvram=True, medvram=True, medvram_sdxl=False, is_sdxl=False)


def test_training_attention():
    everything = ["InvokeAI", "Doggettx", "sdp-no-mem", "sdp", "sub-quadratic", "V1"]
    assert glue.training_attention("sdp", everything) is None
    assert glue.training_attention("sdp-no-mem", everything) is None
    assert glue.training_attention(None, everything) is None  # already plain attention
    assert glue.training_attention("xformers", everything) == "sdp-no-mem"
    assert glue.training_attention("Doggettx", ["Doggettx", "sdp"]) == "sdp"
    assert glue.training_attention("sub-quadratic", ["sub-quadratic"]) == "None"


def test_vae_posterior_matches_definition():
    torch.manual_seed(0)
    moments = torch.randn(2, 8, 4, 4) * 20
    dist = glue.vae_posterior(moments)
    mean, logvar = moments[:, :4], moments[:, 4:]
    assert torch.equal(dist.mean, mean)
    assert torch.allclose(dist.std, torch.exp(0.5 * logvar.clamp(-30, 20)))
    with pytest.raises(ValueError, match=r"\(B, 2C, h, w\)"):
        glue.vae_posterior(torch.zeros(1, 3, 4, 4))


def test_host_vec_layout_keeps_the_leaf_tensors():
    lv = torch.zeros(2, 768, requires_grad=True)
    g = torch.zeros(2, 1280, requires_grad=True)
    assert glue.host_vec("sd1", {"clip_l": lv}) is lv
    pair = glue.host_vec("sdxl", {"clip_l": lv, "clip_g": g})
    assert pair["clip_l"] is lv and pair["clip_g"] is g
    assert glue.vec_rows_and_width(pair) == (2, 2048)
    assert glue.vec_rows_and_width(lv) == (2, 768)
    with pytest.raises(ValueError, match="missing"):
        glue.host_vec("sd2", {"clip_l": lv})
    with pytest.raises(ValueError, match="as many clip_l as clip_g"):
        glue.host_vec("sdxl", {"clip_l": lv, "clip_g": torch.zeros(3, 1280)})


def test_sdxl_size_batch():
    rows = glue.sdxl_size_batch(None, 2, default_side=1024, crop=(4, 8))
    assert rows["original_size_as_tuple"] == [[1024, 1024]] * 2
    assert rows["crop_coords_top_left"] == [[4, 8]] * 2
    sizes = [SizeConditioning((600, 800), (10, 20), (512, 768))]
    rows = glue.sdxl_size_batch(sizes, 1)
    assert rows == {
        "original_size_as_tuple": [[600, 800]],
        "crop_coords_top_left": [[10, 20]],
        "target_size_as_tuple": [[512, 768]],
    }
    with pytest.raises(ValueError, match="one per prompt"):
        glue.sdxl_size_batch(sizes, 3)


def test_merge_embedder_outputs_as_sdxl_conditioner():
    z_l, z_g = torch.randn(2, 77, 768), torch.randn(2, 77, 1280)
    pooled, sizes = torch.randn(2, 1280), [torch.randn(2, 512) for _ in range(3)]
    merged = glue.merge_embedder_outputs([z_l, z_g, pooled, *sizes])
    assert merged["crossattn"].shape == (2, 77, 2048)
    assert torch.equal(merged["crossattn"][..., :768], z_l)
    assert merged["vector"].shape == (2, 2816)
    assert torch.equal(merged["vector"][:, :1280], pooled)
    assert torch.equal(merged["vector"][:, -512:], sizes[2])
    with pytest.raises(ValueError, match="1-d"):
        glue.merge_embedder_outputs([torch.zeros(3)])


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x, scale=1.0):
        return torch.tanh(self.lin(x)) * scale


class BasicTransformerBlock(Block):
    pass


def test_checkpointing_keeps_gradients_and_undoes():
    torch.manual_seed(0)
    net = torch.nn.Sequential(BasicTransformerBlock(), Block(), BasicTransformerBlock())
    for p in net.parameters():
        p.requires_grad_(False)
    x0 = torch.randn(4, 8)

    def grad():
        x = x0.clone().requires_grad_(True)
        net(x).square().sum().backward()
        return x.grad

    plain = grad()
    wrapped = glue.enable_checkpointing(net)
    assert [type(m).__name__ for m in wrapped] == ["BasicTransformerBlock", "BasicTransformerBlock"]
    assert torch.allclose(grad(), plain)
    assert glue.enable_checkpointing(net) == []  # never wrapped twice
    glue.disable_checkpointing(wrapped)
    assert all("forward" not in vars(m) for m in net.modules())
    assert torch.allclose(grad(), plain)


@given(step=st.integers(-5, 500), total=st.integers(0, 400))
@settings(max_examples=60, deadline=None)
def test_progress_fields_fraction_in_range(step, total):
    f = glue.progress_fields("Train", step, total, "text")
    assert f.job_count >= 1 and 0 <= f.job_no <= f.job_count
    assert f.sampling_steps == 0 and f.textinfo == "text"


def test_save_and_restore_fields():
    class State:
        job, job_no, job_count, textinfo = "train", 3, 10, "x"

    s = State()
    saved = glue.save_fields(s)
    assert saved == {"job": "train", "job_no": 3, "job_count": 10, "textinfo": "x"}
    s.job_no, s.textinfo = 0, "preview"
    glue.restore_fields(s, saved)
    assert (s.job_no, s.textinfo) == (3, "x")


def test_settings_keys_and_options():
    assert all(s.key.startswith("ti_trainer_") for s in glue.SETTINGS)
    assert len({s.key for s in glue.SETTINGS}) == len(glue.SETTINGS)
    values = {
        "ti_trainer_save_format": "pt",
        "ti_trainer_preview_every": 50.0,
        "ti_trainer_keep_snapshots": 3,
    }
    opts = glue.options_from_settings(values, ["save_format", "preview_every", "validation_every"])
    assert opts == {"save_format": "pt", "preview_every": 50}  # keep_snapshots: no such field
    assert isinstance(opts["preview_every"], int)


def test_resolve_log_dir(tmp_path):
    assert glue.resolve_log_dir("/flag", "/setting", str(tmp_path)) == "/flag"
    assert glue.resolve_log_dir(None, " /setting ", str(tmp_path)) == "/setting"
    assert glue.resolve_log_dir("", "", str(tmp_path)) == str(tmp_path / "textual_inversion")


def test_parse_api_auth():
    assert glue.parse_api_auth(None) == {}
    assert glue.parse_api_auth("a:b,c:d:e") == {"a": "b", "c": "d:e"}
    with pytest.raises(ValueError, match="'nocolon' is not user:password"):
        glue.parse_api_auth("a:b,nocolon")


def test_should_mount_api():
    assert glue.should_mount_api(api=True, nowebui=False, no_api_flag=False)
    assert glue.should_mount_api(api=False, nowebui=True, no_api_flag=False)
    assert not glue.should_mount_api(api=True, nowebui=False, no_api_flag=True)
    assert not glue.should_mount_api(api=False, nowebui=False, no_api_flag=False)


def test_forge_is_recognised_and_refused_with_a_way_out() -> None:
    assert glue.is_forge(["modules", "modules_forge", "modules_forge.main_entry"])
    assert not glue.is_forge(["modules", "modules.shared", "modules_forgery"])
    assert "python -m extension train" in glue.FORGE_MESSAGE


# -- precision ------------------------------------------------------------------------------------


def _unet_like() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(4, 32, 3), torch.nn.GroupNorm(8, 32), torch.nn.Linear(32, 32))


def test_weights_dtype_is_what_the_weights_are_stored_in():
    assert glue.weights_dtype(_unet_like().parameters()) == torch.float32  # --no-half
    assert glue.weights_dtype(_unet_like().half().parameters()) == torch.float16  # the web UI's default
    assert glue.weights_dtype(_unet_like().to(torch.bfloat16).parameters()) == torch.bfloat16
    with pytest.raises(glue.HostModelError, match="no floating-point weights"):
        glue.weights_dtype([torch.zeros(3, dtype=torch.long)])


@pytest.mark.skipif(not glue.FP8_DTYPES, reason="this torch has no float8 dtypes")
def test_fp8_weights_are_recognised_and_refused():
    net = _unet_like().half()
    for layer in (net[0], net[2]):  # what the web UI's "FP8 weight" does: Conv2d / Linear only
        layer.to(glue.FP8_DTYPES[0])
    dtype = glue.weights_dtype(net.parameters())
    assert dtype == glue.FP8_DTYPES[0]
    assert "FP8 weight" in glue.weights_dtype_problem(dtype)
    assert glue.weights_dtype_problem(torch.float16) is None
    assert glue.weights_dtype_problem(torch.float32) is None


def test_half_weights_on_the_cpu_are_refused_with_the_flag():
    assert "--no-half" in glue.weights_dtype_problem(torch.float16, "cpu")
    assert glue.weights_dtype_problem(torch.float32, "cpu") is None
    assert glue.weights_dtype_problem(torch.bfloat16, "cuda") is None


def test_hints_name_the_web_ui_flags():
    assert "--no-half" in glue.FP32_HINT and "fp16" in glue.FP32_HINT
    assert "--no-half-vae" in glue.vae_nan_hint(torch.float16)
    assert "--no-half-vae" not in glue.vae_nan_hint(torch.float32)  # it would change nothing


def test_the_training_schedule_is_the_models_original_one():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    original = torch.cumprod(1 - betas, 0).float()
    # what the web UI leaves in alphas_cumprod after a zero-terminal-SNR, downcast generation
    rewritten = original.clone()
    rewritten[-1] = 4.8973451890853435e-08
    rewritten = rewritten.half()
    schedule = glue.training_alphas_cumprod(rewritten, original)
    assert schedule.dtype == torch.float32 and torch.equal(schedule, original)
    schedule[0] = 0  # a copy: the host's tensor is not touched
    assert original[0] > 0.99
    assert torch.equal(glue.training_alphas_cumprod(original, None), original)  # no original kept


# -- text settings --------------------------------------------------------------------------------

HOST_MODES = ("None", "Ignore", "Original", "No norm")  # modules/sd_emphasis.py options


def test_host_text_values():
    assert glue.host_text_values("No norm", 2, HOST_MODES) == {
        "emphasis": "No norm",
        "CLIP_stop_at_last_layers": 2,
    }
    with pytest.raises(ValueError, match=r"'Strong'.*Original"):
        glue.host_text_values("Strong", 1, HOST_MODES)
    with pytest.raises(ValueError, match="at least 1"):
        glue.host_text_values("Original", 0, HOST_MODES)


def test_text_defaults_follow_the_host_settings():
    opts = {"emphasis": "Ignore", "CLIP_stop_at_last_layers": 2}
    assert glue.text_defaults(opts.get, HOST_MODES) == {"emphasis": "Ignore", "clip_skip": 2}
    assert glue.text_defaults({"emphasis": "Odd", "CLIP_stop_at_last_layers": None}.get, HOST_MODES) == {}


def test_overridden_restores_the_users_values_even_on_error():
    data = {"emphasis": "Original", "other": 1}  # CLIP skip never set: the host reads its default
    values = {"emphasis": "No norm", "CLIP_stop_at_last_layers": 2}
    with pytest.raises(RuntimeError, match="boom"), glue.overridden(data, values):
        assert data == {"emphasis": "No norm", "other": 1, "CLIP_stop_at_last_layers": 2}
        raise RuntimeError("boom")
    assert data == {"emphasis": "Original", "other": 1}
    with glue.overridden(data, values):
        data["emphasis"] = "Ignore"  # the user saved settings meanwhile
    assert data == {"emphasis": "Ignore", "other": 1}


# -- extra networks -------------------------------------------------------------------------------


class HostLora:
    """The rule of the web UI's Lora (networks.network_apply_weights), reduced to one delta per
    network: a layer whose merged set differs from the wanted one is restored from its backup and
    the wanted networks are merged again."""

    def __init__(self):
        self.loaded_networks: list[str] = []
        self.deltas: dict[str, float] = {}

    def load_networks(self, names):
        self.loaded_networks[:] = names

    def network_apply_weights(self, layer):
        wanted = tuple(self.loaded_networks)
        if getattr(layer, "network_current_names", ()) == wanted:
            return
        if getattr(layer, "network_weights_backup", None) is None:
            layer.network_weights_backup = layer.weight.detach().clone()
        layer.weight.copy_(layer.network_weights_backup)
        for name in wanted:
            layer.weight.add_(self.deltas[name])
        layer.network_current_names = wanted


def test_restore_checkpoint_weights_takes_merged_networks_off():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    own = [p.detach().clone() for p in model.parameters()]
    lora = HostLora()
    lora.deltas["x"] = 0.5
    lora.load_networks(["x"])  # the last generation had <lora:x:1> in its prompt ...
    for layer in model[:2]:
        with torch.no_grad():
            lora.network_apply_weights(layer)  # ... and merged it into the layers it ran through
    assert not torch.equal(model[0].weight, own[0])
    model[0].weight.requires_grad_(True)  # restoring must not trip over a trainable leaf
    assert glue.lora_module({"networks": lora}) is lora
    restored = glue.restore_checkpoint_weights(
        model, clear_networks=lambda: lora.load_networks([]), apply_weights=lora.network_apply_weights
    )
    assert restored == 2  # cleared first: restoring with "x" still wanted would merge it again
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), own))
    assert lora.loaded_networks == []  # the next forward of any layer merges nothing
    assert (
        glue.restore_checkpoint_weights(
            model, clear_networks=lambda: None, apply_weights=lora.network_apply_weights
        )
        == 0
    )


def test_lora_module_is_the_builtin_extensions_networks():
    assert glue.lora_module({}) is None
    import types

    assert glue.lora_module({"networks": types.ModuleType("networks")}) is None  # some other "networks"


def test_forget_cached_conditioning_empties_both_caches_keeping_their_length():
    import types

    # the class attributes the web UI (2 slots) and Forge (3 slots) cache conditioning in
    Processing = types.SimpleNamespace(
        cached_c=[("a photo of cat", 20), "old conditioning"], cached_uc=[("", 20), "old negative", "extra"]
    )
    glue.forget_cached_conditioning(Processing)
    assert Processing.cached_c == [None, None] and Processing.cached_uc == [None, None, None]


# -- emphasis of unweighted prompts -------------------------------------------------------------


def test_encoding_emphasis_skips_originals_normalisation_only_without_weights():
    plain = [[("a photo of tiprec, grey cat face", 1.0)]]
    assert glue.encoding_emphasis("Original", plain) == "No norm"
    broken = [[("a photo", 1.0), ("BREAK", -1.0), ("of tiprec", 1.0)]]  # BREAK is a marker, not a weight
    assert glue.encoding_emphasis("Original", broken) == "No norm"
    weighted = [[("a photo of ", 1.0), ("tiprec", 1.1)]]
    assert glue.encoding_emphasis("Original", [*plain, weighted[0]]) == "Original"
    for mode in ("No norm", "Ignore", "None"):
        assert glue.encoding_emphasis(mode, plain) == mode


def test_encoding_emphasis_keeps_finite_what_original_turns_nan():
    from extension.weighting import apply_emphasis

    # a zero-mean encoder output (final layer norm without bias): the web UI's "Original" divides 0 by 0
    z = torch.tensor([[[1.0, -1.0], [2.0, -2.0]]])
    ones = torch.ones(1, 2)
    weighted = z * ones.unsqueeze(-1)
    assert torch.isnan(weighted * (z.mean() / weighted.mean())).all()
    mode = glue.encoding_emphasis("Original", [[("a cat", 1.0)]])
    assert torch.equal(apply_emphasis(z, ones, mode), z)
    # wherever "Original" is finite, the substitute gives the same bits
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 77, 16, generator=g)
    assert torch.equal(apply_emphasis(z, torch.ones(2, 77), mode), apply_emphasis(z, torch.ones(2, 77), "Original"))


def test_vae_scale_factor_follows_the_encoders_levels():
    from types import SimpleNamespace

    def vae(levels):
        return SimpleNamespace(encoder=SimpleNamespace(num_resolutions=levels))

    assert glue.vae_scale_factor(vae(4)) == 8  # SD's ch_mult (1, 2, 4, 4)
    assert glue.vae_scale_factor(vae(3)) == 4  # tiny-shapes' (1, 1, 2)
    assert glue.vae_scale_factor(SimpleNamespace()) == 8  # a VAE that does not say: the web UI's 8
