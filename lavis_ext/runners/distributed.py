"""Process groups for the plugin: CPU (gloo) as well as GPU (nccl), and a world of one.

LAVIS 1.0.2's ``dist_utils.init_distributed_mode`` always picks ``nccl`` and calls
``torch.cuda.set_device``, so ``python -m torch.distributed.run`` on CPU machines dies before
training starts (and under SLURM without GPUs it divides by ``torch.cuda.device_count() ==
0``). ``lavis_ext.entry`` calls :func:`start_process_group` instead (LAVIS's function is left
stock): the backend follows the run device, nccl for ``run.device: cuda``, gloo otherwise,
overridable by ``run.dist_backend`` or the ``LAVIS_EXT_DIST_BACKEND`` environment variable;
each rank's CUDA device is set only for CUDA runs. A plain ``python train.py`` stays
non-distributed (``run.distributed`` False).

LAVIS's ``RunnerBase.train`` / ``RunnerIter.train`` call ``dist.barrier()`` after every epoch,
and ``Blip2Qformer.forward`` calls ``dist.get_rank()`` and gathers features over the group: all
of them raise without a process group. Those calls sit in the middle of LAVIS's bodies, so no
override of a smaller hook can skip them; :func:`world_of_one` starts a process group of one
rank (an in-memory store, no network) for the duration of such a call when none exists, and
destroys it afterwards. Inside it LAVIS's collectives do what they do for one rank.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist

from lavis_ext.errors import InputError


BACKEND_ENV = "LAVIS_EXT_DIST_BACKEND"
_BACKENDS = ("nccl", "gloo", "mpi", "ucc")


def check_run_device(run_cfg: Any) -> torch.device:
    """The configured ``run.device``; a clear error if it asks for CUDA on a machine without it."""
    device = torch.device(run_cfg.get("device", "cpu") or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "run.device is 'cuda' but no CUDA device is available on this machine; "
            "set run.device: cpu in the YAML or pass --options run.device=cpu"
        )
    return device


def choose_backend(run_cfg: Any) -> str:
    """``LAVIS_EXT_DIST_BACKEND`` > ``run.dist_backend`` > nccl on CUDA, gloo otherwise."""
    for source, value in ((BACKEND_ENV, os.environ.get(BACKEND_ENV)), ("run.dist_backend", run_cfg.get("dist_backend", None))):
        if value:
            value = str(value).lower()
            if value not in _BACKENDS:
                raise InputError(f"{source}={value!r}: expected one of {', '.join(_BACKENDS)}")
            return value
    return "nccl" if check_run_device(run_cfg).type == "cuda" else "gloo"


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a launched job (torch.distributed.run or SLURM)."""

    rank: int
    world_size: int
    local_rank: int


def launch_from_environment() -> Launch | None:
    """The launcher's placement of this process; None for a plain ``python train.py``."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torch.distributed.run (and similar)
        return Launch(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_PROCID" in env:
        rank = int(env["SLURM_PROCID"])
        world = int(env.get("SLURM_NTASKS", env.get("WORLD_SIZE", 1)))
        gpus = torch.cuda.device_count()
        return Launch(rank, world, rank % gpus if gpus else 0)
    return None


def start_process_group(run_cfg: Any) -> bool:
    """Join the launcher's process group and record it in ``run_cfg``; returns whether the run
    is distributed. Sets ``run.distributed``, ``rank``, ``world_size``, ``gpu``,
    ``dist_backend`` and ``dist_url`` (what LAVIS's runners read)."""
    from lavis.common.dist_utils import setup_for_distributed

    device = check_run_device(run_cfg)
    launch = launch_from_environment()
    run_cfg.distributed = launch is not None
    if launch is None:
        logging.info("not launched by torch.distributed.run or SLURM: one process, no process group")
        return False
    run_cfg.rank, run_cfg.world_size, run_cfg.gpu = launch.rank, launch.world_size, launch.local_rank
    if _group_exists():  # a launcher (or an earlier call in this process) started it
        run_cfg.dist_backend = dist.get_backend()
        return True
    backend = choose_backend(run_cfg)
    if backend == "nccl" and device.type != "cuda":
        raise RuntimeError("the nccl backend needs run.device: cuda; use gloo for CPU runs")
    run_cfg.dist_backend = backend
    run_cfg.dist_url = run_cfg.get("dist_url", None) or "env://"
    if device.type == "cuda":  # one GPU per local rank, whatever the backend
        torch.cuda.set_device(launch.local_rank)
    print(f"| process group: rank {launch.rank} of {launch.world_size}, {backend}, "
          f"{run_cfg.dist_url}", flush=True)
    # A long timeout, as LAVIS has: rank 0 may prepare data a while before the others join.
    dist.init_process_group(backend=backend, init_method=run_cfg.dist_url, rank=launch.rank,
                            world_size=launch.world_size, timeout=datetime.timedelta(days=365))
    if backend == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()
    setup_for_distributed(launch.rank == 0)
    return True


def _group_exists() -> bool:
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def world_of_one(device: torch.device | str = "cpu") -> Iterator[bool]:
    """A process group of this process alone for the body, when none exists (yields whether
    it started one). Collective calls inside LAVIS's bodies then work for one process."""
    if _group_exists():
        yield False
        return
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build; LAVIS's "
                           "runners and Blip2Qformer.forward need it")
    use_nccl = torch.device(device).type == "cuda" and dist.is_nccl_available()
    dist.init_process_group("nccl" if use_nccl else "gloo", store=dist.HashStore(), rank=0,
                            world_size=1)
    try:
        yield True
    finally:
        dist.destroy_process_group()


def shared_value(value: Any, src: int = 0) -> Any:
    """``value`` as rank ``src`` has it, on every rank (itself without a process group).

    Used for the job id: LAVIS derives it from the wall clock on each rank separately, so two
    ranks that start either side of a minute boundary would write to different folders.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]
