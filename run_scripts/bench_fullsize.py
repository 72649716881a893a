"""Full-size smoke test and benchmark: the paper's architectures from random weights.

For each model type it builds stage 1 (EVA ViT-G + Q-Former) and stage 2 (+ OPT, LLM in the
given dtype, bf16 by default), runs one training step of each and ``generate`` (beam 5, 20 new
tokens) at batch 1 and batch 8. It prints build and step times, tokens/s, peak memory, and the
time of each generation phase (ViT forward, Q-Former, LLM prefill, decoding per token), then
the batch-8 / batch-1 ratio of each phase beside what the arithmetic predicts: a
compute-bound phase (the ViT, ~0.5 TFLOP per image) takes ~8x as long for 8 images, while
memory-bound decoding (every step reads all LLM weights once) takes about as long for 8 as
for 1 until it becomes compute-bound.

Decoding is timed twice at each batch, side by side: the stock path (LAVIS's own OPT class,
which never uses its KV cache, so every step runs the whole sequence again) and ours (the
plugin's ``ExpBlipOPTForCausalLM``, one new position per step), with their ratio. On the
paper stack the stock path is LAVIS's class itself (the instance's class swapped for the
call, same weights); on current transformers LAVIS's class has no ``generate``, so it is the
plugin's class with ``use_cache=False``, the same work. ``--no-stock`` skips it.

    python run_scripts/bench_fullsize.py                       # vitg_opt2.7b and vitg_opt6.7b
    python run_scripts/bench_fullsize.py --types vitg_opt2.7b  # one type
    python run_scripts/bench_fullsize.py --types tiny          # the tiny model: seconds
    python run_scripts/bench_fullsize.py --types vitg_opt2.7b --device cuda --runner-iters 50

With several types, each runs in its own child process, so each peak memory is its own.
``--runner-iters N`` also trains stage 2 for N iterations through LAVIS's runner
(``runner_expblip_iter``, one process, nccl on CUDA / gloo on CPU) on synthetic faces and prints
samples/s. Weights are random: no download, nothing to configure.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator

from lavis_ext.memory import map_large_allocations, release_freed_memory

REPO = Path(__file__).resolve().parents[1]
CAPTION = ("It is a people who raises inner eyebrow, raises outer eyebrow, raises upper lid "
           "and drops jaw; the raised brows and the open mouth suggest surprise.")
STAGE1_TYPE = {"vitg": "vitg", "vitb": "vitb", "tiny": "tiny"}
RANDOM_LLM = {"opt2.7b": "random:opt-2.7b", "opt6.7b": "random:opt-6.7b"}


def stage1_type(model_type: str) -> str:
    return STAGE1_TYPE[model_type.split("_", 1)[0]]


def overrides_for(model_type: str, stage: int, llm_dtype: str, train_vit: bool
                  ) -> dict[str, Any]:
    """Random weights for every part, said explicitly (``random``), and no checkpoints."""
    common = {"load_finetuned": False, "load_pretrained": False, "bert_path": "random"}
    if model_type != "tiny":
        common["vit_weights"] = "random"
    if stage == 1:
        return common
    # A trained encoder keeps float32 weights; a frozen one runs in half precision (fp16 on
    # GPU, the LLM's bf16 on CPU), as the inference configs do.
    out = {**common, "llm_dtype": llm_dtype, "freeze_vit": not train_vit,
           "vit_precision": "fp32" if train_vit else "fp16"}
    if model_type == "tiny":
        out["tiny_lm.pretrain_steps"] = 0  # random weights here too, and built in a second
    else:
        out["opt_model"] = RANDOM_LLM[model_type.split("_", 1)[1]]
    return out


def peak_memory_gib(device: Any) -> float:
    """Peak since the last ``reset_peak``: CUDA's allocator peak, or the process's VmHWM."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def reset_peak(device: Any) -> None:
    """Start a new peak, so that each phase reports its own (Linux: clear_refs 5 resets
    VmHWM to the current RSS)."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: the peak stays the process's


def build(arch: str, model_type: str, overrides: dict[str, Any]) -> Any:
    from lavis.common.registry import registry
    from omegaconf import OmegaConf

    cls = registry.get_model_class(arch)
    cfg = OmegaConf.load(cls.default_config_path(model_type)).model
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cls.from_config(cfg)


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model: Any, device: Any, batch: int, size: int) -> float:
    """One forward + backward + AdamW step under bf16 autocast (the paper configs' amp)."""
    import torch

    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.05)
    samples = {"image": torch.randn(batch, 3, size, size, device=device),
               "text_input": [CAPTION] * batch}
    sync(device)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = model(samples)["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync(device)
    if not torch.isfinite(loss):
        raise RuntimeError(f"the training step gave a non-finite loss: {loss.item()}")
    return time.perf_counter() - start


class PhaseTimer:
    """Wall time of each call of a few modules, through forward hooks."""

    def __init__(self, device: Any, modules: dict[str, Any]):
        self.device = device
        self.calls: dict[str, list[float]] = {name: [] for name in modules}
        self._started: dict[str, float] = {}
        self._handles = []
        for name, module in modules.items():
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name)))

    def _pre(self, name: str) -> Callable:
        def hook(*_: Any) -> None:
            sync(self.device)
            self._started[name] = time.perf_counter()
        return hook

    def _post(self, name: str) -> Callable:
        def hook(*_: Any) -> None:
            sync(self.device)
            self.calls[name].append(time.perf_counter() - self._started[name])
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@contextmanager
def stock_path(model: Any) -> Iterator[dict[str, Any]]:
    """LAVIS's stock OPT for the duration: yields the extra ``generate`` arguments.

    Paper stack: the LLM instance runs as LAVIS's own ``OPTForCausalLM`` (same weights), which
    reads its cache as ``past`` and so recomputes everything each step. Current transformers:
    LAVIS's class has no ``generate``; the plugin's class without its cache does the same work.
    """
    from lavis.models.blip2_models.modeling_opt import OPTForCausalLM
    from transformers.generation import GenerationMixin

    llm = model.opt_model
    if not issubclass(OPTForCausalLM, GenerationMixin):
        yield {"use_cache": False}
        return
    ours = llm.__class__
    llm.__class__ = OPTForCausalLM
    try:
        yield {}
    finally:
        llm.__class__ = ours


