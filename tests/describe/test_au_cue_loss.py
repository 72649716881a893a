"""The optional AU-cue alignment loss of stage 2 (``model.au_cue_loss``): off by default,
exact when off, a clear error without maps, and ATT-COS rises when it is on."""
import copy
import random

import numpy as np
import pytest
import torch

from lavis_ext.errors import InputError

# Cue AU sets for the drawn faces: brows, mouth corners, lips, cheeks + corners, chin.
CUE_SETS = ((1, 2), (12,), (4,), (25, 26), (6, 12), (15, 17))
GRID = (7, 7)  # the tiny encoder: 16 px patches at 112 px, no CLS


def _faces(processor, count, seed):
    """A batch of drawn faces with their AUs' targets on the patch grid, from the drawn
    points (ground truth), and a caption naming the AUs."""
    from lavis_ext.data.synthetic.face import draw_face_points
    from lavis_ext.describe.regions import grid_target
    from lavis_ext.facs import au_name

    rng = random.Random(seed)
    images, maps, texts = [], [], []
    for i in range(count):
        aus = CUE_SETS[i % len(CUE_SETS)]
        image, points = draw_face_points({au: 3 for au in aus}, rng, 112)
        images.append(processor(image))
        maps.append(grid_target(aus, points, image.size, 112, GRID))
        texts.append("The face shows " + ", ".join(au_name(au).noun for au in aus) + ".")
    return {"image": torch.stack(images), "au_cue_map": torch.from_numpy(np.stack(maps)),
            "text_input": texts}


def _hooks(model):
    from lavis_ext.models.attention import cross_attention_dropouts

    return sum(len(module._forward_hooks) for _, module in cross_attention_dropouts(model))


def _held_out_att_cos(model, batch):
    """Mean ATT-COS of the model's mean cross-attention against the targets, in eval mode."""
    from lavis_ext.models.attention import query_attention
    from lavis_ext.describe.regions import cosine

    model.eval()
    maps = query_attention(model, batch["image"])
    return float(np.mean([cosine(m.mean, t) for m, t in zip(maps, batch["au_cue_map"].numpy())]))


def test_off_by_default_and_read_from_the_config():
    from omegaconf import OmegaConf

    from lavis_ext.models.exp_blip import ExpBlip, au_cue_weight

    cfg = OmegaConf.load(ExpBlip.default_config_path("tiny")).model
    assert au_cue_weight(cfg.get("au_cue_loss")) == 0.0
    assert au_cue_weight(None) == 0.0
    cfg.au_cue_loss.weight = 9
    assert ExpBlip._stage_args(cfg)["au_cue_loss"] == {"weight": 9}
    assert au_cue_weight(ExpBlip._stage_args(cfg)["au_cue_loss"]) == 9.0
    with pytest.raises(InputError, match="model.au_cue_loss: unknown key.*'wieght'"):
        au_cue_weight({"wieght": 9})
    with pytest.raises(InputError, match=">= 0"):
        au_cue_weight({"weight": -1})
    with pytest.raises(InputError, match="must be a number"):
        au_cue_weight({"weight": "nine"})


def test_targets_follow_the_eval_resize():
    from lavis_ext.data.synthetic.face import draw_face_points
    from lavis_ext.describe.regions import grid_target

    _, points = draw_face_points({12: 3}, random.Random(0), 112)
    base = grid_target((6, 12), points, (112, 112), 112, GRID)
    assert base.shape == GRID and base.max() > 0.3
    # The same face in a 224 x 168 picture (squashed to 112 square by the processor).
    wide = grid_target((6, 12), points * [2.0, 1.5], (224, 168), 112, GRID)
    assert np.allclose(base, wide, atol=1e-5)
    assert not grid_target((), points, (112, 112), 112, GRID).any()


