"""Data-parallel training with PyTorch's own distributed runtime (``torchrun`` / ``torch.distributed``).

Every process holds the frozen model and computes its share of each micro-batch; only the
vectors' gradients (a few kilobytes) are averaged. The split is chosen so that N processes with
batch b train exactly like one process with batch N*b:

- every rank draws the same *global* micro-batch of N*b examples (indices, prompts, flips, latent
  samples, noise, timesteps) from the same seeded generators the single-process run uses, and
  keeps the rows ``rank*b .. (rank+1)*b``;
- each rank's loss is the mean over its rows, so the average of the ranks' gradients is the
  gradient of the global mean; clipping and the optimizer step then run on identical averaged
  gradients, so the vectors stay identical on every rank;
- latents are cached once per image: each rank encodes the images ``i % N == rank`` and the cached
  posteriors are exchanged, so every rank can serve any index.

Only rank 0 writes files, logs, previews and progress. A stop asked on any rank (the UI's flag,
Ctrl-C, SIGTERM) is agreed on at the start of each step, so all ranks stop after the same step.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch

from .loss import MicroBatch


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    # -- collectives (no-ops for one process) ---------------------------------------------------

    def average_gradients(self, params: list[torch.Tensor]) -> None:
        """Replace each parameter's gradient with its mean over the ranks (one flat all-reduce)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.size
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(g).clone()
            offset += n

    def average(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a tensor over the ranks."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        out = value.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.size

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on at least one."""
        if not self.distributed:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast_(self, tensors: list[torch.Tensor]) -> None:
        """Rank 0's values into every rank's tensors (in place)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        for t in tensors:
            dist.broadcast(t.data, src=0)

    def all_gather_objects(self, obj: object) -> list[object]:
        """Every rank's ``obj``, in rank order."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[object] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    # -- the share of a global micro-batch -----------------------------------------------------

    def share(self, batch: MicroBatch) -> MicroBatch:
        """This rank's rows of a global micro-batch of ``size * b`` examples."""
        if not self.distributed:
            return batch
        n = len(batch)
        if n % self.size:
            raise ValueError(f"a global micro-batch of {n} examples does not split over {self.size} processes")
        b = n // self.size
        rows = slice(self.rank * b, (self.rank + 1) * b)
        return MicroBatch(
            batch.prompts[rows],
            batch.latents[rows],
            batch.noise[rows],
            batch.timesteps[rows],
            batch.loss_weight[rows] if batch.loss_weight is not None else None,
            batch.sizes[rows] if batch.sizes is not None else None,
        )


SINGLE = World()


def world_from_env(environ: dict[str, str] | None = None) -> World:
    """The :class:`World` that ``torchrun`` describes in the environment (one process when absent)."""
    env = os.environ if environ is None else environ
    size = int(env.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return SINGLE
    return World(int(env.get("RANK", "0")), size, int(env.get("LOCAL_RANK", "0")))


def process_group_backend(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(world: World, requested: str | None) -> torch.device:
    """This rank's device: ``cuda:<local rank>`` on a GPU machine (unless another device is asked for)."""
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and device.index is None and world.distributed:
            return torch.device("cuda", world.local_rank)
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", world.local_rank if world.distributed else torch.cuda.current_device())
    return torch.device("cpu")


def init_process_group(world: World, device: torch.device, *, init_method: str | None = None) -> None:
    """Join the process group (``env://`` from torchrun unless ``init_method`` is given)."""
    if not world.distributed:
        return
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        process_group_backend(device),
        init_method=init_method or "env://",
        rank=world.rank,
        world_size=world.size,
        timeout=datetime.timedelta(minutes=30),  # latent caching of a large dataset happens between collectives
    )


def destroy_process_group(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
