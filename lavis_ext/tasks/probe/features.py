"""Frozen-encoder features for the linear probe: extracted once, cached on disk.

The paper trains its linear probes for 100-400 epochs. With the encoder frozen, every epoch
would recompute the same features, so they are computed once per (weights, data, transform,
source) and kept in ``cache_dir``. Under DDP each rank encodes its own share of the images
(rank r takes items r, r + world, ...), writes it as a shard, and every rank assembles the
whole set from the shards; rank 0 then leaves one merged file for the next run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from lavis_ext.errors import InputError
from lavis_ext.io import atomic_save_torch

logger = logging.getLogger(__name__)


def weights_fingerprint(model: nn.Module) -> str:
    """Cheap identity of a model's weights: names, shapes and a sample of values per tensor."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if flat.numel() and flat.is_floating_point():
            sample = flat[:: max(1, flat.numel() // 64)][:64].float().cpu().numpy()
            digest.update(sample.tobytes())
            digest.update(np.float64(flat.double().sum().item()).tobytes())
    return digest.hexdigest()[:16]


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Frozen features come from the encoder in eval mode (no dropout, fixed norm stats)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _keep_list(items: list[Any]) -> list[Any]:
    return items


def encode(features: Callable[[torch.Tensor], torch.Tensor], dataset: Any,
           positions: Sequence[int], *, batch_size: int, num_workers: int,
           device: torch.device, progress: bool = False) -> tuple[list[int], torch.Tensor]:
    """Features [N, D] of the items at ``positions`` whose image could be read, and those positions.

    Items are dicts with an ``image`` tensor (LAVIS datasets). An item that is ``None`` (an
    unreadable image, see ``FacialRecordDataset``) is left out, never replaced by another.
    """
    from tqdm import tqdm

    positions = list(positions)
    # Its own generator: drawing worker seeds from the global one would make a run that
    # extracts differ from one that reads the cache (head init and data order come later).
    loader = DataLoader(Subset(dataset, positions), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_keep_list,
                        generator=torch.Generator())
    kept: list[int] = []
    chunks: list[torch.Tensor] = []
    done = 0
    for items in tqdm(loader, desc="probe features", disable=not progress):
        batch = [(p, item) for p, item in zip(positions[done:done + len(items)], items)
                 if item is not None]
        done += len(items)
        if batch:
            images = torch.stack([item["image"] for _, item in batch]).to(device)
            with torch.no_grad():
                chunks.append(features(images).float().cpu())
            kept += [p for p, _ in batch]
    return kept, (torch.cat(chunks) if chunks else torch.zeros(0, 0))


class FeatureCache:
    """One ``.pt`` per key in ``folder``: ``{"positions", "image_ids", "features"}``.

    ``positions`` are the dataset items the features belong to (unreadable images are absent).
    The key names everything the features depend on, so a file is never stale: a change of
    weights, images, transform or source gives another file name.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def path(self, stem: str, key: Sequence[Any]) -> Path:
        digest = hashlib.sha256(json.dumps(list(key), default=str).encode()).hexdigest()[:20]
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in stem)
        return self.folder / f"{safe}_{digest}.pt"

    @staticmethod
    def load(path: Path) -> tuple[list[int], torch.Tensor] | None:
        """(positions, features) from a cache file, or None when there is none."""
        if not path.is_file():
            return None
        cached = torch.load(path, map_location="cpu", weights_only=True)
        positions, features = list(cached["positions"]), cached["features"]
        if len(positions) != len(features):
            raise InputError(f"{path}: {len(positions)} positions but {len(features)} feature "
                             "rows; delete the file to extract again")
        return positions, features

    @staticmethod
    def save(path: Path, positions: Sequence[int], image_ids: Sequence[str],
             features: torch.Tensor) -> None:
        atomic_save_torch({"positions": list(positions), "image_ids": list(image_ids),
                           "features": features.contiguous()}, path)


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_from_rank0(module: nn.Module) -> None:
    """Give every rank rank 0's weights before extracting.

    Ranks seed differently (``seed + rank``), so any randomly initialised part would differ
    between them; DDP evens this out only when the runner wraps the model, after extraction.
    """
    import torch.distributed as dist

    if _dist()[1] == 1:
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)


def cached_features(features: Callable[[torch.Tensor], torch.Tensor], dataset: Any,
                    positions: Sequence[int], image_ids: Sequence[str], *,
                    cache: FeatureCache | None, path: Path | None, batch_size: int,
                    num_workers: int, device: torch.device) -> tuple[list[int], torch.Tensor]:
    """(positions kept, features) from the cache, else encoded (shared across DDP ranks).

    ``image_ids[i]`` names ``positions[i]``; both go into the cache file for inspection.
    """
    if cache is not None and path is not None:
        found = cache.load(path)
        if found is not None:
            logger.info("probe features from the cache: %s", path)
            return found
    rank, world = _dist()
    if world == 1:
        kept, out = encode(features, dataset, positions, batch_size=batch_size,
                           num_workers=num_workers, device=device, progress=True)
    else:
        if cache is None or path is None:
            raise InputError("run.probe.cache_dir must be set under DDP: the ranks share the "
                             "features they extract through files in it")
        mine, out = encode(features, dataset, list(positions)[rank::world],
                           batch_size=batch_size, num_workers=num_workers, device=device,
                           progress=rank == 0)
        shards = [path.with_name(f"{path.stem}.rank{r}-of-{world}.pt") for r in range(world)]
        cache.save(shards[rank], mine, [], out)
        _barrier()
        parts = [cache.load(shard) for shard in shards]
        pairs = sorted((p, k, i) for i, (ps, _) in enumerate(parts) for k, p in enumerate(ps))
        kept = [p for p, _, _ in pairs]
        out = torch.stack([parts[i][1][k] for _, k, i in pairs]) if pairs else torch.zeros(0, 0)
        _barrier()  # every rank has read every shard
        if rank == 0:
            for shard in shards:
                shard.unlink()
    name = {p: i for p, i in zip(positions, image_ids)}
    if cache is not None and path is not None and rank == 0:
        cache.save(path, kept, [name[p] for p in kept], out)
    return kept, out
