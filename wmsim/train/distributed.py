"""Data-parallel training over processes: ``wmsim train`` under ``torchrun``.

torchrun starts one process per rank and tells each its place in the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); :func:`join` reads it and joins the
process group, NCCL between GPUs and gloo between CPUs. Every rank draws its own
share of each batch with random streams of its own (:func:`rank_seed`),
DistributedDataParallel averages the gradients (:class:`ParallelLoss`), and
rank 0 alone writes the run directory. Without torchrun a process is the one
rank of a world of one and nothing here talks to anyone, so a plain run is
exactly what it was before distributed training existed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from wmsim.errors import UserError


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one run."""

    rank: int = 0
    """0 to world - 1; rank 0 writes the run directory and evaluates."""
    world: int = 1
    """How many processes train the run together."""
    local_rank: int = 0
    """The rank among the processes on this machine: which GPU it takes."""

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the one that writes files and evaluates."""
        return self.rank == 0


def ranks_from_env(environ: Mapping[str, str] = os.environ) -> Ranks:
    """The ranks torchrun set in the environment, or a world of one without torchrun."""
    if "WORLD_SIZE" not in environ:
        return Ranks()
    return Ranks(
        rank=int(environ["RANK"]),
        world=int(environ["WORLD_SIZE"]),
        local_rank=int(environ.get("LOCAL_RANK", 0)),
    )


def join(ranks: Ranks, device: torch.device) -> torch.device:
    """Join torchrun's process group; returns the device this rank trains on.

    On CUDA each process takes the GPU of its local rank and the ranks talk over
    NCCL; elsewhere they talk over gloo.
    """
    if ranks.world == 1:
        return device
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"rank {ranks.rank} wants GPU {ranks.local_rank} but this machine has "
                f"{torch.cuda.device_count()}; start at most one process per GPU"
            )
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def leave(ranks: Ranks) -> None:
    """Wait for every rank (rank 0 may still be writing), then leave the process group."""
    if ranks.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of ``rank``'s random streams: ``seed`` itself for rank 0 of a new run.

    Other ranks, and ranks that join a resumed run at ``step``, take distinct
    seeds derived from all three numbers.
    """
    if rank == 0 and step == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def split_batch(batch: int, ranks: Ranks) -> int:
    """Each rank's share of the global ``batch`` (``--batch``)."""
    if batch % ranks.world:
        raise UserError(
            f"--batch {batch} does not split over {ranks.world} processes; "
            f"pass a multiple of {ranks.world}"
        )
    return batch // ranks.world


def rank_share(share: float, batch: int, ranks: Ranks) -> float:
    """This rank's share of event windows such that the ranks' add up to ``share`` of ``batch``.

    Each rank rounding its own share would lose them: a quarter of 4 windows
    is 1, of 2 windows (on each of 2 ranks) none. The global count is split
    instead, the first ranks taking one more where it does not divide.
    """
    count = int(round(share * batch))
    mine = count // ranks.world + (ranks.rank < count % ranks.world)
    return mine / (batch // ranks.world)


def agree(
    metrics: dict[str, float], stop: bool, ranks: Ranks, device: torch.device
) -> tuple[dict[str, float], bool]:
    """Every rank's ``metrics`` averaged over the ranks, and whether any rank asks to stop.

    One collective per step: all ranks learn of an interrupt at the same step.
    """
    if ranks.world == 1:
        return metrics, stop
    names = sorted(metrics)
    values = torch.tensor([metrics[k] for k in names] + [float(stop)], dtype=torch.float64)
    values = values.to(device)
    dist.all_reduce(values)
    mean = (values[:-1] / ranks.world).tolist()
    return dict(zip(names, mean, strict=True)), bool(values[-1] > 0)


def gather(state: Any, ranks: Ranks) -> list[Any]:
    """Every rank's ``state`` on rank 0, in rank order; an empty list on the others."""
    if ranks.world == 1:
        return [state]
    gathered = [None] * ranks.world if ranks.main else None
    dist.gather_object(state, gathered, dst=0)
    return gathered or []


def broadcast_parameters(model: torch.nn.Module, ranks: Ranks) -> None:
    """Give every rank rank 0's parameters, for models that edit them outside the optimizer."""
    if ranks.world == 1:
        return
    with torch.no_grad():
        for parameter in model.parameters():
            dist.broadcast(parameter, src=0)


class _Loss(torch.nn.Module):
    # DistributedDataParallel hooks a module's forward; a world model's training entry is loss
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator):
        return self.model.loss(batch, generator)


class ParallelLoss(torch.nn.Module):
    """A world model whose ``loss`` has its gradients averaged over the ranks.

    It has the world model's parameters and its ``loss`` signature, so
    :func:`~wmsim.train.step.world_model_step` takes it in the model's place.
    BatchNorm statistics are each rank's own, and rank 0's buffers are sent to
    the others before every step (DistributedDataParallel's default).
    """

    def __init__(self, model: torch.nn.Module, device: torch.device):
        super().__init__()
        ids = [device.index] if device.type == "cuda" else None
        # every parameter of every preset gets a gradient in every step (checked for the tiny
        # ones, which share the papers' architectures), so DDP need not search the graph
        self.parallel = DistributedDataParallel(_Loss(model), device_ids=ids)

    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator):
        """The wrapped model's loss on this rank's share of the batch: (loss, metrics)."""
        return self.parallel(batch, generator)
