"""Distributed start-up that works on CPU (gloo) as well as GPU (nccl).

LAVIS 1.0.2's ``dist_utils.init_distributed_mode`` always picks ``nccl`` and calls
``torch.cuda.set_device``, so ``python -m torch.distributed.run`` on CPU machines dies before
training starts (and under SLURM without GPUs it divides by ``torch.cuda.device_count() == 0``).
Here the backend follows the run device: nccl for ``run.device: cuda``, gloo otherwise,
overridable by ``run.dist_backend`` or the ``LAVIS_EXT_DIST_BACKEND`` environment variable;
each rank's CUDA device is set only for CUDA runs. A plain ``python train.py`` stays non-distributed.

The runners also call ``dist.barrier()`` unconditionally at the end of every epoch
(``RunnerBase.train``, ``RunnerIter.train``), which raises "Default process group has not been
initialized" in a single process. The name ``dist`` inside those two modules is overlaid so
that ``barrier`` is a no-op without a process group (and passes the device id under nccl).
"""
from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

from lavis_ext.compat._patch import Overlay

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
                raise ValueError(f"{source}={value!r}: expected one of {', '.join(_BACKENDS)}")
            return value
    return "nccl" if check_run_device(run_cfg).type == "cuda" else "gloo"


def init_distributed_mode(args: Any) -> None:
    """Drop-in for ``lavis.common.dist_utils.init_distributed_mode`` (``args`` is ``run_cfg``)."""
    from lavis.common.dist_utils import setup_for_distributed

    device = check_run_device(args)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        args.rank = int(os.environ["RANK"])
        args.world_size = int(os.environ["WORLD_SIZE"])
        args.gpu = int(os.environ.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in os.environ:
        args.rank = int(os.environ["SLURM_PROCID"])
        n_gpu = torch.cuda.device_count()
        args.gpu = args.rank % n_gpu if n_gpu else 0
    else:
        print("Not using distributed mode")
        args.distributed = False
        return

    if dist.is_available() and dist.is_initialized():
        # already started (e.g. by a launcher or a previous call in this process)
        args.distributed = True
        args.dist_backend = dist.get_backend()
        return

    args.distributed = True
    args.dist_backend = choose_backend(args)
    if not args.get("dist_url", None):
        args.dist_url = "env://"
    if args.dist_backend == "nccl" and device.type != "cuda":
        raise RuntimeError("the nccl backend needs run.device: cuda; use gloo for CPU runs")
    if device.type == "cuda":  # one GPU per local rank, whatever the backend
        torch.cuda.set_device(args.gpu)
    print(
        "| distributed init (rank {}, world {}, backend {}): {}".format(
            args.rank, args.world_size, args.dist_backend, args.dist_url
        ),
        flush=True,
    )
    dist.init_process_group(
        backend=args.dist_backend,
        init_method=args.dist_url,
        world_size=args.world_size,
        rank=args.rank,
        # long, as in LAVIS: rank 0 may spend a while preparing data before the others join
        timeout=datetime.timedelta(days=365),
    )
    guarded_barrier()
    setup_for_distributed(args.rank == 0)


def guarded_barrier(*args: Any, **kwargs: Any) -> None:
    """``dist.barrier`` when a process group exists, nothing in a single plain process."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "nccl" and not args and "device_ids" not in kwargs:
        kwargs["device_ids"] = [torch.cuda.current_device()]
    dist.barrier(*args, **kwargs)


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


def patch_init_distributed_mode(stock: Any) -> Any:
    """Patch factory for ``dist_utils.init_distributed_mode``."""
    return init_distributed_mode


def patch_runner_dist(dist_module: Any) -> Overlay:
    """Patch factory for the name ``dist`` in the two runner modules."""
    return Overlay(dist_module, barrier=guarded_barrier)
