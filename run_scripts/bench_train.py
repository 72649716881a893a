"""Training throughput and peak memory of stage 1 (Q-Former) and stage 2 (LLM captioner).

On CPU it times the tiny configs. With a GPU it also times the full-size architecture, EVA
ViT-G + BERT-base Q-Former (stage 1) and EVA ViT-G + OPT-2.7B in bf16 (stage 2), from random
weights: timing an architecture needs no checkpoint.

    python run_scripts/bench_train.py [--steps 10] [--batch 8] [--full-batch 8] [--no-full]
"""
from __future__ import annotations

import argparse
import resource
import time
from typing import Any

import torch
from omegaconf import OmegaConf

import lavis_ext  # noqa: F401  (registers models, applies compat fixes)
from lavis.common.registry import registry

CAPTION = ("It is a people who raises inner eyebrow, raises outer eyebrow, raises upper lid "
           "and drops jaw; the raised brows and the open mouth suggest surprise.")


def build(arch: str, model_type: str, **overrides: Any) -> torch.nn.Module:
    cls = registry.get_model_class(arch)
    cfg = OmegaConf.load(cls.default_config_path(model_type)).model
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cls.from_config(cfg)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def time_training(model: torch.nn.Module, device: torch.device, batch: int, size: int,
                  steps: int, amp_dtype: torch.dtype | None) -> dict[str, float]:
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.05)
    samples = {"image": torch.randn(batch, 3, size, size, device=device),
               "text_input": [CAPTION] * batch}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            loss = model(samples)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up (allocations, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {"samples_per_s": steps * batch / seconds, "peak_mb": peak_memory_mb(device),
            "trainable_m": sum(p.numel() for p in params) / 1e6}


def report(name: str, result: dict[str, float]) -> None:
    print(f"{name:<46} {result['samples_per_s']:>10.2f} samples/s   peak "
          f"{result['peak_mb']:>9.0f} MiB   trainable {result['trainable_m']:>8.1f} M",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8, help="tiny configs (CPU)")
    parser.add_argument("--full-batch", type=int, default=8, help="full-size (GPU)")
    parser.add_argument("--no-full", action="store_true", help="skip the full-size GPU runs")
    args = parser.parse_args()
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    report("tiny stage 1 (Q-Former, CPU)",
           time_training(build("exp_blip_qformer", "tiny"), cpu, args.batch, 112, args.steps,
                         None))
    report("tiny stage 2 (LLM captioner, CPU)",
           time_training(build("exp_blip", "tiny"), cpu, args.batch, 112, args.steps, None))
    if not torch.cuda.is_available() or args.no_full:
        print("full-size runs: skipped (no GPU)" if not args.no_full else
              "full-size runs: skipped (--no-full)")
        return
    gpu = torch.device("cuda")
    bf16 = torch.bfloat16
    stage1 = build("exp_blip_qformer", "vitg", vit_weights="random", vit_precision="fp32",
                   use_grad_checkpoint=False)
    report("EVA ViT-G + Q-Former stage 1 (bf16 autocast)",
           time_training(stage1, gpu, args.full_batch, 224, args.steps, bf16))
    del stage1
    torch.cuda.empty_cache()
    stage2 = build("exp_blip", "vitg_opt2.7b", load_finetuned=False, vit_weights="random",
                   opt_model="random:opt-2.7b", llm_dtype="bfloat16", freeze_vit=False)
    report("EVA ViT-G + OPT-2.7B stage 2 (bf16, ViT trained)",
           time_training(stage2, gpu, args.full_batch, 224, args.steps, bf16))


if __name__ == "__main__":
    main()
