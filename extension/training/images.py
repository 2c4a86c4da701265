"""Reading training images: folder scan, safe decoding, colour-mode normalisation, resize and crop.

Every image ends up as 8-bit RGB plus an optional 8-bit alpha channel:

* EXIF orientation is applied (a phone photo stored sideways is trained upright).
* Grayscale, bilevel, CMYK, YCbCr, LAB and HSV images are converted to RGB.
* 16-bit images (``I;16*``, and ``I`` holding 16-bit values) are *scaled* to 8 bits (65535 -> 255);
  Pillow's own ``convert`` clips them, turning almost every pixel white.
* Palette images with a transparent index, ``LA``/``PA`` and premultiplied modes become RGB + alpha.
* Transparent images are composited onto :data:`FLATTEN_BACKGROUND` (white) before resizing. Simply
  dropping the alpha channel (what the web UI does) trains on whatever colour happens to sit under the
  transparent pixels, often black or garbage.

Big photos are reduced while decoding (JPEG decodes at 1/2, 1/4 or 1/8 scale, others are box-reduced)
to at least :data:`KEEP_SIDE` px on the shorter side, which still covers any training size. Only
images above :data:`MAX_DECODE_PIXELS` are refused, from their header, before decoding: such sizes
are what decompression bombs claim, and would take gigabytes to decode.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# pictures in formats we do not read: named as skipped; any other file is passed over silently, so
# that no message ever lists a folder's other files (an API client may name any server folder)
OTHER_PICTURE_EXTENSIONS = (
    ".gif", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".svg", ".psd", ".ico", ".raw", ".dng", ".cr2", ".nef", ".arw",
)
FLATTEN_BACKGROUND = (255, 255, 255)
RESAMPLE = Image.Resampling.LANCZOS
MAX_DECODE_PIXELS = 150_000_000  # about 12000x12000: 450 MB as 8-bit RGB; bigger headers are refused
KEEP_SIDE = 4096  # reduced images keep at least this shorter side (the largest training side)
BIG_PIXELS = 40_000_000  # above this, a note says that pre-shrunk copies would load faster
UPSCALE_NOTE = 2.0  # images enlarged more than this for the training size get a note


class DatasetError(ValueError):
    """Bad dataset input; the message names the problem and how to fix it."""


class ImageReadError(Exception):
    """One image could not be used; the message is the reason shown in the skipped list."""


@dataclass
class DecodedImage:
    """An image normalised to 8-bit RGB, with its alpha channel (mode ``L``) if it had one."""

    rgb: Image.Image
    alpha: Image.Image | None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) after EXIF orientation."""
        return self.rgb.size


def scan_folder(folder: Path, caption_extension: str = ".txt") -> tuple[list[Path], list[tuple[Path, str]]]:
    """The candidate image files of ``folder`` (sorted by name) and the files that are skipped.

    Pictures in formats that are not read (:data:`OTHER_PICTURE_EXTENSIONS`) are listed as skipped;
    every other file (captions in ``caption_extension``, notes...), hidden files and sub-folders are
    passed over silently. Raises :class:`DatasetError` for a missing, non-folder or empty ``folder``.
    """
    folder = Path(folder)
    if not str(folder).strip():
        raise DatasetError("No dataset folder given: pass the folder that holds your training images.")
    if not folder.exists():
        raise DatasetError(
            f"Dataset folder {str(folder)!r} does not exist: check the path, or create it and put your "
            f"training images ({', '.join(IMAGE_EXTENSIONS)}) in it."
        )
    if not folder.is_dir():
        raise DatasetError(
            f"Dataset path {str(folder)!r} is a file, not a folder: pass the folder that holds the images."
        )
    entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    files = [p for p in entries if p.is_file()]
    if not files:
        raise DatasetError(
            f"Dataset folder {str(folder)!r} is empty: put your training images "
            f"({', '.join(IMAGE_EXTENSIONS)}) in it (sub-folders are not searched)."
        )
    images: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in files:
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            images.append(path)
        elif suffix in OTHER_PICTURE_EXTENSIONS:
            skipped.append((path, f"a {suffix} picture, which is not supported; save it as .png or .jpg"))
    return images, skipped


