"""Multi-process training under torchrun (one process per GPU, or several CPU processes).

`torchrun --nproc_per_node=N -m exsynth train ...` (or any launcher that sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT) starts N copies of the command; each
finds its place here. The process group uses nccl on GPUs and gloo on CPUs.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List

import torch
import torch.distributed as dist

__all__ = ["DistContext", "context_from_env", "init_process_group", "shutdown", "parameter_digest", "all_true", "gather_strings",
           "mean_over_processes"]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name}={v!r} is not an integer") from None


def context_from_env() -> DistContext:
    """Where this process sits, from torchrun's environment (one process when unset)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} / WORLD_SIZE={world} from the environment are inconsistent")
    return DistContext(rank, world, local)


def shutdown() -> None:
    """Leave the process group together: a barrier, then destroy it. A process that exits with
    the group alive tears its communication threads down at interpreter exit, which can abort
    it ("terminate called without an active exception") while another rank still talks."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def init_process_group(ctx: DistContext, device: torch.device) -> None:
    if not ctx.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)


def all_true(flag: bool, device: torch.device) -> bool:
    """True when `flag` holds on every process (a collective: every process must call it)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([0 if flag else 1], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item()) == 0


def mean_over_processes(values: Dict[str, float], device: torch.device) -> Dict[str, float]:
    """Each value averaged over the processes (a collective; same keys on every process)."""
    if not dist.is_initialized():
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def parameter_digest(tensors: Iterable[torch.Tensor]) -> str:
    """SHA-256 of the tensors' bytes: equal digests on two processes mean bitwise equal weights."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def gather_strings(s: str) -> List[str]:
    if not dist.is_initialized():
        return [s]
    out: List[str] = [""] * dist.get_world_size()
    dist.all_gather_object(out, s)
    return out
