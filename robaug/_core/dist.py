"""Joining the process group that ``torchrun`` describes, and this rank's device: one set-up for training and
generation. On a CPU machine the same code runs several processes over gloo."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "setup_distributed", "teardown_distributed"]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | torch.device | None = "auto") -> DistInfo:
    """Pick this rank's device and join the process group when started by torchrun (``WORLD_SIZE > 1``).

    ``device``: ``"auto"``/``None`` (this rank's GPU if CUDA is available, else the CPU), ``"cuda"`` (this rank's
    GPU), ``"cpu"``, or an explicit device such as ``"cuda:1"``. The backend is NCCL on CUDA, gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    name = "auto" if device is None else str(device)
    if name in ("auto", "cuda"):
        if name == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but CUDA is not available; use --device cpu")
        use_cuda = torch.cuda.is_available()
        if use_cuda:
            dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
        else:
            dev = torch.device("cpu")
    else:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} was asked for but CUDA is not available; use --device cpu")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    here = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        here = True
    rank = dist.get_rank() if world > 1 else 0
    return DistInfo(rank, world, local_rank, dev, here)


def teardown_distributed(info: DistInfo) -> None:
    """Leave the process group if :func:`setup_distributed` created it."""
    if info.initialised_here and dist.is_initialized():
        dist.destroy_process_group()