def _check_bomb(image: Image.Image) -> None:
    width, height = image.size
    if width * height > MAX_DECODE_PIXELS:
        raise ImageReadError(
            f"refused: {width}x{height} = {width * height / 1e6:.0f} million pixels is more than the "
            f"{MAX_DECODE_PIXELS / 1e6:.0f} million this trainer decodes (about {width * height * 3 / 2**30:.1f} GiB "
            "as RGB; a header this big is what a decompression bomb looks like); save a smaller copy, e.g. "
            f"at most {KEEP_SIDE * 2} px per side"
        )


def _open_refusal(exc: Exception) -> ImageReadError:
    """Pillow's own bomb check fires above twice its MAX_IMAGE_PIXELS, before ours can."""
    return ImageReadError(f"refused: {exc} - save a smaller copy, e.g. at most {KEEP_SIDE * 2} px per side")


def probe_image(path: Path) -> tuple[int, int]:
    """Open only the header of ``path``: its stored (width, height). Raises :class:`ImageReadError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            with Image.open(path) as image:
                _check_bomb(image)
                return image.size
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise _open_refusal(exc) from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError("not a readable image (unknown or corrupt format)") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"cannot be read: {exc}") from exc


def decode_image(path: Path, keep_side: int = KEEP_SIDE) -> DecodedImage:
    """Fully decode ``path`` into 8-bit RGB (+ alpha), reduced to at least ``keep_side`` px on the
    shorter side when bigger. Raises :class:`ImageReadError` with a reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            with Image.open(path) as image:
                _check_bomb(image)
                reduced = _load_reduced(image, keep_side)
                oriented = ImageOps.exif_transpose(reduced)
                return normalise_modes(oriented)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise _open_refusal(exc) from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError("not a readable image (unknown or corrupt format)") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageReadError(f"cannot be decoded: {exc}") from exc


