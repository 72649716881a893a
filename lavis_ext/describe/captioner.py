"""Load a trained captioner for inference: from a training checkpoint or a registered name.

A LAVIS training checkpoint (stage 2's last, ``checkpoint_19.pth`` for the paper's 20 epochs;
stage 2 has no validation split, so no ``checkpoint_best.pth`` is written) carries the run's config, so the model
is rebuilt from it with nothing else to pass. Either way loading is strict: a checkpoint
without the Q-Former, its queries or the LLM projection (or the image encoder, when no weight
file supplies it) is refused with the key report, and unexpected keys are logged as warnings. A name such as ``exp_blip:tiny`` (or
``exp_blip``, i.e. its ``base`` type) goes through ``load_model_and_preprocess``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from omegaconf import OmegaConf

from lavis_ext.errors import InputError, UsageError
from lavis_ext.tasks.facial_captioning import GENERATION_KEYS


@dataclass
class Captioner:
    model: torch.nn.Module
    image_processor: Callable[[Any], torch.Tensor]
    generation: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def caption(self, images: list[Any], **overrides: Any) -> list[str]:
        """Captions for PIL images (one each; ``num_captions`` > 1 gives several each)."""
        if not images:
            return []
        batch = torch.stack([self.image_processor(img.convert("RGB")) for img in images])
        kwargs = {**self.generation, **{k: v for k, v in overrides.items() if v is not None}}
        return self.model.generate({"image": batch.to(self.device)}, **kwargs)


def generation_kwargs(settings: Any) -> dict[str, Any]:
    """Translate a YAML ``generation`` block into ``generate`` keyword arguments."""
    settings = dict(settings or {})
    return {GENERATION_KEYS[k]: v for k, v in settings.items() if k in GENERATION_KEYS}


def load_captioner(model: str, device: str = "cpu") -> Captioner:
    """``model``: a training checkpoint (.pth) or ``arch[:model_type]``.

    Loading changes nothing process-wide: whether glibc maps large blocks is the command's
    decision (``lavis_ext.memory.heap_mapping_pays``, from the loaded model's size).
    """
    import lavis_ext  # noqa: F401  (registers models)
    from lavis.common.registry import registry
    from lavis.processors import load_processor

    from lavis_ext.models.checkpoint import read_checkpoint

    if os.path.isfile(model):
        checkpoint = read_checkpoint(model)  # memory-mapped: only the config is read here
        config = (checkpoint.get("config") or {}).get("model") if isinstance(
            checkpoint, dict) else None
        del checkpoint
        if not config or "arch" not in config:
            raise InputError(f"{model}: the checkpoint holds no model config (LAVIS training "
                             "checkpoints do); load it with --model ARCH:TYPE and set "
                             "model.finetuned instead")
        cfg = OmegaConf.create(config)
        # Loaded as the model's finetuned weights: strictly (trained parts must be there),
        # and the image encoder needs no weight file when the checkpoint holds it.
        cfg.load_finetuned, cfg.load_pretrained, cfg.finetuned = True, False, model
        # Inference trains nothing: the image encoder is frozen in half precision, as in the
        # inference configs (fp16 on GPU, the LLM's bf16 on CPU; ViT-G 2 GB instead of 4).
        cfg.freeze_vit, cfg.vit_precision = True, "fp16"
        cfg.device = str(device)  # what the precisions follow (lavis_ext.models.precision)
        cls = registry.get_model_class(cfg.arch)
        if cls is None:
            raise InputError(f"{model}: model architecture {cfg.arch!r} is not registered")
        net = cls.from_config(cfg)
        preprocess = OmegaConf.load(cls.default_config_path(cfg.get("model_type", "base"))
                                    ).preprocess
        processor_cfg = preprocess.vis_processor.eval
        processor_cfg.image_size = cfg.get("image_size", processor_cfg.get("image_size"))
        generation = generation_kwargs(cfg.get("generation"))
    else:
        arch, _, model_type = model.partition(":")
        cls = registry.get_model_class(arch)
        if cls is None:
            raise UsageError(f"--model {model!r}: neither a checkpoint file nor a registered "
                             "model name (e.g. exp_blip:tiny)")
        # What LAVIS's load_model_and_preprocess does, with the target device in the model
        # config: LAVIS passes none to from_config, and the precisions follow it.
        cfg = OmegaConf.load(cls.default_config_path(model_type or "base"))
        model_cfg = cfg.model
        model_cfg.device = str(device)
        net = cls.from_config(model_cfg)
        if torch.device(device).type == "cpu":
            net = net.float()  # as LAVIS on CPU (the plugin's models keep their half parts)
        processor_cfg = cfg.preprocess.vis_processor.eval
        generation = generation_kwargs(cfg.model.get("generation"))
    processor = load_processor(processor_cfg.name, processor_cfg)
    net = net.to(device).eval()
    return Captioner(net, processor, generation, model)
