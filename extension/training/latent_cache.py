"""The latent cache: VAE encodings of the training images, computed once and kept on the CPU.

Three sampling modes (the web UI's names):

* ``"once"``: one sample of the VAE posterior is drawn when caching (from a generator seeded by
  the run's seed and the image, so the sample does not depend on the order images are cached in)
  and reused for the whole run.
* ``"deterministic"``: the posterior mean, no sampling noise at all.
* ``"random"``: the posterior (mean and std) is kept, and every use draws a fresh sample from the
  generator passed in. Unlike the web UI, the distribution lives on the CPU, not on the GPU.

Stored tensors are float32 on the CPU. They are not pinned: a micro-batch is stacked into a new
(pageable) tensor anyway, and its latents are a few hundred kilobytes, whose copy to the GPU costs
microseconds next to a training step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..backends.base import Backend
from .loss import derive_seed

SAMPLING_MODES = ("once", "deterministic", "random")


class DatasetInterrupted(Exception):
    """Latent caching was stopped by ``should_stop``; nothing was trained or written."""


def encode_pixels(backend: Backend, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode ``(B, 3, H, W)`` pixels in ``[-1, 1]``: the posterior (mean, std), unscaled, float32 CPU."""
    with torch.no_grad():
        dist = backend.encode_images(pixels.to(device=backend.device, dtype=backend.dtype))
    mean = dist.mean.detach().float().cpu()
    std = torch.as_tensor(dist.std).detach().float().cpu().expand_as(mean).contiguous()
    return mean, std


class LatentCache:
    """Per (image index, flipped) latents in one of :data:`SAMPLING_MODES`, scaled on the way out."""

    def __init__(self, mode: str, scale: float, seed: int = 0) -> None:
        if mode not in SAMPLING_MODES:
            raise ValueError(f"unknown latent sampling mode {mode!r}; expected one of {', '.join(SAMPLING_MODES)}")
        self.mode = mode
        self.scale = float(scale)
        self.seed = int(seed)  # seeds the single sample of "once" mode, per image
        self._values: dict[tuple[int, bool], torch.Tensor] = {}
        self._stds: dict[tuple[int, bool], torch.Tensor] = {}

    def __contains__(self, key: tuple[int, bool]) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)

    def store(self, index: int, flipped: bool, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Keep the posterior of one image (``(C, h, w)`` unscaled mean and std) as the mode says."""
        key = (int(index), bool(flipped))
        mean = mean.detach().float().cpu()
        std = std.detach().float().cpu()
        if self.mode == "once":
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "once", *key))
            noise = torch.randn(mean.shape, generator=generator, dtype=torch.float32)
            self._values[key] = ((mean + std * noise) * self.scale).contiguous()
        elif self.mode == "deterministic":
            self._values[key] = (mean * self.scale).contiguous()
        else:
            self._values[key] = mean.contiguous()
            self._stds[key] = std.contiguous()

    def entries(self, indices: set[int] | None = None) -> dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor | None]]:
        """The cached values (and stds in "random" mode) by (index, flipped), for ``indices`` or all."""
        return {
            key: (value, self._stds.get(key))
            for key, value in self._values.items()
            if indices is None or key[0] in indices
        }

    def add_entries(self, entries: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor | None]]) -> None:
        """Take cached values made elsewhere (another training process), as :meth:`entries` gives them."""
        for key, (value, std) in entries.items():
            self._values[key] = value
            if std is not None:
                self._stds[key] = std

    def shape(self, index: int) -> torch.Size:
        """The latent shape ``(C, h, w)`` of image ``index``."""
        return self._values[(int(index), False)].shape

    def get(self, index: int, flipped: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """The scaled latent of one image; in ``"random"`` mode a fresh sample drawn from ``generator``."""
        key = (int(index), bool(flipped))
        if key not in self._values:
            which = "flipped latent" if flipped else "latent"
            raise KeyError(f"no cached {which} for image {index}")
        value = self._values[key]
        if self.mode != "random":
            return value
        noise = torch.randn(value.shape, generator=generator, dtype=torch.float32)
        return (value + self._stds[key] * noise) * self.scale

    def batch(
        self, indices: Sequence[int], flips: Sequence[bool], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Stacked latents ``(B, C, h, w)``; all indices must share one latent shape (one bucket)."""
        items = [self.get(i, f, generator) for i, f in zip(indices, flips)]
        shapes = {tuple(t.shape) for t in items}
        if len(shapes) > 1:
            raise ValueError(
                f"indices {list(indices)} mix latent shapes {sorted(shapes)}: a micro-batch must come "
                f"from one bucket (use TrainingDataset.micro_batches)"
            )
        return torch.stack(items)