def reduction_factor(size: tuple[int, int], keep_side: int = KEEP_SIDE) -> int:
    """The integer factor an image of ``size`` is reduced by so that its shorter side stays >= ``keep_side``."""
    return max(1, min(size) // keep_side)


def _load_reduced(image: Image.Image, keep_side: int) -> Image.Image:
    """Decode ``image``, reduced by :func:`reduction_factor` (a JPEG decodes at the smaller scale directly)."""
    factor = reduction_factor(image.size, keep_side)
    if factor > 1 and image.format == "JPEG":
        image.draft(image.mode, (image.size[0] // factor, image.size[1] // factor))
    image.load()
    factor = reduction_factor(image.size, keep_side)
    if factor == 1:
        return image
    try:
        return image.reduce(factor)
    except ValueError:  # a mode reduce() does not take (e.g. palette): resize does
        size = (max(1, image.size[0] // factor), max(1, image.size[1] // factor))
        return image.resize(size, Image.Resampling.BOX)


def image_size_notes(folder: Path, size: tuple[int, int]) -> list[str]:
    """Notes (before training) about the images of ``folder`` for the training ``size`` (w, h): those
    enlarged more than :data:`UPSCALE_NOTE` times (they train blurry) and those so big that loading
    them takes a while. Reads only headers."""
    small: list[tuple[str, tuple[int, int], float]] = []
    big: list[tuple[str, tuple[int, int]]] = []
    try:
        images, _ = scan_folder(folder)
    except DatasetError:
        return []
    for path in images:
        try:
            w, h = probe_image(path)
        except ImageReadError:
            continue
        scale = max(size[0] / w, size[1] / h)
        if scale > UPSCALE_NOTE:
            small.append((path.name, (w, h), scale))
        elif w * h > BIG_PIXELS:
            big.append((path.name, (w, h)))
    notes = []
    if small:
        shown = ", ".join(f"{name} {w}x{h} (x{scale:.0f})" for name, (w, h), scale in small[:3])
        more = f" and {len(small) - 3} more" if len(small) > 3 else ""
        notes.append(
            f"{len(small)} image(s) are much smaller than the training size {size[0]}x{size[1]} and are enlarged: "
            f"{shown}{more}; they train blurry - use bigger images or a smaller width/height"
        )
    if big:
        shown = ", ".join(f"{name} {w}x{h}" for name, (w, h) in big[:3])
        more = f" and {len(big) - 3} more" if len(big) > 3 else ""
        notes.append(
            f"{len(big)} image(s) are very large ({shown}{more}): they are reduced while loading, which takes a "
            "while; copies of at most 4096 px per side would load faster"
        )
    return notes


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit integer or float grayscale image to 8-bit ``L``."""
    values = np.asarray(image).astype(np.float64)
    if image.mode.startswith("I;16"):
        scaled = values / 257.0
    elif image.mode == "I" and values.size and values.min() >= 0 and values.max() <= 65535:
        # Pillow used to open 16-bit PNGs as "I"; values in 0..65535 are 16-bit samples.
        scaled = values / 257.0
    elif image.mode == "F" and values.size and values.min() >= 0 and values.max() <= 1:
        scaled = values * 255.0
    else:
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def normalise_modes(image: Image.Image) -> DecodedImage:
    """Convert any Pillow mode to 8-bit RGB plus an optional alpha channel (see the module docstring)."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        image = _high_depth_to_l(image)
        mode = "L"
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema()[0] == 255:
            return DecodedImage(rgba.convert("RGB"), None)
        return DecodedImage(rgba.convert("RGB"), alpha)
    return DecodedImage(image.convert("RGB") if mode != "RGB" else image.copy(), None)


def flatten(rgb: Image.Image, alpha: Image.Image | None, background=FLATTEN_BACKGROUND) -> Image.Image:
    """Composite ``rgb`` with straight ``alpha`` over a solid ``background`` colour."""
    if alpha is None:
        return rgb
    canvas = Image.new("RGB", rgb.size, background)
    canvas.paste(rgb, (0, 0), alpha)
    return canvas


@dataclass(frozen=True)
class CropPlan:
    """How a source image maps onto a target size: cover-resize, then a centred crop."""

    source_box: tuple[float, float, float, float]  # region of the source that becomes the target
    resized_size: tuple[int, int]  # (w, h) the whole source would have after the cover resize
    crop_top_left: tuple[int, int]  # (top, left) of the crop inside the resized image
    target_size: tuple[int, int]  # (w, h)


def plan_center_crop(source_size: tuple[int, int], target_size: tuple[int, int]) -> CropPlan:
    """Scale ``source_size`` to just cover ``target_size`` and centre the crop (aspect ratio kept)."""
    sw, sh = source_size
    tw, th = target_size
    if sw <= 0 or sh <= 0:
        raise ValueError(f"image size must be positive, got {sw}x{sh}")
    scale = max(tw / sw, th / sh)
    rw = max(tw, math.ceil(sw * scale - 1e-6))
    rh = max(th, math.ceil(sh * scale - 1e-6))
    left = (rw - tw) // 2
    top = (rh - th) // 2
    # Map the crop back into source coordinates so a single resize does both steps.
    sx, sy = sw / rw, sh / rh
    box = (left * sx, top * sy, (left + tw) * sx, (top + th) * sy)
    return CropPlan(box, (rw, rh), (top, left), (tw, th))


def apply_plan(image: Image.Image, plan: CropPlan, resample=RESAMPLE) -> Image.Image:
    """Resize-and-crop ``image`` according to ``plan``."""
    return image.resize(plan.target_size, resample, box=plan.source_box)


def to_pixels(rgb: Image.Image) -> torch.Tensor:
    """An RGB image as a ``(3, H, W)`` float32 tensor in ``[-1, 1]``."""
    array = np.asarray(rgb.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def alpha_loss_weight(alpha: Image.Image, plan: CropPlan, factor: int) -> torch.Tensor | None:
    """The alpha channel as a ``(1, h, w)`` loss-weight map at latent resolution, normalised to mean 1.

    Each latent cell gets the *area average* of the alpha under it (the web UI resamples bicubically
    to the latent size, which aliases thin edges). Like the web UI the map is divided by its mean, so
    the loss stays on the usual scale; unlike it, the minimum is not subtracted first: a uniformly
    half-transparent background keeps half the weight instead of none, and a fully opaque alpha gives
    all ones instead of 0/0. Returns ``None`` when the crop is fully transparent.
    """
    tw, th = plan.target_size
    latent_size = (tw // factor, th // factor)
    small = alpha.resize(latent_size, Image.Resampling.BOX, box=plan.source_box)
    weight = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).unsqueeze(0)
    mean = float(weight.mean())
    if mean <= 1e-6:
        return None
    return weight / mean
