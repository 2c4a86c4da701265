"""Forge engine -> family selection and the refusals made before a job starts (extension/forge/families.py)."""

import pytest

from extension.forge import families
from extension.forge.families import ForgeModelError, engine_family


@pytest.mark.parametrize(
    ("engine", "family", "keys"),
    [
        ("StableDiffusion", "sd1", ["clip_l"]),
        ("StableDiffusion2", "sd2", ["clip_g"]),
        ("StableDiffusionXL", "sdxl", ["clip_l", "clip_g"]),
    ],
)
def test_trainable_engines(engine, family, keys):
    found = engine_family(engine)
    assert found.family == family
    assert list(found.text_engines.values()) == keys


def test_sdxl_text_engines_are_forge_attribute_names():
    assert list(engine_family("StableDiffusionXL").text_engines) == [
        "text_processing_engine_l",
        "text_processing_engine_g",
    ]


@pytest.mark.parametrize("engine", ["Flux", "Chroma", "StableDiffusion3", "SomethingNew"])
def test_other_families_are_refused_saying_what_is_supported(engine):
    with pytest.raises(ForgeModelError, match="TI training supports SD1/SD2/SDXL"):
        engine_family(engine)


def test_refiner_is_refused_pointing_to_the_base_model():
    with pytest.raises(ForgeModelError, match=r"refiner.*base model"):
        engine_family("StableDiffusionXLRefiner")


def test_nothing_loaded_says_to_pick_a_checkpoint():
    with pytest.raises(ForgeModelError, match="pick a checkpoint"):
        engine_family("FakeInitialModel")


def test_inpainting_models_are_refused():
    with pytest.raises(ForgeModelError, match="inpainting"):
        engine_family("StableDiffusion", is_inpaint=True)


def test_prediction_types():
    assert families.prediction_type("epsilon", True) == "epsilon"
    assert families.prediction_type("v_prediction", True) == "v_prediction"
    with pytest.raises(ForgeModelError, match="continuous noise schedule"):
        families.prediction_type("edm", False)
    with pytest.raises(ForgeModelError, match="eps- and v-prediction"):
        families.prediction_type("const", True)


def test_cpu_swap_is_refused_with_the_way_out():
    assert families.swap_problem(False) is None
    message = families.swap_problem(True)
    assert "GPU Weights" in message and "out of memory" in message


def test_training_attention_switches_only_chunked_kinds():
    assert families.training_attention("attention_pytorch") is None
    assert families.training_attention("attention_xformers") is None
    assert families.training_attention("attention_sub_quad") == "attention_pytorch"
    assert families.training_attention("attention_split") == "attention_pytorch"


def test_a_checkpoint_forge_cannot_load_is_named_with_the_way_out():
    from extension.forge.families import load_failure

    err = load_failure("tiny-shapes.safetensors [d8e4e8b2]", ValueError("Failed to recognize model type!"))
    assert isinstance(err, ForgeModelError)
    text = str(err)
    assert "tiny-shapes.safetensors [d8e4e8b2]" in text and "Failed to recognize model type!" in text
    assert "Select another checkpoint at the top of the page" in text and "SD1/SD2/SDXL" in text
    assert "load the selected checkpoint ('ValueError'). Select" in str(load_failure(None, ValueError("")))
    assert isinstance(err, ValueError)  # reported as bad input, not as an unexpected error


@pytest.mark.parametrize(
    ("family", "prediction", "std", "yaml", "refused"),
    [
        ("sd2", "epsilon", 0.21, False, True),  # a 768-v file loaded as eps (no .yaml): Forge's default
        ("sd2", "epsilon", 0.21, True, False),  # the .yaml beside it says what it is
        ("sd2", "epsilon", 0.03, False, False),  # a 512-base model really is eps
        ("sd2", "v_prediction", 0.21, False, False),
        ("sd1", "epsilon", 0.21, False, False),
        ("sd2", "epsilon", None, False, False),  # no such tensor: nothing to go by
    ],
)
def test_an_sd2_v_model_loaded_as_eps_is_refused_with_the_way_out(family, prediction, std, yaml, refused):
    problem = families.sd2_v_loaded_as_eps(family, prediction, std, yaml)
    assert (problem is not None) == refused
    if refused:
        assert "768-v" in problem and "v2-inference-v.yaml" in problem and "<name>.yaml" in problem
