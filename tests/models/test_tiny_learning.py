"""The tiny captioner must learn to see within a CPU-test budget.

This guards the two design choices the demo's learning depends on (docs/models.md): the conv
stem's BatchNorm and the tiny LM's content-prefix pre-training. Without either, the captioner
writes a few frequent captions whatever the face and the AU F1 read back from its captions
equals the shuffled-label control.
"""
import random

import pytest
import torch
from omegaconf import OmegaConf

from lavis_ext.captions.rules import au_caption
from lavis_ext.data.synthetic import draw_face, random_aus
from lavis_ext.metrics.recognition import recognition_scores

AUS = (1, 4, 6, 12, 25, 26)
SIZE = 64


def _faces(n: int, seed: int) -> tuple[list, list[dict]]:
    rng = random.Random(seed)
    images, records = [], []
    while len(images) < n:
        aus = random_aus(rng, AUS, p=0.35)
        if not aus:
            continue
        images.append(draw_face(aus, rng, 112))
        records.append({"aus": {str(a): int(a in aus) for a in AUS}, "emotions": []})
    return images, records


def _setup(model_type, n_train, tmp_path, monkeypatch):
    """A tiny captioner whose LM is pre-trained on the training captions, drawn faces, the
    training augmentation and an AdamW over the trainable parts."""
    import lavis_ext  # noqa: F401

    from lavis_ext.models.exp_blip import ExpBlip
    from lavis_ext.processors import FaceImageTrainProcessor

    monkeypatch.setenv("LAVIS_EXT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    random.seed(0)
    train_images, train_records = _faces(n_train, seed=1)
    test_images, test_records = _faces(120, seed=2)
    captions = [au_caption(sorted(int(a) for a, v in r["aus"].items() if v))
                for r in train_records]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(captions) + "\n")
    cfg = OmegaConf.load(ExpBlip.default_config_path(model_type)).model
    cfg.image_size = SIZE
    cfg.tiny_lm.corpus = str(corpus)
    model = ExpBlip.from_config(cfg)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                                  weight_decay=0.05)
    return (model, train_images, captions, test_images, test_records,
            FaceImageTrainProcessor(image_size=SIZE), optimizer)


def _score(model, test_images, test_records):
    """Greedy captions of the held-out faces; AU F1 against their labels and shuffled ones."""
    from lavis.processors import load_processor

    plain = load_processor("blip_image_eval", OmegaConf.create({"image_size": SIZE}))
    model.eval()
    with torch.no_grad():
        written = model.generate({"image": torch.stack([plain(im) for im in test_images])},
                                 num_beams=1, max_length=40)
    shuffled = test_records[:]
    random.Random(3).shuffle(shuffled)
    return (written, recognition_scores(written, test_records, AUS)["au_f1_macro"],
            recognition_scores(written, shuffled, AUS)["au_f1_macro"])


@pytest.mark.slow
@pytest.mark.timeout(1800)  # trains a model; 600 s is not enough on a loaded 2-core machine
def test_tiny_captioner_names_the_aus_it_sees(tmp_path, monkeypatch):
    model, train_images, captions, test_images, test_records, augment, optimizer = _setup(
        "tiny", 900, tmp_path, monkeypatch)
    model.train()
    order: list[int] = []
    for _ in range(450):
        if len(order) < 32:
            order = random.sample(range(len(train_images)), len(train_images))
        batch, order = order[:32], order[32:]
        loss = model({"image": torch.stack([augment(train_images[i]) for i in batch]),
                      "text_input": [captions[i] for i in batch]})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    written, f1, control = _score(model, test_images, test_records)
    # Measured: 0.73 vs 0.33; with random-prefix LM pre-training 0.60 vs 0.42; without the
    # stem's BatchNorm 0.44 vs 0.29.
    assert f1 > control + 0.28, (f1, control, written[:3])


def _current_stack() -> bool:
    import transformers
    from packaging.version import Version

    from lavis_ext.models.llm import GENERIC_MIN_TRANSFORMERS

    return Version(transformers.__version__) >= Version(GENERIC_MIN_TRANSFORMERS)


EPOCHS_QWEN2 = 12  # 640 faces, 20 steps of 32 each
QWEN2_MARGIN = 0.2


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not _current_stack(), reason="the paper stack's transformers 4.26.1 has no "
                    "Qwen2 class and no decoder-only generate(inputs_embeds=); needs >= 4.46 "
                    "(.venv-current)")
def test_tiny_qwen2_captioner_learns_and_names_the_aus(tmp_path, monkeypatch):
    """The same check for a Qwen2-architecture LLM fed through inputs_embeds (no BOS, EOS as
    pad): its loss falls epoch by epoch on the drawn faces, and the AUs read back from its
    captions beat the shuffled-label control."""
    model, train_images, captions, test_images, test_records, augment, optimizer = _setup(
        "tiny_qwen2", 640, tmp_path, monkeypatch)
    assert model.opt_model.config.model_type == "qwen2"
    model.train()
    epoch_losses = []
    for _ in range(EPOCHS_QWEN2):
        order = random.sample(range(len(train_images)), len(train_images))
        losses = []
        for start in range(0, len(order) - 31, 32):
            batch = order[start:start + 32]
            loss = model({"image": torch.stack([augment(train_images[i]) for i in batch]),
                          "text_input": [captions[i] for i in batch]})["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        epoch_losses.append(sum(losses) / len(losses))

    written, f1, control = _score(model, test_images, test_records)
    print(f"qwen2 epoch losses {[round(v, 3) for v in epoch_losses]}; AU F1 {f1:.3f}, "
          f"shuffled {control:.3f}")
    # Measured (.venv-current, transformers 4.57.6, 2 cores shared with other test runs,
    # 775 s): epoch losses 0.348, 0.316, 0.311 ... 0.214 (falling every epoch); AU F1 0.659 vs
    # 0.413 shuffled.
    assert epoch_losses[0] > epoch_losses[1] > epoch_losses[2], epoch_losses
    assert f1 > control + QWEN2_MARGIN, (f1, control, written[:3])
