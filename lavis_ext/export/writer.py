"""Write a trained Exp-BLIP as a transformers model folder (``expblip export-hf``).

The folder holds what ``Blip2ForConditionalGeneration.from_pretrained`` and
``Blip2Processor.from_pretrained`` read: config.json, safetensors weights (sharded past
``max_shard_bytes``), the LLM's tokenizer with BLIP-2's ``<image>`` token, preprocessor and
processor configs matching the model's eval image processor, generation_config.json and a
model card. It is built in a temporary folder next to ``out`` and renamed into place, so an
interrupted export leaves nothing half-written. The key mapping is ``hf_blip2``.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from lavis_ext.errors import UsageError
from lavis_ext.export import hf_blip2
from lavis_ext.export.hf_blip2 import ExportKeyError, NotExportable

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_SHARD_BYTES = 5 * 1024 ** 3  # transformers' own default shard size ("5GB")
IMAGE_TOKEN = "<image>"
CAPTION_KINDS = {"au_blip": "AU captions (which facial action units are active)",
                 "emot_blip": "emotion captions (which emotion the face shows)",
                 "exp_blip": "expression captions (AU and emotion descriptions fused)"}


def _checkpoint_extra_keys(path: str, arch: hf_blip2.Arch) -> tuple[list[str], dict[str, Any]]:
    """Keys of a training checkpoint that the export would not carry (and its run config)."""
    from lavis_ext.models.checkpoint import read_checkpoint, state_dict_of

    raw = read_checkpoint(path)
    state = state_dict_of(raw)
    config = raw.get("config") if isinstance(raw, dict) else None
    return sorted(set(state) - hf_blip2.expected_keys(arch)), dict(config or {})


EXPORTABLE_VIT = ("eva_clip_g", "tiny_eva")


def check_encoder_config(model: str) -> None:
    """Refuse an image encoder without a transformers counterpart from the config alone,
    before anything (an LLM, say) is built. The LLM's family is checked on the built model
    (``hf_blip2.llm_family``)."""
    from omegaconf import OmegaConf

    if os.path.isfile(model):
        from lavis_ext.models.checkpoint import read_checkpoint

        raw = read_checkpoint(model)
        cfg = ((raw.get("config") or {}).get("model") or {}) if isinstance(raw, dict) else {}
    else:
        import lavis_ext  # noqa: F401  (registers the models)
        from lavis.common.registry import registry

        arch, _, model_type = model.partition(":")
        cls = registry.get_model_class(arch)
        if cls is None:
            return  # load_captioner says what is wrong with the name
        try:
            cfg = OmegaConf.load(cls.default_config_path(model_type or "base")).model
        except (KeyError, AssertionError, FileNotFoundError):
            return
    vit = cfg.get("vit_model", "eva_clip_g")
    if vit not in EXPORTABLE_VIT:
        raise NotExportable(
            f"{model}: image encoder {vit!r} has no counterpart in transformers' BLIP-2: only "
            "LAVIS's EVA ViT (vit_model eva_clip_g, or tiny_eva for tests) exports; the "
            "conv-stem `tiny` demo model and the timm ViT-B (vit_b_mae) do not")


def image_processor_config(processor: Any) -> dict[str, Any]:
    """``preprocessor_config.json`` (BlipImageProcessor) equal to our eval processor, which
    must be Resize(square, bicubic) -> ToTensor -> Normalize; anything else is refused."""
    from torchvision import transforms
    from torchvision.transforms.functional import InterpolationMode

    steps = list(getattr(getattr(processor, "transform", None), "transforms", []))
    kinds = [type(s) for s in steps]
    if kinds != [transforms.Resize, transforms.ToTensor, transforms.Normalize]:
        raise NotExportable(f"the eval image processor ({type(processor).__name__}: "
                            f"{[k.__name__ for k in kinds]}) is not Resize -> ToTensor -> "
                            "Normalize, which BlipImageProcessor cannot reproduce")
    resize, _, norm = steps
    size = resize.size if isinstance(resize.size, (list, tuple)) else (resize.size,)
    if len(size) == 1 or size[0] != size[1]:
        raise NotExportable(f"the eval processor resizes to {resize.size}; BlipImageProcessor "
                            "needs a square size")
    if resize.interpolation != InterpolationMode.BICUBIC:
        raise NotExportable(f"the eval processor resizes with {resize.interpolation}; "
                            "the export writes bicubic (PIL resample 3) only")
    return {"image_processor_type": "BlipImageProcessor", "processor_class": "Blip2Processor",
            "do_convert_rgb": True, "do_resize": True,
            "size": {"height": int(size[0]), "width": int(size[1])}, "resample": 3,
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": [float(x) for x in norm.mean],
            "image_std": [float(x) for x in norm.std]}


def save_tokenizer(tokenizer: Any, folder: Path, vocab_rows: int) -> int:
    """Save the LLM's tokenizer with ``<image>`` added; return its id.

    transformers' BLIP-2 marks where the query outputs go with that token, so its id must be an
    embedding row the LLM has but the tokenizer does not use (OPT: 50265 of 50272 rows).
    """
    tok = copy.deepcopy(tokenizer)
    image_id = len(tok)
    if IMAGE_TOKEN in tok.get_vocab():
        image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    elif image_id >= vocab_rows:
        raise NotExportable(
            f"the LLM has {vocab_rows} embedding rows and the tokenizer uses all of them "
            f"({len(tok)} tokens): transformers' BLIP-2 needs one spare row for its {IMAGE_TOKEN} "
            "token (OPT has 7; for the tiny LM set model.tiny_lm.spare_ids)")
    else:
        tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tok.convert_tokens_to_ids(IMAGE_TOKEN) != image_id:
        raise RuntimeError(f"{IMAGE_TOKEN} got id {tok.convert_tokens_to_ids(IMAGE_TOKEN)}, "
                           f"expected {image_id}")
    tok.save_pretrained(str(folder))
    return image_id


def save_weights(state: dict[str, torch.Tensor], folder: Path, max_shard_bytes: int) -> list[str]:
    """safetensors shards (in key order) + index, or one model.safetensors; return the files."""
    from safetensors.torch import save_file

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(folder / "model.safetensors"), metadata=meta)
        return ["model.safetensors"]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards):
        save_file(shard, str(folder / name), metadata=meta)
        weight_map.update({key: name for key in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return names + ["model.safetensors.index.json"]


def model_card(source: str, arch_name: str, run_config: dict[str, Any], parameters: int,
               dtype: str, hf: dict[str, Any]) -> str:
    datasets = sorted((run_config.get("datasets") or {}).keys())
    data = (", ".join(f"`{d}`" for d in datasets) if datasets else
            "not recorded (exported from a model name or a checkpoint without its run config)")
    kind = CAPTION_KINDS.get(arch_name, f"captions of the `{arch_name}` model")
    vision, text = hf["vision_config"], hf["text_config"]
    return f"""---
