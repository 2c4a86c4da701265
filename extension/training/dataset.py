"""The training dataset: images, captions, prompt templates, buckets and the cached latents.

:meth:`TrainingDataset.prepare` checks the options (before any work), reads the image folder and
encodes every image once through the backend's VAE, streaming (decode, encode, drop the pixels).
During training the trainer asks for:

* :meth:`~TrainingDataset.micro_batches`: an infinite, deterministic stream of index lists;
* :meth:`~TrainingDataset.prompts`, :meth:`~TrainingDataset.latents`,
  :meth:`~TrainingDataset.loss_weights`, :meth:`~TrainingDataset.sizes` for one micro-batch.

All randomness comes from the ``torch.Generator`` the trainer passes in, so a resumed run
reproduces a straight one without saving RNG state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backends.base import Backend, SizeConditioning
from .buckets import Size, make_buckets, nearest_bucket
from .captions import caption_for, compile_word_regex, normalise_extension
from .images import (
    IMAGE_EXTENSIONS,
    DatasetError,
    ImageReadError,
    alpha_loss_weight,
    apply_plan,
    decode_image,
    flatten,
    plan_center_crop,
    probe_image,
    scan_folder,
    to_pixels,
)
from .latent_cache import SAMPLING_MODES, DatasetInterrupted, LatentCache, encode_pixels
from .templates import load_template, render_prompt, template_dirs

__all__ = [
    "DatasetError",
    "DatasetInterrupted",
    "DatasetOptions",
    "ImageRecord",
    "TrainingDataset",
    "check_options",
]

MAX_BUCKET_RATIO = 2.0
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class DatasetOptions:
    """Everything that defines a training dataset (see the module docstring)."""

    data_root: Path
    width: int = 512  # multiples of 8
    height: int = 512
    repeats: int = 1  # times each image appears per epoch
    template: str = "subject_filewords"  # a template name or a path to a .txt file
    caption_extension: str = ".txt"
    filename_word_regex: str = ""
    filename_join: str = " "
    shuffle_tags: bool = False
    tag_dropout: float = 0.0
    flip_probability: float = 0.0
    # RGBA images are composited onto white; with this set, their alpha (at latent resolution,
    # mean 1) weights the loss per pixel instead.
    alpha_as_loss_weight: bool = False
    latent_sampling: str = "once"  # "once" | "deterministic" | "random"
    buckets: bool = False  # variable size with aspect-ratio buckets of area <= width*height
    bucket_step: int = 64  # bucket sides are multiples of this (a multiple of 8)
    extra_template_dirs: tuple[Path, ...] = ()  # e.g. the web UI's textual_inversion_templates
    encode_batch_size: int = 4  # images per VAE call while caching


@dataclass(frozen=True)
class ImageRecord:
    """One usable training image."""

    path: Path
    caption: str
    caption_file: Path | None  # None: the caption came from the file name
    original_size: Size  # (w, h) after EXIF orientation
    bucket: Size  # (w, h) the image is trained at
    crop_top_left: tuple[int, int]  # (top, left) inside the cover-resized image


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DatasetError(f"{what} must be a number, got {value!r}.")
    return float(value)


def _validate_numbers(options: DatasetOptions) -> None:
    for label, value in (("Width", options.width), ("Height", options.height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 8:
            raise DatasetError(
                f"{label} {value!r} is not a positive multiple of 8: use e.g. 512, 768 or 1024 "
                f"(the VAE works on 8x8 pixel cells)."
            )
    if isinstance(options.repeats, bool) or not isinstance(options.repeats, int) or options.repeats < 1:
        raise DatasetError(f"Repeats per epoch must be a whole number >= 1, got {options.repeats!r}.")
    for label, value in (("Tag dropout", options.tag_dropout), ("Flip probability", options.flip_probability)):
        if not 0.0 <= _number(value, label) <= 1.0:
            raise DatasetError(f"{label} must be between 0 and 1, got {value!r}.")
    if options.latent_sampling not in SAMPLING_MODES:
        raise DatasetError(
            f"Unknown latent sampling method {options.latent_sampling!r}: use one of {', '.join(SAMPLING_MODES)}."
        )
    step = options.bucket_step
    if isinstance(step, bool) or not isinstance(step, int) or step <= 0 or step % 8:
        raise DatasetError(f"Bucket step {step!r} is not a positive multiple of 8: use 64 (or 8 for tiny images).")
    size = options.encode_batch_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DatasetError(f"Encode batch size must be a whole number >= 1, got {size!r}.")


@dataclass
class _Checked:
    lines: list[str]
    caption_extension: str
    candidates: list[Path]
    skipped: list[tuple[Path, str]]
    buckets: list[Size]


def _describe_skipped(skipped: Sequence[tuple[Path, str]], limit: int = 10) -> str:
    shown = [f"  {path.name}: {reason}" for path, reason in skipped[:limit]]
    if len(skipped) > limit:
        shown.append(f"  ... and {len(skipped) - limit} more")
    return "\n".join(shown)


def _check(options: DatasetOptions) -> _Checked:
    _validate_numbers(options)
    lines = load_template(options.template, template_dirs(options.extra_template_dirs))
    compile_word_regex(options.filename_word_regex)
    caption_extension = normalise_extension(options.caption_extension)
    if caption_extension.lower() in IMAGE_EXTENSIONS:
        raise DatasetError(
            f"Caption extension {options.caption_extension!r} is an image extension: use '.txt' or similar."
        )
    folder = Path(options.data_root)
    candidates, skipped = scan_folder(folder, caption_extension)
    readable: list[Path] = []
    for path in candidates:
        try:
            probe_image(path)
        except ImageReadError as exc:
            skipped.append((path, str(exc)))
        else:
            readable.append(path)
    if not readable:
        # only the images that failed are named: other files of a folder are never listed
        unreadable = [item for item in skipped if item[0].suffix.lower() in IMAGE_EXTENSIONS]
        raise DatasetError(
            f"No readable images in dataset folder {str(folder)!r}: add png, jpg or webp images to it "
            f"(supported extensions: {', '.join(IMAGE_EXTENSIONS)})."
            + (f" Unreadable images:\n{_describe_skipped(unreadable)}" if unreadable else "")
        )
    if options.buckets:
        buckets = make_buckets(options.width, options.height, options.bucket_step, MAX_BUCKET_RATIO)
    else:
        buckets = [(options.width, options.height)]
    return _Checked(lines, caption_extension, readable, skipped, buckets)


def check_options(options: DatasetOptions) -> None:
    """Check ``options`` without a model: numbers, template, regex, folder and image headers.

    Raises :class:`DatasetError` naming the problem and the fix. Reads, never writes.
    """
    _check(options)


def _mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 steps), stable across runs and platforms."""
    state = 0x9E3779B97F4A7C15
    mask = (1 << 64) - 1
    for value in values:
        state = (state ^ (int(value) & mask)) & mask
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        state = z ^ (z >> 31)
    return state >> 1