def _positions(kwargs: dict[str, Any]) -> int:
    """Sequence positions one LLM call computes (query embeddings included)."""
    return sum(kwargs[k].shape[1] for k in ("input_ids", "inputs_embeds", "query_embeds")
               if kwargs.get(k) is not None)


def time_generate(model: Any, device: Any, batch: int, size: int, beams: int,
                  new_tokens: int, stock: bool = False) -> dict[str, float]:
    """Phase times of one ``generate``; ``stock``: through LAVIS's stock OPT (no KV cache)."""
    import torch

    model.to(device).eval()
    images = torch.randn(batch, 3, size, size, device=device)
    timer = PhaseTimer(device, {"vit": model.visual_encoder, "qformer": model.Qformer.bert,
                                "llm": model.opt_model})
    positions: list[int] = []
    counter = model.opt_model.register_forward_pre_hook(
        lambda _m, _a, kwargs: positions.append(_positions(kwargs)), with_kwargs=True)
    try:
        with (stock_path(model) if stock else nullcontext({})) as extra:
            sync(device)
            start = time.perf_counter()
            texts = model.generate({"image": images}, num_beams=beams, max_length=new_tokens,
                                   min_length=new_tokens + 1,  # + BOS: exactly new_tokens
                                   **extra)
            sync(device)
            total = time.perf_counter() - start
    finally:
        timer.remove()
        counter.remove()
    if len(texts) != batch:
        raise RuntimeError(f"generate returned {len(texts)} captions for {batch} images")
    llm = timer.calls["llm"]
    steps = len(llm)  # one prefill + one call per further token
    return {"batch": batch, "path": "stock" if stock else "ours", "total_s": total,
            "vit_s": sum(timer.calls["vit"]),
            "qformer_s": sum(timer.calls["qformer"]), "prefill_s": llm[0] if llm else 0.0,
            "decode_per_token_s": sum(llm[1:]) / max(steps - 1, 1),
            "decode_positions_per_step": sum(positions[1:]) / max(len(positions) - 1, 1),
            "new_tokens": steps, "tokens_per_s": batch * steps / total}