library_name: transformers
pipeline_tag: image-to-text
tags: [blip-2, facial-expression, facial-action-units, image-captioning]
---
# {arch_name} (Exp-BLIP family), exported by `expblip export-hf`

A BLIP-2 captioner that describes a face: {kind}.

- Method: Exp-BLIP, "Describe Your Facial Expressions by Linking Image Encoders and Large
  Language Models" (Yuan, Zeng, Shan, BMVC 2023), reimplemented with `lavis_ext`.
- Source: `{source}`
- Training data (datasets of the run): {data}
- Caption kind: {kind}
- Architecture: EVA ViT ({vision['num_hidden_layers']} blocks, width {vision['hidden_size']}),
  Q-Former ({hf['qformer_config']['num_hidden_layers']} layers, {hf['num_query_tokens']}
  queries), {text['model_type']} LLM ({text['num_hidden_layers']} layers, width
  {text['hidden_size']});
  {parameters:,} parameters, stored as {dtype}.

```python
from transformers import Blip2ForConditionalGeneration, Blip2Processor
model = Blip2ForConditionalGeneration.from_pretrained(FOLDER)
processor = Blip2Processor.from_pretrained(FOLDER)
inputs = processor(images=face_crop, text="", return_tensors="pt")
ids = model.generate(**inputs, **model.generation_config.to_diff_dict())
print(processor.batch_decode(ids, skip_special_tokens=True)[0].strip())
```

