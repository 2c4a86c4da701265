"""Image reading: colour modes, EXIF orientation, bombs, flattening, crop plans, alpha weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from extension.training.images import (
    DatasetError,
    ImageReadError,
    alpha_loss_weight,
    apply_plan,
    decode_image,
    flatten,
    normalise_modes,
    plan_center_crop,
    probe_image,
    scan_folder,
    to_pixels,
)


def _rgb(decoded) -> np.ndarray:
    return np.asarray(decoded.rgb)


def test_grayscale_png_becomes_rgb_with_equal_channels(tmp_path):
    values = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (4, 1))
    Image.fromarray(values, mode="L").save(tmp_path / "g.png")
    decoded = decode_image(tmp_path / "g.png")
    assert decoded.rgb.mode == "RGB" and decoded.alpha is None
    rgb = _rgb(decoded)
    for c in range(3):
        assert np.array_equal(rgb[..., c], values)


def test_cmyk_tiff_is_converted_to_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.tif")
    assert Image.open(tmp_path / "c.tif").mode == "CMYK"
    rgb = _rgb(decode_image(tmp_path / "c.tif"))
    assert (rgb == np.array([255, 0, 0])).all()


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    Image.new("CMYK", (16, 16), (255, 0, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    rgb = _rgb(decode_image(tmp_path / "c.jpg")).astype(int)
    assert abs(rgb[..., 0].mean() - 0) < 12 and abs(rgb[..., 1].mean() - 255) < 12 and rgb[..., 2].mean() < 12


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    eight = np.array([[0, 1, 64, 128, 200, 255]], dtype=np.uint16)
    Image.fromarray(eight * 257).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    rgb = _rgb(decode_image(tmp_path / "deep.png"))
    assert np.array_equal(rgb[..., 0], eight.astype(np.uint8))
    assert np.array_equal(rgb[..., 1], rgb[..., 2])


def test_32bit_integer_mode_holding_16bit_values_is_scaled():
    values = np.array([[0, 257 * 10, 257 * 100, 65535]], dtype=np.int32)
    decoded = normalise_modes(Image.fromarray(values, mode="I"))
    assert decoded.rgb.getpixel((1, 0)) == (10, 10, 10)
    assert decoded.rgb.getpixel((3, 0)) == (255, 255, 255)


def test_float_mode_in_unit_range_is_scaled():
    decoded = normalise_modes(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F"))
    assert [decoded.rgb.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_palette_with_transparency_keeps_alpha(tmp_path):
    image = Image.new("P", (8, 4), 0)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * (254 * 3))
    image.paste(1, (4, 0, 8, 4))
    image.save(tmp_path / "p.png", transparency=0)
    decoded = decode_image(tmp_path / "p.png")
    assert decoded.alpha is not None
    alpha = np.asarray(decoded.alpha)
    assert (alpha[:, :4] == 0).all() and (alpha[:, 4:] == 255).all()
    assert decoded.rgb.getpixel((6, 1)) == (10, 200, 30)
    assert flatten(decoded.rgb, decoded.alpha).getpixel((1, 1)) == (255, 255, 255)


def test_palette_without_transparency_is_plain_rgb(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 90, 60, 30] + [0] * (254 * 3))
    image.save(tmp_path / "p.png")
    decoded = decode_image(tmp_path / "p.png")
    assert decoded.alpha is None and decoded.rgb.getpixel((0, 0)) == (90, 60, 30)


def test_rgba_is_flattened_onto_white_not_dropped(tmp_path):
    array = np.zeros((4, 8, 4), dtype=np.uint8)
    array[..., 0] = 200  # red under every pixel, also the transparent ones
    array[:, 4:, 3] = 255
    array[:, 2:4, 3] = 128
    Image.fromarray(array, mode="RGBA").save(tmp_path / "a.png")
    decoded = decode_image(tmp_path / "a.png")
    flat = np.asarray(flatten(decoded.rgb, decoded.alpha)).astype(int)
    assert (flat[:, :2] == [255, 255, 255]).all()  # transparent: background, not the hidden red
    assert (flat[:, 4:] == [200, 0, 0]).all()
    assert np.allclose(flat[:, 2:4], [227, 127, 127], atol=2)  # half: a blend


def test_la_image_has_alpha(tmp_path):
    image = Image.new("LA", (4, 4), (100, 0))
    image.putpixel((0, 0), (100, 255))
    image.save(tmp_path / "la.png")
    decoded = decode_image(tmp_path / "la.png")
    assert decoded.alpha is not None and decoded.alpha.getpixel((0, 0)) == 255
    assert decoded.rgb.getpixel((0, 0)) == (100, 100, 100)


def test_opaque_alpha_is_dropped(tmp_path):
    Image.new("RGBA", (4, 4), (1, 2, 3, 255)).save(tmp_path / "o.png")
    assert decode_image(tmp_path / "o.png").alpha is None


def test_exif_orientation_is_applied(tmp_path):
    stored = Image.new("RGB", (32, 16), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 16, 16))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # the stored image must be rotated 90 degrees clockwise for display
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    assert Image.open(tmp_path / "phone.jpg").getexif()[0x0112] == 6
    decoded = decode_image(tmp_path / "phone.jpg")
    assert decoded.size == (16, 32)
    top = np.asarray(decoded.rgb)[2:12].reshape(-1, 3).mean(0)
    bottom = np.asarray(decoded.rgb)[20:30].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 50
    assert bottom[2] > 200 and bottom[0] < 50


def test_webp_and_bmp_are_read(tmp_path):
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "x.bmp")
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "x.webp", lossless=True)
    for name in ("x.bmp", "x.webp"):
        assert decode_image(tmp_path / name).rgb.getpixel((3, 3)) == (10, 20, 30)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    """Only a header above our own decode limit is refused (a bomb, or gigabytes to decode), with
    what is wrong and the fix; Pillow's own check (twice its MAX_IMAGE_PIXELS) reads the same."""
    from extension.training import images

    Image.new("RGB", (40, 40)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_DECODE_PIXELS", 1000)
    for read in (probe_image, decode_image):
        with pytest.raises(ImageReadError, match=r"40x40 .*decompression bomb.*save a smaller copy"):
            read(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_DECODE_PIXELS", 10**9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # Pillow refuses above 1000 before we look
    with pytest.raises(ImageReadError, match=r"decompression bomb.*save a smaller copy"):
        decode_image(tmp_path / "big.png")


def test_corrupt_and_truncated_files_raise_read_errors(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all")
    with pytest.raises(ImageReadError, match="not a readable image"):
        probe_image(tmp_path / "junk.png")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert probe_image(tmp_path / "cut.png") == (64, 64)  # the header is fine ...
    with pytest.raises(ImageReadError, match="cannot be decoded"):
        decode_image(tmp_path / "cut.png")  # ... the pixels are not


def test_scan_folder_lists_images_and_skips_other_files(tmp_path):
    for name in ("b.png", "a.JPG", "c.webp", "a.txt", "notes.md", ".hidden.png", "d.HEIC", "passwd"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    images, skipped = scan_folder(tmp_path)
    assert [p.name for p in images] == ["a.JPG", "b.png", "c.webp"]
    # only pictures in formats we do not read are named; other files never appear in a message
    assert [(p.name, "not supported; save it as .png" in why) for p, why in skipped] == [("d.HEIC", True)]


def test_scan_folder_errors_name_the_folder_and_the_fix(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist.*create it"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        scan_folder(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "sub").mkdir()
    with pytest.raises(DatasetError, match=r"empty.*put your training images") as info:
        scan_folder(tmp_path / "empty")
    assert "empty" in str(info.value) and str(tmp_path / "empty") in str(info.value)


def test_center_crop_of_a_wide_image():
    plan = plan_center_crop((200, 100), (64, 64))
    assert plan.resized_size == (128, 64)
    assert plan.crop_top_left == (0, 32)
    assert plan.source_box == pytest.approx((50, 0, 150, 100))
    image = Image.new("RGB", (200, 100), (0, 0, 255))
    image.paste((255, 0, 0), (50, 0, 150, 100))
    out = np.asarray(apply_plan(image, plan))
    assert out.shape == (64, 64, 3)
    # The filter sees a little beyond the crop edge, like resizing first and cropping after would.
    inner = out[:, 2:-2]
    assert (inner[..., 0] > 250).all() and (inner[..., 2] < 5).all()


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 3000), st.integers(1, 3000), st.integers(1, 40).map(lambda k: 8 * k), st.integers(1, 40).map(lambda k: 8 * k)
)
def test_crop_plan_properties(sw, sh, tw, th):
    plan = plan_center_crop((sw, sh), (tw, th))
    left, top, right, bottom = plan.source_box
    eps = 1e-6 * max(sw, sh, 1)
    assert -eps <= left < right <= sw + eps and -eps <= top < bottom <= sh + eps
    # The crop keeps the target's aspect ratio (no stretching) up to one resized pixel.
    rw, rh = plan.resized_size
    assert rw >= tw and rh >= th
    assert (right - left) / (bottom - top) == pytest.approx(tw / th, rel=2 / min(rw, rh) + 0.02)
    ct, cl = plan.crop_top_left
    assert 0 <= ct <= rh - th and 0 <= cl <= rw - tw
    # Centred: the margins on both sides differ by at most one pixel.
    assert abs((rw - tw - cl) - cl) <= 1 and abs((rh - th - ct) - ct) <= 1
    # One side is not cropped at all.
    assert rw == tw or rh == th


def test_to_pixels_range_and_layout():
    image = Image.new("RGB", (3, 2), (0, 255, 128))
    pixels = to_pixels(image)
    assert pixels.shape == (3, 2, 3) and pixels.dtype == torch.float32
    assert pixels[0].eq(-1).all() and pixels[1].eq(1).all()
    assert pixels[2, 0, 0].item() == pytest.approx(128 / 127.5 - 1, abs=1e-6)


def test_alpha_weight_is_area_average_with_mean_one():
    alpha = Image.new("L", (64, 64), 0)
    alpha.paste(255, (32, 0, 64, 64))
    weight = alpha_loss_weight(alpha, plan_center_crop((64, 64), (64, 64)), 8)
    assert weight.shape == (1, 8, 8)
    assert weight.mean().item() == pytest.approx(1.0)
    assert weight[..., :4].eq(0).all() and torch.allclose(weight[..., 4:], torch.full((1, 8, 4), 2.0))


def test_alpha_weight_follows_the_crop_and_keeps_partial_alpha():
    # A wide image: only its centre square is kept; the transparent strip at the far left is cropped
    # away, the half-transparent band inside the crop keeps half the weight of the opaque part.
    alpha = Image.new("L", (128, 64), 255)
    alpha.paste(0, (0, 0, 32, 64))
    alpha.paste(128, (32, 0, 64, 64))
    weight = alpha_loss_weight(alpha, plan_center_crop((128, 64), (64, 64)), 8)
    assert weight.mean().item() == pytest.approx(1.0, abs=1e-6)
    left, right = weight[0, :, :4], weight[0, :, 4:]
    assert torch.allclose(left / right, torch.full_like(left, 128 / 255), atol=1e-3)


def test_alpha_weight_constant_and_empty():
    plan = plan_center_crop((16, 16), (16, 16))
    assert torch.equal(alpha_loss_weight(Image.new("L", (16, 16), 90), plan, 8), torch.ones(1, 2, 2))
    assert alpha_loss_weight(Image.new("L", (16, 16), 0), plan, 8) is None