def _progress(result: dict[str, Any], *keys: str) -> None:
    """Print figures as they come: a full-size run takes many minutes on CPU."""
    print("  " + ", ".join(f"{k} {result[k]:.2f}" for k in keys), flush=True)


def parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def bench_type(model_type: str, device_name: str, llm_dtype: str, beams: int, new_tokens: int,
               batches: list[int], train_vit: bool, step_batch: int,
               stock: bool = True) -> dict[str, Any]:
    import torch

    import lavis_ext  # noqa: F401
    import lavis  # noqa: F401  (lavis_ext registers its models when LAVIS is imported)

    torch.manual_seed(0)
    device = torch.device(device_name)
    result: dict[str, Any] = {"type": model_type, "device": device_name,
                              "threads": torch.get_num_threads(), "llm_dtype": llm_dtype,
                              "train_vit": train_vit, "beams": beams}
    s1 = stage1_type(model_type)
    start = time.perf_counter()
    stage1 = build("exp_blip_qformer", s1, overrides_for(model_type, 1, llm_dtype, train_vit))
    result["stage1_build_s"] = time.perf_counter() - start
    size = stage1.visual_encoder.image_size if hasattr(stage1.visual_encoder, "image_size") \
        else 224
    result["image_size"] = size
    result["stage1_step_s"] = train_step(stage1, device, step_batch, size)
    result["stage1_peak_gib"] = peak_memory_gib(device)
    _progress(result, "stage1_build_s", "stage1_step_s", "stage1_peak_gib")
    del stage1
    gc.collect()
    release_freed_memory()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    reset_peak(device)

    start = time.perf_counter()
    stage2 = build("exp_blip", model_type, overrides_for(model_type, 2, llm_dtype, train_vit))
    result["stage2_build_s"] = time.perf_counter() - start
    result["stage2_build_peak_gib"] = peak_memory_gib(device)
    result["params_vit"] = parameters(stage2.visual_encoder)
    result["params_llm"] = parameters(stage2.opt_model)
    result["llm_param_dtype"] = str(next(stage2.opt_model.parameters()).dtype)
    result["vit_param_dtype"] = str(next(stage2.visual_encoder.parameters()).dtype)
    result["vit_tokens"] = int(stage2.visual_encoder(
        torch.zeros(1, 3, size, size, dtype=next(stage2.visual_encoder.parameters()).dtype)
    ).shape[1]) if model_type == "tiny" else (size // 14) ** 2 + 1
    reset_peak(device)
    result["stage2_step_s"] = train_step(stage2, device, step_batch, size)
    result["stage2_step_peak_gib"] = peak_memory_gib(device)
    _progress(result, "stage2_build_s", "stage2_build_peak_gib", "stage2_step_s",
              "stage2_step_peak_gib")
    result["generate"], result["generate_stock"] = [], []
    # one short untimed run of each path first: the first calls of a process pay one-time
    # costs (kernel selection, allocator growth) that would be charged to whichever runs first
    for warm in (False, True) if stock else (False,):
        time_generate(stage2, device, 1, size, beams, 2, stock=warm)
    for b in batches:
        for path in (("generate", False), ("generate_stock", True)) if stock else \
                (("generate", False),):
            gc.collect()
            release_freed_memory()  # the previous phase's activations, before generate's own
            reset_peak(device)
            run = time_generate(stage2, device, b, size, beams, new_tokens, stock=path[1])
            run["peak_gib"] = peak_memory_gib(device)
            result[path[0]].append(run)
            print(f"  ({run['path']})", end="")
            _progress(run, "batch", "total_s", "decode_per_token_s", "peak_gib")
    result["peak_gib"] = max([result["stage1_peak_gib"], result["stage2_build_peak_gib"],
                              result["stage2_step_peak_gib"]]
                             + [g["peak_gib"] for g in result["generate"]
                                + result["generate_stock"]])
    return result


def runner_iterations(model_type: str, device_name: str, iters: int, batch: int,
                      llm_dtype: str, train_vit: bool) -> dict[str, Any]:
    """Stage 2 through the plugin's iteration runner (runner_expblip_iter) on synthetic faces; samples/s from the
    model's own forward calls after two warm-up iterations."""
    with tempfile.TemporaryDirectory(prefix="bench_runner_") as folder:
        return _runner_iterations(Path(folder), model_type, device_name, iters, batch,
                                  llm_dtype, train_vit)


def _runner_iterations(work: Path, model_type: str, device_name: str, iters: int, batch: int,
                       llm_dtype: str, train_vit: bool) -> dict[str, Any]:
    import torch

    import lavis_ext  # noqa: F401
    import lavis  # noqa: F401
    from lavis_ext.captions.engine import synthesize_records
    from lavis_ext.data.prepare import prepare_dataset
    from lavis_ext.data.records import load_records, save_records
    from lavis_ext.data.synthetic.writers import make_synthetic
    from lavis_ext.entry import train_main
    from lavis_ext.models.exp_blip import ExpBlip
    from lavis_ext.method.recipe import Source, captions_path, write_run_config

    make_synthetic("emotionet", work / "data", max(batch * 4, 16), seed=0, variant="csv")
    prepare_dataset("emotionet", work / "data", work / "prepared")
    for split in ("train", "test"):
        records = load_records(work / "prepared" / f"{split}.json")
        synthesize_records(records, "au-rule", progress=False, echo=lambda _: None)
        save_records(records, captions_path(work, "emotionet", split))
    tiny = model_type == "tiny"
    template = REPO / "projects" / "au_blip" / ("stage2_tiny.yaml" if tiny else "stage2.yaml")
    size = 112 if tiny else 224
    overrides = {f"model.{k}": v for k, v in
                 overrides_for(model_type, 2, llm_dtype, train_vit).items()}
    overrides["run.output_dir"] = str(work / "runs")
    overrides.update({
        "model.model_type": model_type, "run.runner": "runner_expblip_iter", "run.max_iters": iters,
        "run.iters_per_inner_epoch": iters, "run.batch_size_train": batch,
        "run.batch_size_eval": batch, "run.test_splits": [], "run.valid_splits": [],
        "run.num_workers": 2, "run.warmup_steps": 1, "run.device": device_name,
        "run.amp": True, "run.amp_dtype": "bfloat16", "run.distributed": True,
        "run.world_size": 1, "run.dist_url": "env://"})
    for split in ("train", "eval"):
        overrides[f"datasets.facial_caption_mix.vis_processor.{split}.image_size"] = size
    cfg = write_run_config(work, template, "au_blip", 2,
                           [Source("emotionet", work / "prepared", work / "data")], overrides)
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                       ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29517")):
        os.environ.setdefault(key, value)
    stamps: list[float] = []
    original = ExpBlip.forward

    def timed_forward(self: Any, samples: dict[str, Any]) -> Any:
        out = original(self, samples)
        if samples["image"].is_cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return out

    ExpBlip.forward = timed_forward
    if device_name.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    try:
        code = train_main(["--cfg-path", str(cfg)])
    finally:
        ExpBlip.forward = original
    if code not in (0, None):
        raise RuntimeError(f"the runner exited with {code}")
    if len(stamps) < 4:
        raise RuntimeError(f"only {len(stamps)} training iterations ran; need at least 4")
    timed = stamps[2:]  # after two warm-up iterations
    samples_per_s = (len(timed) - 1) * batch / (timed[-1] - timed[0])
    return {"type": model_type, "runner_iters": len(stamps), "runner_batch": batch,
            "samples_per_s": samples_per_s,
            "peak_gib": peak_memory_gib(torch.device(device_name))}


def _count(n: float) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.1f} M"