def test_pixel_maps_are_area_averaged_onto_the_grid_and_the_mask_drops_images():
    """The datasets give maps at the image's pixels and a mask; the loss averages the maps
    onto the encoder's grid (as ATT-COS does) and leaves masked images out."""
    import cv2

    from lavis_ext.models.attention import TokenGrid, alignment_loss, cue_maps_on_grid

    grid = TokenGrid(7, 7, has_cls=False)
    pixels = torch.rand(3, 112, 112, generator=torch.Generator().manual_seed(0))
    pooled = cue_maps_on_grid(pixels, grid, (112, 112))
    expected = np.stack([cv2.resize(m, (7, 7), interpolation=cv2.INTER_AREA)
                         for m in pixels.numpy()])
    assert pooled.shape == (3, 7, 7) and np.allclose(pooled.numpy(), expected, atol=1e-5)
    assert torch.equal(cue_maps_on_grid(pooled, grid, (112, 112)), pooled)  # on the grid
    for bad in ((3, 14, 14), (3, 100, 100)):
        with pytest.raises(InputError, match=r"au_cue_map of shape .* not on the 7x7 patch "
                                             r"grid .*112x112 pixels"):
            cue_maps_on_grid(torch.ones(*bad), grid, (112, 112))
    probs = torch.rand(2, 3, 4, 8, 49, generator=torch.Generator().manual_seed(1))
    alone = alignment_loss(probs[:, :1], pooled[:1], grid)
    masked = alignment_loss(probs, pooled, grid, mask=torch.tensor([1.0, 0.0, 0.0]))
    assert float(alone) > 0 and float(masked) == pytest.approx(float(alone))
    unmasked = alignment_loss(probs, pooled, grid, mask=torch.ones(3))
    assert float(unmasked) == pytest.approx(float(alignment_loss(probs, pooled, grid)))
    assert float(unmasked) != pytest.approx(float(alone))
    assert float(alignment_loss(probs, pooled, grid, mask=torch.zeros(3))) == 0.0
    with pytest.raises(InputError, match="au_cue_mask has 2 values for a batch of 3"):
        alignment_loss(probs, pooled, grid, mask=torch.ones(2))


def test_weight_zero_is_the_plain_loss_and_maps_are_required_when_on(tiny_captioner,
                                                                      one_torch_thread):
    model = copy.deepcopy(tiny_captioner.model).eval()  # eval: no dropout, same values
    assert model.au_cue_weight == 0.0
    batch = _faces(tiny_captioner.image_processor, 4, seed=0)
    plain = {k: v for k, v in batch.items() if k != "au_cue_map"}
    with torch.no_grad():
        off = model(batch)
        without_maps = model(plain)
        assert set(off) == {"loss"} and float(off["loss"]) == float(without_maps["loss"])
        assert _hooks(model) == 0
        # On, with targets that are all zeros (no cue AUs): the same LM loss, nothing added.
        model.au_cue_weight = 9.0
        empty = model({**batch, "au_cue_map": torch.zeros(4, *GRID)})
        assert float(empty["loss"]) == float(off["loss"]) == float(empty["loss_lm"])
        assert float(empty["loss_au_cue"]) == 0.0
        on = model(batch)
        assert 0.0 < float(on["loss_au_cue"]) <= 18.0
        assert float(on["loss"]) == pytest.approx(float(off["loss"]) + float(on["loss_au_cue"]))
        assert _hooks(model) == 0  # the capture's hooks are removed after the forward
        with pytest.raises(InputError, match=r"model.au_cue_loss.weight is 9.*'au_cue_map'"):
            model(plain)
        with pytest.raises(InputError, match="not on the 7x7 patch grid"):
            model({**batch, "au_cue_map": torch.ones(4, 14, 14)})
    assert _hooks(model) == 0


@pytest.fixture(scope="module")
def seeded_start(tiny_captioner):
    """The tiny captioner with its random parts drawn from seed 0. The session's captioner
    draws them from whatever state the global generator is in (it depends on the tests run
    before), and the measured ATT-COS depends on them. ``tiny_captioner`` comes first, so
    the tiny LLM is cached and loading never seeds the generator itself; the projection
    into the LLM, built after the LLM loads, is redrawn from the seed too."""
    from lavis_ext.describe.captioner import load_captioner

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = load_captioner("exp_blip:tiny").model
        torch.manual_seed(0)
        model.opt_proj.reset_parameters()
    return model


def _train(base, pool, weight, steps):
    """``steps`` AdamW steps of the stage-2 forward over the batches of ``pool``, seed 0."""
    torch.manual_seed(0)
    model = copy.deepcopy(base).train()
    model.au_cue_weight = weight
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for step in range(steps):
        loss = model(pool[step % len(pool)])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def test_att_cos_rises_with_the_alignment_loss(tiny_captioner, seeded_start, one_torch_thread):
    """Same seed, data and steps; only the weight differs (0 and the paper's 9.0). ATT-COS is
    measured on held-out drawn faces against the regions of their drawn points."""
    processor = tiny_captioner.image_processor
    pool = [_faces(processor, 16, seed=10 + k) for k in range(8)]
    held_out = _faces(processor, 18, seed=2)
    base = seeded_start
    untrained = _held_out_att_cos(copy.deepcopy(base), held_out)
    without = _held_out_att_cos(_train(base, pool, 0.0, 60), held_out)
    with_loss = _held_out_att_cos(_train(base, pool, 9.0, 60), held_out)
    print(f"held-out ATT-COS untrained {untrained:.3f}, without {without:.3f}, "
          f"with {with_loss:.3f}")
    assert with_loss > without + 0.05, (without, with_loss)
    assert with_loss > 0.4
