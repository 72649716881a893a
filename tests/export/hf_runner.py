"""Run an exported folder with current transformers; called by test_export_hf.py in a
subprocess whose PYTHONPATH puts .cache/hf-current first (torch and numpy from .venv).

Usage: python hf_runner.py REQUEST.pt RESULT.pt
"""
import sys

import torch


def main(request_path: str, result_path: str) -> None:
    import transformers
    from PIL import Image
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    request = torch.load(request_path)
    folder = request["folder"]
    model, info = Blip2ForConditionalGeneration.from_pretrained(
        folder, output_loading_info=True, dtype=torch.float32)
    model.eval()
    processor = Blip2Processor.from_pretrained(folder)
    pixels = request["pixel_values"]
    result = {"version": transformers.__version__,
              "loading": {k: sorted(map(str, v)) for k, v in info.items() if v}}
    with torch.no_grad():
        vision_out = model.vision_model(pixels, output_hidden_states=True)
        vision, encoder = vision_out.last_hidden_state, vision_out.hidden_states[-1]
        query = model.query_tokens.expand(pixels.shape[0], -1, -1)
        atts = torch.ones(vision.shape[:-1], dtype=torch.long)
        qformer = model.qformer(query_embeds=query, encoder_hidden_states=vision,
                                encoder_attention_mask=atts).last_hidden_state
        text = request["text_ids"]
        image_ids = torch.full((text.shape[0], model.config.num_query_tokens),
                               model.config.image_token_id, dtype=torch.long)
        input_ids = torch.cat([image_ids, text], dim=1)
        logits = model(pixel_values=pixels, input_ids=input_ids,
                       attention_mask=torch.ones_like(input_ids)).logits
        images = [Image.open(p).convert("RGB") for p in request["image_files"]]
        inputs = processor(images=images, text=[""] * len(images), return_tensors="pt")
        captions = {}
        for name, extra in (("greedy", {"num_beams": 1}), ("default", {})):
            out = model.generate(**inputs, generation_config=model.generation_config, **extra)
            captions[name] = [c.strip() for c in
                              processor.batch_decode(out, skip_special_tokens=True)]
    result.update(vision=vision, encoder=encoder, qformer=qformer, logits=logits, captions=captions,
                  processed_pixels=inputs["pixel_values"], prompt_ids=inputs["input_ids"],
                  text_ids={t: processor.tokenizer(t).input_ids for t in request["texts"]})
    torch.save(result, result_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