def report(result: dict[str, Any]) -> None:
    if "samples_per_s" in result:
        print(f"{result['type']}: runner_iter stage 2, {result['runner_iters']} iterations at "
              f"batch {result['runner_batch']}: {result['samples_per_s']:.2f} samples/s, peak "
              f"{result['peak_gib']:.1f} GiB", flush=True)
        return
    print(f"\n== {result['type']} on {result['device']} ({result['threads']} threads), LLM "
          f"{result['llm_param_dtype']}, image encoder {result['vit_param_dtype']}, "
          f"{'trained' if result['train_vit'] else 'frozen'} in the stage-2 step")
    print(f"stage 1: build {result['stage1_build_s']:.1f} s, one step "
          f"{result['stage1_step_s']:.2f} s, peak {result['stage1_peak_gib']:.1f} GiB")
    print(f"stage 2: build {result['stage2_build_s']:.1f} s (peak "
          f"{result['stage2_build_peak_gib']:.1f} GiB), one step {result['stage2_step_s']:.2f} s "
          f"(peak {result['stage2_step_peak_gib']:.1f} GiB; {_count(result['params_vit'])} ViT "
          f"+ {_count(result['params_llm'])} LLM parameters)")
    print(f"{'batch':>5} {'total s':>8} {'ViT s':>8} {'Q-Former s':>10} {'prefill s':>9} "
          f"{'decode s/token':>14} {'tokens':>6} {'tokens/s':>9} {'peak GiB':>8}")
    for g in result["generate"]:
        print(f"{g['batch']:>5} {g['total_s']:>8.2f} {g['vit_s']:>8.3f} {g['qformer_s']:>10.3f} "
              f"{g['prefill_s']:>9.3f} {g['decode_per_token_s']:>14.4f} {g['new_tokens']:>6} "
              f"{g['tokens_per_s']:>9.2f} {g['peak_gib']:>8.1f}")
    stock = {g["batch"]: g for g in result.get("generate_stock") or []}
    if stock:
        print("decode per token, stock (LAVIS's OPT class: no KV cache) vs ours "
              "(ExpBlipOPTForCausalLM: KV cache):")
        print(f"{'batch':>5} {'stock s/token':>13} {'ours s/token':>12} {'stock/ours':>10} "
              f"{'positions/step stock':>20} {'ours':>5}")
        for g in result["generate"]:
            if g["batch"] in stock:
                old = stock[g["batch"]]
                print(f"{g['batch']:>5} {old['decode_per_token_s']:>13.4f} "
                      f"{g['decode_per_token_s']:>12.4f} "
                      f"{old['decode_per_token_s'] / g['decode_per_token_s']:>10.2f} "
                      f"{old['decode_positions_per_step']:>20.1f} "
                      f"{g['decode_positions_per_step']:>5.1f}")
    print(f"peak memory of any phase: {result['peak_gib']:.1f} GiB"
          f"{'' if result.get('mapped_heap') is None else ' (large blocks mapped apart)' if result['mapped_heap'] else ' (glibc heap as is)'}")
    runs = {g["batch"]: g for g in result["generate"]}
    if 1 in runs and len(runs) > 1:
        big = max(runs)
        one, many = runs[1], runs[big]
        vit_flop = 2 * result["params_vit"] * result["vit_tokens"]
        llm_bytes = result["params_llm"] * (2 if "16" in result["llm_param_dtype"] else 4)
        print(f"batch {big} / batch 1 time ratio (arithmetic beside it):")
        print(f"  ViT forward   {many['vit_s'] / one['vit_s']:6.2f}   compute-bound: ~{big} "
              f"(2 x {_count(result['params_vit'])} params x {result['vit_tokens']} tokens "
              f"= {vit_flop / 1e12:.3f} TFLOP per image)")
        print(f"  Q-Former      {many['qformer_s'] / one['qformer_s']:6.2f}   small; between "
              f"1 and {big}")
        print(f"  LLM prefill   {many['prefill_s'] / one['prefill_s']:6.2f}   compute-bound "
              f"once large: up to ~{big}")
        beams = result["beams"]
        print(f"  decode/token  {many['decode_per_token_s'] / one['decode_per_token_s']:6.2f}"
              f"   memory-bound: ~1 (each step reads {llm_bytes / 1e9:.2f} GB of weights; "
              f"{2 * result['params_llm'] * big * beams / 1e12:.3f} TFLOP for {big}x{beams} "
              f"beams vs {2 * result['params_llm'] * beams / 1e12:.3f} for 1x{beams}) until "
              "compute-bound")
        print(f"  whole batch   {many['total_s'] / one['total_s']:6.2f}   -> per image "
              f"{one['total_s'] / (many['total_s'] / big):.2f}x faster at batch {big}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", nargs="+", default=["vitg_opt2.7b", "vitg_opt6.7b"],
                        help="exp_blip model types (tiny runs in seconds)")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--llm-dtype", default="bfloat16")
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--step-batch", type=int, default=2,
                        help="training-step batch (stage 1 needs 2 for in-batch negatives)")
    parser.add_argument("--train-vit", choices=("auto", "yes", "no"), default="auto",
                        help="train the image encoder in the stage-2 step (the paper does); "
                             "auto: on GPU only (ViT-G + AdamW in fp32 adds ~12 GB)")
    parser.add_argument("--runner-iters", type=int, default=0,
                        help="also train stage 2 this many iterations through the LAVIS runner")
    parser.add_argument("--runner-batch", type=int, default=8)
    parser.add_argument("--no-stock", action="store_true",
                        help="skip the stock-path decoding (LAVIS's OPT without a KV cache)")
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument("--skip-bench", action="store_true",
                        help="only the runner iterations")
    parser.add_argument("--glibc-heap", action="store_true",
                        help="leave glibc's mmap threshold as is (default on CPU: blocks of "
                             "1 MiB or more get their own mapping; see lavis_ext/memory.py)")
    args = parser.parse_args(argv)
    train_vit = args.train_vit == "yes" or (args.train_vit == "auto" and
                                            args.device.startswith("cuda"))
    results = []
    if len(args.types) > 1:  # one child per type: its own peak memory
        for model_type in args.types:
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
                out = handle.name
            child = [sys.executable, __file__, *_child_args(argv), "--types", model_type,
                     "--json", out]
            done = subprocess.run(child)
            if done.returncode != 0:
                print(f"{model_type}: failed with exit code {done.returncode}", flush=True)
                return done.returncode
            results += json.loads(Path(out).read_text())
            os.unlink(out)
    else:
        model_type = args.types[0]
        if not args.skip_bench:
            import torch

            print(f"torch {torch.__version__}; building {model_type} from random weights ...",
                  flush=True)
            mapped = None
            if args.device == "cpu" and not args.glibc_heap:
                mapped = map_large_allocations()
            results.append(bench_type(model_type, args.device, args.llm_dtype, args.beams,
                                      args.new_tokens, args.batches, train_vit,
                                      args.step_batch, stock=not args.no_stock))
            results[-1]["mapped_heap"] = mapped
            report(results[-1])
        if args.runner_iters:
            results.append(runner_iterations(model_type, args.device, args.runner_iters,
                                             args.runner_batch, args.llm_dtype, train_vit))
            report(results[-1])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def _child_args(argv: list[str] | None) -> list[str]:
    """The command line without --types / --json (each child gets its own)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    kept, skip = [], False
    for arg in argv:
        if arg in ("--types", "--json"):
            skip = True
            continue
        if skip and not arg.startswith("--"):
            continue
        skip = False
        kept.append(arg)
    return kept


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
