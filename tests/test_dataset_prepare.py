"""TrainingDataset.prepare on the tiny SD1 model: latents, sampling modes, flips, alpha, errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from extension.backends.base import SizeConditioning
from extension.training.dataset import (
    DatasetError,
    DatasetInterrupted,
    DatasetOptions,
    TrainingDataset,
    check_options,
)
from extension.training.demo_data import make_demo_dataset
from extension.training.images import flatten, to_pixels

SIZE = 32  # pixels; the tiny VAE makes 4x4 latents of it


@pytest.fixture(scope="module")
def backend():
    from extension.backends.tiny import build_tiny_backend

    return build_tiny_backend("sd1", seed=0)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with a hash of its bytes (directories as 'dir')."""
    out = {}
    for path in sorted(folder.rglob("*")):
        out[str(path.relative_to(folder))] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def noise_image(seed: int, size=(SIZE, SIZE), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    array = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(array if channels > 1 else array[..., 0], mode=mode)


def encode_mean(backend, image: Image.Image) -> torch.Tensor:
    with torch.no_grad():
        dist = backend.encode_images(to_pixels(image).unsqueeze(0))
    return dist.mean[0].float() * backend.latent_scale


def options(folder: Path, **kwargs) -> DatasetOptions:
    kwargs.setdefault("width", SIZE)
    kwargs.setdefault("height", SIZE)
    return DatasetOptions(folder, **kwargs)


@pytest.fixture
def folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        noise_image(i).save(data / f"{i:03d}-img{i}.png")
    (data / "001-img1.txt").write_text("red, round, shiny", encoding="utf-8")
    return data


def test_prepare_latent_shapes_captions_and_sizes(backend, folder):
    before = snapshot(folder.parent)
    ds = TrainingDataset.prepare(options(folder, latent_sampling="deterministic"), backend, "emb", progress=lambda d, t: None)
    assert snapshot(folder.parent) == before  # nothing written
    assert len(ds) == 3 and ds.skipped == []
    assert [r.caption for r in ds.records] == ["img0", "red, round, shiny", "img2"]
    assert ds.records[1].caption_file == folder / "001-img1.txt"
    latents = ds.latents([0, 1, 2], gen(0))
    assert latents.shape == (3, 4, SIZE // 8, SIZE // 8)
    assert latents.dtype == torch.float32 and latents.device.type == "cpu"
    assert ds.loss_weights([0, 1]) is None
    assert ds.sizes([0]) == [SizeConditioning((SIZE, SIZE), (0, 0), (SIZE, SIZE))]
    prompts = ds.prompts([1], gen(0))
    assert len(prompts) == 1 and "emb" in prompts[0] and "red, round, shiny" in prompts[0]


def test_deterministic_latents_are_the_scaled_posterior_mean(backend, folder):
    ds = TrainingDataset.prepare(options(folder, latent_sampling="deterministic"), backend, "emb")
    expected = encode_mean(backend, noise_image(2))
    assert torch.allclose(ds.latents([2], gen(0))[0], expected, atol=1e-5)
    assert torch.equal(ds.latents([2], gen(0)), ds.latents([2], gen(99)))


def test_once_latents_are_one_fixed_sample_seeded_at_caching(backend, folder):
    ds = TrainingDataset.prepare(options(folder, latent_sampling="once"), backend, "emb", seed=1)
    same = TrainingDataset.prepare(options(folder, latent_sampling="once"), backend, "emb", seed=1)
    other = TrainingDataset.prepare(options(folder, latent_sampling="once"), backend, "emb", seed=2)
    a = ds.latents([0, 1], gen(0))
    assert torch.equal(a, ds.latents([0, 1], gen(5)))  # fixed once drawn
    assert torch.equal(a, same.latents([0, 1], gen(0)))  # reproducible
    assert not torch.equal(a, other.latents([0, 1], gen(0)))
    mean = encode_mean(backend, noise_image(0))
    assert not torch.allclose(a[0], mean, atol=1e-6)  # a sample, not the mean
    assert (a[0] - mean).abs().max() < 1.0  # but from the posterior around it


def test_random_latents_draw_from_the_generator(backend, folder):
    ds = TrainingDataset.prepare(options(folder, latent_sampling="random"), backend, "emb")
    a = ds.latents([0], gen(1))
    assert torch.equal(a, ds.latents([0], gen(1)))
    assert not torch.equal(a, ds.latents([0], gen(2)))
    draws = torch.stack([ds.latents([0], gen(s))[0] for s in range(200)])
    mean = encode_mean(backend, noise_image(0))
    std = draws.std(0)
    assert float(std.min()) > 0
    # The draws average to the posterior mean within 5 standard errors, element by element.
    assert ((draws.mean(0) - mean).abs() <= 5 * std / 200**0.5 + 1e-6).all()


def test_flip_is_applied_and_chosen_by_the_generator(backend, folder):
    ds = TrainingDataset.prepare(
        options(folder, latent_sampling="deterministic", flip_probability=0.5), backend, "emb"
    )
    plain = encode_mean(backend, noise_image(1))
    mirrored = encode_mean(backend, noise_image(1).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert not torch.allclose(plain, mirrored, atol=1e-3)
    seen = set()
    for seed in range(12):
        latent = ds.latents([1, 1], gen(seed))
        flips = ds.draw_flips(2, gen(seed))
        assert ds.last_flips == ((1, 1), flips)
        for row, flipped in zip(latent, flips):
            assert torch.allclose(row, mirrored if flipped else plain, atol=1e-5)
            seen.add(flipped)
    assert seen == {True, False}
    always = TrainingDataset.prepare(
        options(folder, latent_sampling="deterministic", flip_probability=1.0), backend, "emb"
    )
    assert torch.allclose(always.latents([1], gen(0))[0], mirrored, atol=1e-5)


def rgba_folder(root: Path) -> Path:
    data = root / "rgba"
    data.mkdir()
    image = noise_image(7, mode="RGBA")
    array = np.asarray(image).copy()
    array[..., 3] = 255
    array[:, : SIZE // 2, 3] = 0  # left half transparent
    Image.fromarray(array, mode="RGBA").save(data / "cut.png")
    noise_image(8).save(data / "opaque.png")
    return data


def test_rgba_is_flattened_onto_white_by_default(backend, tmp_path):
    data = rgba_folder(tmp_path)
    ds = TrainingDataset.prepare(options(data, latent_sampling="deterministic"), backend, "emb")
    assert ds.loss_weights([0]) is None
    decoded = Image.open(data / "cut.png")
    expected = encode_mean(backend, flatten(decoded.convert("RGB"), decoded.getchannel("A")))
    assert torch.allclose(ds.latents([0], gen(0))[0], expected, atol=1e-5)


def test_alpha_as_loss_weight(backend, tmp_path):
    data = rgba_folder(tmp_path)
    ds = TrainingDataset.prepare(
        options(data, latent_sampling="deterministic", alpha_as_loss_weight=True, flip_probability=0.5),
        backend,
        "emb",
    )
    assert ds.has_loss_weights
    weights = ds.loss_weights([0, 1], flips=[False, False])
    h = SIZE // 8
    assert weights.shape == (2, 1, h, h)
    assert weights.mean(dim=(1, 2, 3)).tolist() == pytest.approx([1.0, 1.0])
    assert weights[0, 0, :, : h // 2].eq(0).all() and weights[0, 0, :, h // 2 :].eq(2).all()
    assert weights[1].eq(1).all()  # no alpha: plain ones
    flipped = ds.loss_weights([0], flips=[True])
    assert torch.equal(flipped[0], torch.flip(weights[0], dims=[-1]))
    # Without explicit flips the weights follow the flips the last latents() call drew.
    for seed in range(8):
        ds.latents([0], gen(seed))
        drawn = ds.draw_flips(1, gen(seed))[0]
        assert torch.equal(ds.loss_weights([0])[0], flipped[0] if drawn else weights[0])


def test_fully_transparent_image_is_skipped_with_alpha_weights(backend, tmp_path):
    data = rgba_folder(tmp_path)
    Image.new("RGBA", (SIZE, SIZE), (5, 5, 5, 0)).save(data / "ghost.png")
    ds = TrainingDataset.prepare(options(data, alpha_as_loss_weight=True), backend, "emb")
    assert len(ds) == 2
    assert [(p.name, "fully transparent" in why) for p, why in ds.skipped] == [("ghost.png", True)]


def test_unreadable_files_are_skipped_and_listed(backend, folder):
    (folder / "junk.png").write_bytes(b"garbage")
    full = folder / "000-img0.png"
    (folder / "zz-cut.png").write_bytes(full.read_bytes()[:200])
    (folder / "notes.md").write_text("hello", encoding="utf-8")
    ds = TrainingDataset.prepare(options(folder), backend, "emb")
    assert len(ds) == 3
    reasons = {p.name: why for p, why in ds.skipped}
    assert set(reasons) == {"junk.png", "zz-cut.png"}  # notes.md is no picture: never listed
    assert "not a readable image" in reasons["junk.png"]
    assert "cannot be decoded" in reasons["zz-cut.png"]


def test_buckets_group_by_aspect_ratio(backend, tmp_path):
    data = tmp_path / "mixed"
    data.mkdir()
    noise_image(1, (64, 32)).save(data / "wide.png")
    noise_image(2, (32, 64)).save(data / "tall.png")
    noise_image(3, (40, 40)).save(data / "square.png")
    noise_image(4, (66, 30)).save(data / "wide2.png")
    ds = TrainingDataset.prepare(
        options(data, buckets=True, bucket_step=8, latent_sampling="deterministic"), backend, "emb"
    )
    by_name = {r.path.name: r for r in ds.records}
    assert by_name["wide.png"].bucket == (40, 24) and by_name["wide2.png"].bucket == (40, 24)
    assert by_name["tall.png"].bucket == (24, 40) and by_name["square.png"].bucket == (32, 32)
    wide = [i for i, r in enumerate(ds.records) if r.bucket == (40, 24)]
    assert ds.latents(wide, gen(0)).shape == (2, 4, 3, 5)
    cond = ds.sizes([ds.records.index(by_name["wide.png"])])[0]
    assert cond.original_size == (32, 64) and cond.target_size == (24, 40)
    assert cond.crop_top_left == (0, (48 - 40) // 2)  # 64x32 covers 40x24 at 48x24
    for batch in [b for _, b in zip(range(20), ds.micro_batches(2, 0))]:
        assert len({ds.records[i].bucket for i in batch}) == 1
    with pytest.raises(ValueError, match="one bucket"):
        ds.latents([wide[0], ds.records.index(by_name["tall.png"])], gen(0))


def test_progress_callback_and_interrupt(backend, tmp_path):
    data = make_demo_dataset(tmp_path / "demo", n=6, size=SIZE)
    calls = []
    TrainingDataset.prepare(
        options(data, encode_batch_size=2), backend, "emb", progress=lambda d, t: calls.append((d, t))
    )
    assert calls[0] == (0, 6) and calls[-1] == (6, 6)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) >= 4
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 2

    before = snapshot(tmp_path)
    with pytest.raises(DatasetInterrupted, match="interrupted"):
        TrainingDataset.prepare(options(data), backend, "emb", should_stop=stop, progress=lambda d, t: None)
    assert len(asked) == 3 and snapshot(tmp_path) == before


def test_encoding_streams_in_small_batches(backend, tmp_path):
    data = make_demo_dataset(tmp_path / "demo", n=5, size=SIZE)
    sizes = []

    class Spy:
        def __getattr__(self, name):
            return getattr(backend, name)

        def encode_images(self, pixels):
            sizes.append(pixels.shape[0])
            return backend.encode_images(pixels)

    TrainingDataset.prepare(options(data, encode_batch_size=2, flip_probability=0.5), Spy(), "emb")
    assert sizes == [4, 4, 2]  # 2 images + their mirror images per call, never all at once


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(width=30), "Width 30 is not a positive multiple of 8"),
        (dict(height=0), "Height 0 is not a positive multiple of 8"),
        (dict(repeats=0), "Repeats per epoch"),
        (dict(tag_dropout=1.5), "Tag dropout must be between 0 and 1"),
        (dict(flip_probability=-0.1), "Flip probability"),
        (dict(latent_sampling="sometimes"), "Unknown latent sampling method 'sometimes'"),
        (dict(template="nope"), "Unknown prompt template 'nope'.*subject_filewords"),
        (dict(filename_word_regex="(unclosed"), "Invalid file-name word regex"),
        (dict(caption_extension=".png"), "is an image extension"),
        (dict(buckets=True, bucket_step=12), "Bucket step 12"),
    ],
)
def test_bad_options_fail_before_any_work(backend, folder, change, message):
    before = snapshot(folder.parent)
    calls = []

    class Spy:
        def __getattr__(self, name):
            return getattr(backend, name)

        def encode_images(self, pixels):
            calls.append(1)
            return backend.encode_images(pixels)

    with pytest.raises(DatasetError, match=message):
        check_options(options(folder, **change))
    with pytest.raises(DatasetError, match=message):
        TrainingDataset.prepare(options(folder, **change), Spy(), "emb")
    assert calls == [] and snapshot(folder.parent) == before


def test_template_without_name_fails(backend, folder, tmp_path):
    template = tmp_path / "t.txt"
    template.write_text("a photo of [filewords]\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"no line containing \[name\]"):
        TrainingDataset.prepare(options(folder, template=str(template)), backend, "emb")


def test_bad_folders(backend, tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist"):
        TrainingDataset.prepare(options(tmp_path / "missing"), backend, "emb")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"is empty"):
        TrainingDataset.prepare(options(tmp_path / "empty"), backend, "emb")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    (bad / "b.txt").write_text("caption", encoding="utf-8")
    (bad / "c.doc").write_bytes(b"x")
    before = snapshot(tmp_path)
    with pytest.raises(DatasetError, match=r"No readable images in dataset folder .*bad") as info:
        TrainingDataset.prepare(options(bad), backend, "emb")
    # the image that failed is named; the folder's other files are never listed (an API client may
    # name any server folder)
    assert "a.png: not a readable image" in str(info.value) and "c.doc" not in str(info.value)
    assert snapshot(tmp_path) == before
    # Readable headers whose pixels are all broken: found while caching, same error.
    broken = tmp_path / "broken"
    broken.mkdir()
    noise_image(0, (64, 64)).save(tmp_path / "ok.png")
    (broken / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:300])
    with pytest.raises(DatasetError, match=r"(?s)every image failed to decode.*cut\.png"):
        TrainingDataset.prepare(options(broken), backend, "emb")


def test_demo_dataset_trains_through_prepare(backend, tmp_path):
    data = make_demo_dataset(tmp_path / "demo", n=4, size=SIZE)
    ds = TrainingDataset.prepare(options(data, template="subject_filewords", shuffle_tags=True), backend, "cat")
    assert len(ds) == 4
    prompts = ds.prompts([0, 1, 2, 3], gen(0))
    assert all("cat face" in p and "background" in p and "cat" in p for p in prompts)


def test_non_finite_latents_are_caught_when_caching_and_name_the_image(tmp_path):
    from extension.backends.tiny import build_tiny_backend
    from extension.training.config import TrainConfig
    from extension.training.loop import train

    data = make_demo_dataset(tmp_path / "imgs", n=2, size=32, seed=2)
    backend = build_tiny_backend("sdxl")
    with torch.no_grad():  # an encoder that overflows, as SDXL's VAE does in float16
        backend.vae.encoder.conv_in.weight.mul_(1e38)
    cfg = TrainConfig(
        name="nan", data=str(data), width=32, height=32, template="subject", max_steps=1,
        log_dir=str(tmp_path / "l"), embeddings_dir=str(tmp_path / "e"), progress_bar=False, tensorboard=False,
    )  # fmt: skip
    with pytest.raises(DatasetError) as info:
        train(cfg, backend)
    message = str(info.value)
    assert "non-finite latents" in message and backend.vae_nan_hint in message
    assert all(p.name in message for p in data.glob("*.png"))
    assert not (tmp_path / "l").exists() and not (tmp_path / "e").exists()