@contextlib.contextmanager
def _progress_reporter(progress: Progress | None, total: int) -> Iterator[Progress]:
    """``progress`` itself, or a tqdm bar (if tqdm is installed) when no callback was given."""
    if progress is not None:
        yield progress
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        yield lambda done, total: None
        return
    bar = tqdm(total=total, desc="Caching latents", unit="img", leave=False)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


class TrainingDataset:
    """Prepared training data; build it with :meth:`prepare`."""

    def __init__(
        self,
        options: DatasetOptions,
        name: str,
        records: list[ImageRecord],
        lines: list[str],
        cache: LatentCache,
        weights: dict[int, torch.Tensor],
        skipped: list[tuple[Path, str]],
        latent_factor: int,
    ) -> None:
        self.options = options
        self.name = name
        self.records = records
        self.template_lines = lines
        self.skipped = skipped
        self._cache = cache
        self._weights = weights
        self._latent_factor = latent_factor
        self._bucket_ids: list[int] = []
        self.buckets: dict[Size, list[int]] = {}
        for index, record in enumerate(records):
            self.buckets.setdefault(record.bucket, []).append(index)
        bucket_order = {size: k for k, size in enumerate(self.buckets)}
        self._bucket_ids = [bucket_order[r.bucket] for r in records]
        self._last_flips: tuple[tuple[int, ...], list[bool]] | None = None

    # ----------------------------------------------------------------------------------- building
    @classmethod
    def prepare(
        cls,
        options: DatasetOptions,
        backend: Backend,
        name: str,
        *,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None,
        seed: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> TrainingDataset:
        """Read the images and cache their latents through ``backend.encode_images``.

        ``progress(done, total)`` is called as images are encoded (a tqdm bar is shown when it is
        ``None``); ``should_stop()`` returning true raises :class:`DatasetInterrupted`. ``seed`` seeds
        the one sample drawn per image in ``"once"`` mode. Unreadable images are skipped and listed in
        ``.skipped``; bad options raise :class:`DatasetError` before any image is decoded.
        ``shard=(k, n)`` encodes only the images whose index is ``k`` modulo ``n`` (one training
        process's share); :meth:`latent_entries` / :meth:`add_latent_entries` exchange the rest.
        """
        checked = _check(options)
        factor = int(backend.vae_scale_factor)
        for label, value in (("Width", options.width), ("Height", options.height)):
            if value % factor:
                raise DatasetError(f"{label} {value} is not a multiple of the model's VAE factor {factor}.")
        if options.buckets and options.bucket_step % factor:
            raise DatasetError(f"Bucket step {options.bucket_step} is not a multiple of the VAE factor {factor}.")
        word_regex = compile_word_regex(options.filename_word_regex)
        captions = {
            path: caption_for(path, checked.caption_extension, word_regex, options.filename_join)
            for path in checked.candidates
        }
        cache = LatentCache(options.latent_sampling, backend.latent_scale, seed)
        builder = _Builder(options, backend, cache, checked.buckets, factor, shard)
        skipped = list(checked.skipped)
        records: list[ImageRecord] = []
        total = len(checked.candidates)
        with _progress_reporter(progress, total) as report:
            report(0, total)
            for position, path in enumerate(checked.candidates):
                if should_stop is not None and should_stop():
                    raise DatasetInterrupted(
                        f"latent caching interrupted after {position - builder.pending} of {total} images"
                    )
                try:
                    record = builder.add(len(records), path, *captions[path])
                except ImageReadError as exc:
                    skipped.append((path, str(exc)))
                else:
                    records.append(record)
                if builder.flush_full():
                    report(position + 1 - builder.pending, total)
            builder.flush_all()
            report(total, total)
        if not records:
            raise DatasetError(
                f"No readable images in dataset folder {str(options.data_root)!r}: every image failed to "
                f"decode. Replace or re-save these files:\n{_describe_skipped(skipped)}"
            )
        skipped.sort(key=lambda item: item[0].name)
        return cls(options, name, records, checked.lines, cache, builder.weights, skipped, factor)

    def latent_entries(self, shard: tuple[int, int]) -> dict:
        """The cached latents of the images in ``shard`` (index ``k`` modulo ``n``)."""
        k, n = shard
        return self._cache.entries({i for i in range(len(self.records)) if i % n == k})

    def add_latent_entries(self, entries: dict) -> None:
        """Cached latents that another training process encoded."""
        self._cache.add_entries(entries)

    # ------------------------------------------------------------------------------------ access
    def __len__(self) -> int:
        """The number of images (without repeats)."""
        return len(self.records)

    @property
    def has_loss_weights(self) -> bool:
        """Whether :meth:`loss_weights` returns weights (alpha used and some image had alpha)."""
        return bool(self._weights)

    def epoch_order(self, seed: int, epoch: int) -> list[int]:
        """Epoch ``epoch``'s order: a permutation of all indices x repeats, seeded by (seed, epoch)."""
        n = len(self.records)
        generator = torch.Generator().manual_seed(_mix_seed(seed, epoch))
        positions = torch.randperm(n * self.options.repeats, generator=generator)
        return (positions % n).tolist()

    def micro_batches(self, batch_size: int, seed: int, start: int = 0) -> Iterator[list[int]]:
        """An infinite, deterministic stream of micro-batches of image indices.

        Epoch ``e`` visits :meth:`epoch_order` ``(seed, e)``; each index joins the queue of its bucket
        and a batch is emitted as soon as a queue holds ``batch_size`` indices, so batches never mix
        buckets and what is left at an epoch's end is carried into the next one, never dropped.
        ``start`` skips the first ``start`` batches: the stream from ``start`` on is the same as the
        full stream's. A ``batch_size`` above the bucket size yields batches with repeated images.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch size must be a whole number >= 1, got {batch_size!r}")
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be a whole number >= 0, got {start!r}")
        return self._stream(batch_size, seed, start)

    def _stream(self, batch_size: int, seed: int, start: int) -> Iterator[list[int]]:
        queues: list[list[int]] = [[] for _ in self.buckets]
        bucket_ids = self._bucket_ids
        emitted = 0
        epoch = 0
        while True:
            for index in self.epoch_order(seed, epoch):
                queue = queues[bucket_ids[index]]
                queue.append(index)
                if len(queue) == batch_size:
                    batch = queue.copy()
                    queue.clear()
                    if emitted >= start:
                        yield batch
                    emitted += 1
            epoch += 1

    def _check_indices(self, indices: Sequence[int]) -> list[int]:
        n = len(self.records)
        out = [int(i) for i in indices]
        if not out:
            raise ValueError("indices must not be empty")
        bad = [i for i in out if not 0 <= i < n]
        if bad:
            raise IndexError(f"image indices {bad} out of range for a dataset of {n} images")
        return out

    def prompts(self, indices: Sequence[int], generator: torch.Generator) -> list[str]:
        """One prompt per index: a template line with ``[name]`` and ``[filewords]`` filled in."""
        o = self.options
        return [
            render_prompt(
                self.template_lines,
                self.name,
                self.records[i].caption,
                generator,
                shuffle_tags=o.shuffle_tags,
                tag_dropout=o.tag_dropout,
            )
            for i in self._check_indices(indices)
        ]

    def draw_flips(self, count: int, generator: torch.Generator) -> list[bool]:
        """Which of ``count`` examples are flipped (no draw at all when the probability is 0)."""
        p = float(self.options.flip_probability)
        if p <= 0:
            return [False] * count
        return (torch.rand(count, generator=generator) < p).tolist()

    def latents(self, indices: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """Scaled latents ``(B, C, h, w)`` float32 on the CPU; flips (then samples) drawn from ``generator``.

        The flips chosen are remembered for :meth:`loss_weights` of the same indices.
        """
        idx = self._check_indices(indices)
        flips = self.draw_flips(len(idx), generator)
        self._last_flips = (tuple(idx), flips)
        return self._cache.batch(idx, flips, generator)

    @property
    def last_flips(self) -> tuple[tuple[int, ...], list[bool]] | None:
        """The indices of the last :meth:`latents` call and which of them were flipped."""
        return self._last_flips

    def loss_weights(self, indices: Sequence[int], flips: Sequence[bool] | None = None) -> torch.Tensor | None:
        """Per-pixel loss weights ``(B, 1, h, w)`` (each map mean 1), or ``None`` when not used.

        Maps are flipped like the latents: by ``flips`` if given, else as chosen by the last
        :meth:`latents` call for the same indices (call that first), else unflipped. Images without
        alpha get all ones.
        """
        if not self._weights:
            return None
        idx = self._check_indices(indices)
        if flips is None:
            last = self._last_flips
            flips = last[1] if last is not None and last[0] == tuple(idx) else [False] * len(idx)
        maps = []
        for i, flip in zip(idx, flips):
            w, h = self.records[i].bucket
            weight = self._weights.get(i)
            if weight is None:
                weight = torch.ones(1, h // self._latent_factor, w // self._latent_factor)
            maps.append(torch.flip(weight, dims=[-1]) if flip else weight)
        if len({tuple(m.shape) for m in maps}) > 1:
            raise ValueError(f"indices {idx} mix buckets: a micro-batch must come from one bucket")
        return torch.stack(maps)

    def sizes(self, indices: Sequence[int]) -> list[SizeConditioning]:
        """SDXL size conditioning per index: original size, crop offset, target size (all (h, w)).

        The crop offset is that of the unflipped image; a centred crop of a mirror image differs
        from it by at most one pixel.
        """
        out = []
        for i in self._check_indices(indices):
            r = self.records[i]
            out.append(
                SizeConditioning(
                    original_size=(r.original_size[1], r.original_size[0]),
                    crop_top_left=r.crop_top_left,
                    target_size=(r.bucket[1], r.bucket[0]),
                )
            )
        return out


class _Builder:
    """Streams images into the latent cache: decode, queue per bucket, encode in small batches."""

    def __init__(
        self,
        options: DatasetOptions,
        backend: Backend,
        cache: LatentCache,
        buckets: list[Size],
        factor: int,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.options = options
        self.shard = shard
        self.backend = backend
        self.cache = cache
        self.bucket_sizes = buckets
        self.factor = factor
        self.queues: dict[Size, list[tuple[int, torch.Tensor]]] = {}
        self.weights: dict[int, torch.Tensor] = {}
        self.paths: dict[int, Path] = {}

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def add(self, index: int, path: Path, caption: str, caption_file: Path | None) -> ImageRecord:
        decoded = decode_image(path)
        bucket = nearest_bucket(decoded.size, self.bucket_sizes)
        plan = plan_center_crop(decoded.size, bucket)
        if decoded.alpha is not None and self.options.alpha_as_loss_weight:
            weight = alpha_loss_weight(decoded.alpha, plan, self.factor)
            if weight is None:
                raise ImageReadError("fully transparent (alpha is 0 everywhere), nothing to train on")
            self.weights[index] = weight
        if index % self.shard[1] == self.shard[0]:  # another process encodes the others
            pixels = to_pixels(apply_plan(flatten(decoded.rgb, decoded.alpha), plan))
            self.queues.setdefault(bucket, []).append((index, pixels))
        self.paths[index] = path
        return ImageRecord(path, caption, caption_file, decoded.size, bucket, plan.crop_top_left)

    def _encode(self, items: list[tuple[int, torch.Tensor]]) -> None:
        pixels = torch.stack([p for _, p in items])
        flip = self.options.flip_probability > 0
        if flip:
            pixels = torch.cat([pixels, torch.flip(pixels, dims=[-1])])
        mean, std = encode_pixels(self.backend, pixels)
        n = len(items)
        self._check_finite([index for index, _ in items] * (2 if flip else 1), mean, std)
        for k, (index, _) in enumerate(items):
            self.cache.store(index, False, mean[k], std[k])
            if flip:
                self.cache.store(index, True, mean[n + k], std[n + k])

    def _check_finite(self, indices: list[int], mean: torch.Tensor, std: torch.Tensor) -> None:
        """Non-finite latents (an fp16 VAE that overflows, as SDXL's does) stop before any training."""
        finite = torch.isfinite(mean).flatten(1).all(1) & torch.isfinite(std).flatten(1).all(1)
        if bool(finite.all()):
            return
        bad = sorted({self.paths[indices[k]].name for k in torch.nonzero(~finite).flatten().tolist()})
        hint = getattr(self.backend, "vae_nan_hint", "") or "encode the images with a float32 VAE"
        raise DatasetError(
            f"the VAE gave non-finite latents (NaN or infinity) for {', '.join(bad)}; {hint}"
        )

    def flush_full(self) -> bool:
        """Encode every queue that holds a full encode batch; whether anything was encoded."""
        done = False
        for bucket, queue in self.queues.items():
            if len(queue) >= self.options.encode_batch_size:
                self._encode(queue)
                self.queues[bucket] = []
                done = True
        return done

    def flush_all(self) -> None:
        for bucket, queue in self.queues.items():
            if queue:
                self._encode(queue)
                self.queues[bucket] = []