Inputs are aligned face crops, as in training. The descriptions are machine-generated and
can be wrong; do not use them to make decisions about people.
"""


def export_hf(model: str, out: str | os.PathLike, *, dtype: str = "float32",
              max_shard_bytes: int = DEFAULT_SHARD_BYTES, force: bool = False) -> Path:
    """Export ``model`` (a training checkpoint or ``arch:type``) to the folder ``out``."""
    from lavis_ext.models.checkpoint import IncompleteCheckpointError
    from lavis_ext.describe.captioner import load_captioner

    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype!r}: expected one of {sorted(DTYPES)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise UsageError(f"--out {out}: exists and is not empty (choose a new folder, or "
                         "--force to replace it)")
    check_encoder_config(model)
    try:
        captioner = load_captioner(model, "cpu")
    except IncompleteCheckpointError as err:
        raise ExportKeyError(f"{model}: {err}") from None
    net = captioner.model
    arch = hf_blip2.arch_of(net)
    run_config: dict[str, Any] = {}
    if os.path.isfile(model):
        extra, run_config = _checkpoint_extra_keys(model, arch)
        if extra:
            raise ExportKeyError(f"{model}: {len(extra)} key(s) not mapped to "
                                 f"Blip2ForConditionalGeneration: {', '.join(extra[:10])}")
    report = getattr(net, "load_report", None) or {}  # the finetuned file, however named
    leftover = sorted(report.get("unexpected") or []) + [
        f"{item} (shape mismatch)" for item in report.get("mismatched") or []]
    if leftover:
        raise ExportKeyError(f"{report.get('source', model)}: {len(leftover)} key(s) not mapped "
                             f"to Blip2ForConditionalGeneration: {', '.join(leftover[:10])}")
    state = hf_blip2.convert(net.state_dict(), arch, DTYPES[dtype], source=model)
    # the ids our generate counts in min_length: BOS (where the family starts with one) + prompt
    prompt_len = len(net.llm_family.prompt_ids(net.opt_tokenizer, net.opt_model.config,
                                               net.prompt))
    if net.prompt:
        raise NotExportable(f"the model has a prompt ({net.prompt!r}); export-hf writes "
                            "prompt-free captioners only (pass the prompt as text instead)")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        image_id = save_tokenizer(net.opt_tokenizer, tmp, net.opt_model.config.vocab_size)
        config = hf_blip2.hf_config(net, arch, image_id, dtype)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        generation = hf_blip2.generation_config(net, captioner.generation, prompt_len)
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2))
        (tmp / "preprocessor_config.json").write_text(
            json.dumps(image_processor_config(captioner.image_processor), indent=2))
        (tmp / "processor_config.json").write_text(json.dumps(
            {"processor_class": "Blip2Processor", "num_query_tokens": arch.num_query_tokens},
            indent=2))
        save_weights(state, tmp, max_shard_bytes)
        parameters = sum(t.numel() for t in state.values())
        arch_name = (run_config.get("model") or {}).get("arch") or model.partition(":")[0]
        if os.path.isfile(model) and not run_config:
            arch_name = "exp_blip"
        (tmp / "README.md").write_text(model_card(model, arch_name, run_config, parameters,
                                                  dtype, config))
        umask = os.umask(0)
        os.umask(umask)
        for path in tmp.iterdir():  # mkdtemp and safetensors create owner-only files
            path.chmod(0o666 & ~umask)
        tmp.chmod(0o777 & ~umask)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
