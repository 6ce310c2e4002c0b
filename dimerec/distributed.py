"""Data-parallel training under `torchrun`, with torch.distributed's DistributedDataParallel.

`torchrun --nproc_per_node N -m dimerec train ...` starts N copies of the command with WORLD_SIZE=N and a
RANK each. `train` then trains one model on N processes:

- backend: gloo on CPUs, NCCL on GPUs (each rank on cuda:LOCAL_RANK), chosen from --device;
- samples: every rank draws the same seeded order of the run's TrainSampler and takes its own slice of
  each global batch (rank r: samples r, r+N, ...), so the global batch stays --batch-size and the epochs
  are the single-process run's; DDP averages the shards' gradients, which is the global batch's gradient
  up to float rounding when the shards are equal (a last global batch smaller than N is skipped);
- randomness inside the losses (negatives, diffusion steps, noise) is drawn per rank: rank r's torch
  generator is seeded with seed + 7919·r, so the N shards do not share their noise;
- only rank 0 validates, logs, writes checkpoints and the run directory (atomically, as without torchrun);
  its decisions (best checkpoint, early stop) and the loss terms and step times (averaged over ranks) are
  shared so every rank stops at the same step; last.pt keeps every rank's generator state for --resume;
- N = 1 (plain or under torchrun) is the ordinary single-process path, with its numbers.

Every model's loss is a mean over its batch, so it trains this way unchanged; terms that pool the batch
pool the rank's shard only: `--negative-sampler shared` draws n × (shard size) shared negatives per rank,
and SASRec's negatives outside the rows exclude the shard's rows. One node (or a file system all ranks
share): every rank reads best.pt and last.pt from the run directory. `reproduce`, `evaluate` and `bench`
stay single-process: under torchrun with N > 1 they refuse (`refuse_multiprocess`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from dimerec.errors import DimeRecError

RANK_SEED_STRIDE = 7919


def world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise DimeRecError(f"WORLD_SIZE must be an integer; got {os.environ['WORLD_SIZE']!r}") from None


def rank() -> int:
    return int(os.environ.get("RANK", "0")) if world_size() > 1 else 0


def refuse_multiprocess(what: str) -> None:
    """A one-line DimeRecError when this process is one of several launched by torchrun."""
    n = world_size()
    if n > 1:
        raise DimeRecError(f"{what} runs in one process, but torchrun started {n} (WORLD_SIZE={n}, RANK="
                           f"{os.environ.get('RANK', '?')}); only `train` runs data-parallel: run this command "
                           f"with `python -m dimerec ...` (or torchrun --nproc_per_node 1)")


@dataclass
class Context:
    """This process's place among the training processes (world 1: no torch.distributed at all)."""
    world: int = 1
    rank: int = 0
    owned: bool = False  # this Context joined the process group (and leaves it in close)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """On GPUs, each rank its own: cuda:LOCAL_RANK unless --device named one."""
        if self.world > 1 and device.type == "cuda" and device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        return device

    def describe(self, batch_size: int) -> dict:
        import torch.distributed as dist

        return {"world_size": self.world, "backend": dist.get_backend(), "global_batch_size": batch_size,
                "rank_batch_size": -(-batch_size // self.world)}

    def seed_rank(self, seed: int) -> None:
        if self.world > 1:
            torch.manual_seed(seed + RANK_SEED_STRIDE * self.rank)

    def wrap(self, model, device: torch.device):
        """model.loss, or the same through DistributedDataParallel (which averages the ranks' gradients)."""
        if self.world == 1:
            return model.loss
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(LossModule(model), device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=True)  # a loss term may skip parameters in a step

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each value over the ranks (every rank gets the same numbers)."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=on)  # NCCL reduces GPU tensors only
        dist.all_reduce(t)
        return dict(zip(values, (t / self.world).tolist()))

    def share(self, obj):
        """Rank 0's `obj` on every rank."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.owned:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


class LossModule(torch.nn.Module):
    """The model's training loss as forward(), which DistributedDataParallel needs to hook its gradients."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.loss(batch)


def start(device_name: str) -> Context:
    """Join torchrun's process group when WORLD_SIZE > 1 (gloo on CPUs, NCCL on GPUs)."""
    n = world_size()
    if n == 1:
        return Context()
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device_name.startswith("cuda") else "gloo")
    return Context(dist.get_world_size(), dist.get_rank(), owned)
