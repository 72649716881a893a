"""``expblip explain``: Q-Former cross-attention maps, 5-point AU regions, ATT-COS."""
import numpy as np
import pytest
import torch
from PIL import Image

from lavis_ext.models.attention import (CrossAttentionCapture, TokenGrid, query_attention,
                                          to_maps, token_grid)


def test_capture_reads_every_cross_attention_layer_and_rows_sum_to_one(tiny_captioner):
    model = tiny_captioner.model
    images = [Image.new("RGB", (112, 112), (200, 120, 90)), Image.new("RGB", (90, 90))]
    with CrossAttentionCapture(model) as capture:
        captions = tiny_captioner.caption(images, num_beams=1, max_length=5)
    probs = capture.probabilities()
    layers = model.Qformer.bert.config.num_hidden_layers  # cross_attention_freq 1: every one
    heads = model.Qformer.bert.config.num_attention_heads
    queries = model.query_tokens.shape[1]
    assert len(captions) == 2
    assert probs.shape == (layers, 2, heads, queries, 49)  # tiny encoder: 7x7, no CLS
    assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-4)
    # The hooks are gone afterwards: another call records nothing more.
    tiny_captioner.caption(images[:1], num_beams=1, max_length=3)
    assert capture.probabilities().shape[1] == 2
    maps = to_maps(probs, token_grid(49, model.visual_encoder))
    assert maps[0].queries.shape == (queries, 7, 7) and maps[0].mean.shape == (7, 7)
    assert maps[0].mean.sum() == pytest.approx(1.0, abs=1e-4)
    # The Q-Former alone (no caption) gives the same maps as the caption pass.
    tensor = torch.stack([tiny_captioner.image_processor(i) for i in images])
    alone = query_attention(model, tensor)
    assert np.allclose(alone[1].mean, maps[1].mean, atol=1e-5)


def test_grid_with_and_without_cls_and_the_cls_share_dropped():
    assert token_grid(49) == TokenGrid(7, 7, False)
    assert token_grid(257) == TokenGrid(16, 16, True)
    with pytest.raises(Exception):
        token_grid(50 + 3)
    # One query looking at the CLS half the time and at patch (row 2, col 5) the rest.
    probs = torch.zeros(1, 1, 1, 1, 17)
    probs[..., 0] = 0.5
    probs[..., 1 + 2 * 4 + 1] = 0.5
    (maps,) = to_maps(probs, token_grid(17))
    assert maps.mean.shape == (4, 4) and maps.mean[2, 1] == pytest.approx(0.5)
    assert maps.mean.sum() == pytest.approx(0.5)


def test_eva_encoder_with_cls_end_to_end_through_the_q_former(tiny_captioner):
    """BLIP-2's own encoder class (LAVIS's EVA ViT) puts a CLS token first: the grid comes
    from its patch_embed, and the CLS share is dropped from the maps."""
    import copy

    from lavis_ext.models.vision import build_tiny_eva

    small = build_tiny_eva(56, patch_size=14, width=16, depth=1, num_heads=2)
    assert token_grid(small(torch.zeros(1, 3, 56, 56)).shape[1], small) == TokenGrid(4, 4, True)
    with pytest.raises(Exception, match="declares a 4x4 grid"):
        token_grid(16, small)  # a count the declared layout cannot give
    model = copy.deepcopy(tiny_captioner.model)  # the Q-Former reads 128-wide tokens
    model.visual_encoder = build_tiny_eva(112, patch_size=14, width=128, depth=1, num_heads=4)
    images = torch.stack([tiny_captioner.image_processor(Image.new("RGB", (112, 112), c))
                          for c in ((0, 0, 0), (250, 200, 10))])
    with CrossAttentionCapture(model) as capture:
        maps = query_attention(model, images)
    probs = capture.probabilities()
    assert probs.shape[-1] == 1 + 8 * 8 and maps[0].grid == TokenGrid(8, 8, True)
    cls_share = probs[..., 0].mean(dim=(0, 2, 3))  # per image
    for result, share in zip(maps, cls_share):
        assert result.queries.shape == (8, 8, 8)
        assert result.mean.sum() == pytest.approx(1.0 - float(share), abs=1e-4)


# --- (b) the maps move with the face ------------------------------------------------------

def _content_only(model):
    """The tiny captioner with its attention driven by image content alone: no learned
    positions, batch statistics in the conv stem (its running statistics are untrained), and
    sharper cross-attention keys. A face moved by whole patches then moves its map."""
    import copy

    model = copy.deepcopy(model)
    with torch.no_grad():
        model.visual_encoder.pos_embed.zero_()
        for layer in model.Qformer.bert.encoder.layer:
            layer.crossattention.self.key.weight.mul_(10)
    model.visual_encoder.stem.train()
    return model


def test_attention_map_moves_with_the_face_by_whole_patches(tiny_captioner):
    import random

    from lavis_ext.data.synthetic.face import draw_face, random_identity

    rng = random.Random(0)
    face = draw_face({12: 4}, rng, size=48, identity=random_identity(rng), jitter=0, noise=0)

    def frame(x, y):
        canvas = Image.new("RGB", (112, 112), (90, 90, 90))
        canvas.paste(face, (x, y))
        return tiny_captioner.image_processor(canvas)

    # The tiny encoder's patches are 16 px: 32 px right is 2 columns, 32 px down 2 rows.
    model = _content_only(tiny_captioner.model)
    base, right, down = (m.mean for m in query_attention(
        model, torch.stack([frame(16, 16), frame(48, 16), frame(16, 48)])))

    def corr(a, b):
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    # Away from the border patches (whose convolutions see the zero padding), the moved
    # face's map is the first one moved by the same number of patches; unmoved it is not.
    assert corr(base[1:6, 1:5], right[1:6, 3:7]) > 0.99 and corr(base, right) < 0.7
    assert corr(base[1:5, 1:6], down[3:7, 1:6]) > 0.99 and corr(base, down) < 0.7


def _astronaut_at(offset, canvas=(700, 640)):
    from skimage import data

    frame = Image.new("RGB", canvas, (30, 40, 50))
    frame.paste(Image.fromarray(data.astronaut()), offset)
    return frame


def test_aligned_crop_keeps_the_face_put_wherever_it_is_in_the_frame(tiny_captioner):
    from lavis_ext.describe.explain import explain_images
    from lavis_ext.describe.faces import (FaceDescriber, WholeImage, load_detector,
                                          template_points)
    from lavis_ext.describe.regions import heatmap

    describer = FaceDescriber(tiny_captioner, load_detector("mtcnn"),
                              generation={"num_beams": 1, "max_length": 8})
    first, moved = explain_images([_astronaut_at((60, 60)), _astronaut_at((180, 150))],
                                  describer)
    # The landmarks, mapped by the crop's own warp, sit near the template in both crops (the
    # similarity fit leaves this face's own proportions: its nose and mouth sit off it) ...
    for result in (first, moved):
        assert result.landmark_source == "mtcnn" and result.crop.size == (224, 224)
        assert 2 < np.abs(result.landmarks - template_points(224, 0.2)).max() < 10
    assert np.abs(first.landmarks - moved.landmarks).max() < 1.5
    # ... so the crop, its attention and the regions drawn on it stay where they were, while
    # the raw frames (what the model would see without the alignment) differ throughout.
    raw = explain_images([_astronaut_at((60, 60)), _astronaut_at((180, 150))],
                         FaceDescriber(tiny_captioner, WholeImage(),
                                       generation={"num_beams": 1, "max_length": 8}))

    def pixels(result):
        return np.asarray(result.crop.resize((224, 224)), float)

    crop_change = np.abs(pixels(first) - pixels(moved)).mean()
    assert crop_change < 0.2 * np.abs(pixels(raw[0]) - pixels(raw[1])).mean()
    attention_change = np.abs(first.maps.mean - moved.maps.mean).max()
    assert attention_change < 0.5 * np.abs(raw[0].maps.mean - raw[1].maps.mean).max()
    assert raw[0].landmark_source == "template"
    assert np.abs(heatmap([12], first.landmarks, (224, 224))
                  - heatmap([12], moved.landmarks, (224, 224))).mean() < 0.01


# --- (d) regions from the 5 points -------------------------------------------------------

def test_every_au_has_a_region_around_its_landmark_centre():
    from lavis_ext.describe.faces import template_points
    from lavis_ext.describe.regions import au_region
    from lavis_ext.facs import ACTION_UNITS

    points = template_points(224, 0.2)
    left_eye, right_eye, nose, mouth_left, mouth_right = points
    size = (224, 224)

    def covers(au, xy):
        return au_region(au, points, size)[int(round(xy[1])), int(round(xy[0]))] == 1

    for au in ACTION_UNITS:
        region = au_region(au, points, size)
        assert 0 < region.sum() < 0.2 * 224 * 224, au
    assert covers(12, mouth_left) and covers(12, mouth_right) and covers(15, mouth_right)
    assert covers(5, left_eye) and covers(43, right_eye)
    assert covers(25, (mouth_left + mouth_right) / 2) and covers(26, (mouth_left + mouth_right) / 2)
    assert covers(9, ((left_eye + right_eye) / 2 + nose) / 2)
    # Brows above the eyes, cheeks below them, the chin below the mouth.
    def centre_y(au):
        return np.nonzero(au_region(au, points, size))[0].mean()

    eye_y, mouth_y = left_eye[1], mouth_left[1]
    assert centre_y(1) < eye_y and centre_y(2) < eye_y and centre_y(4) < eye_y
    assert eye_y < centre_y(6) < nose[1] and centre_y(17) > mouth_y
    assert not covers(12, left_eye) and not covers(1, mouth_left)


def test_regions_follow_shifted_scaled_and_rolled_landmarks():
    from lavis_ext.describe.faces import template_points
    from lavis_ext.describe.regions import au_region, heatmap

    points = template_points(112, 0.2)
    size = (224, 224)
    base = heatmap([1, 12], points, size)
    shifted = heatmap([1, 12], points + [40, 24], size)
    assert np.allclose(np.roll(base, (24, 40), axis=(0, 1))[30:, 50:], shifted[30:, 50:],
                       atol=0.05)
    assert base.max() == pytest.approx(1.0) and base.min() == 0.0
    # Scaled about the origin by 2: the mouth corner region scales with the face.
    small, large = au_region(12, points, size), au_region(12, points * 2, size)
    assert large.sum() == pytest.approx(4 * small.sum(), rel=0.15)
    # Rolled 40 degrees about the nose: the corner regions roll onto the rolled corners.
    angle = np.radians(40)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    rolled = (points * 2 - points[2] * 2) @ rotation.T + points[2] * 2
    region = au_region(12, rolled, size)
    for corner in rolled[3:]:
        assert region[int(round(corner[1])), int(round(corner[0]))] == 1
    assert not np.array_equal(region, large)


def test_cue_aus_codebook_and_att_cos_bounds():
    from lavis_ext.describe.regions import cosine, cue_aus
    from lavis_ext.facs import AU_CUE_CODEBOOK

    assert cue_aus([12, 6]) == ((6, 12), "caption")
    assert cue_aus([], ["happy"]) == (AU_CUE_CODEBOOK["happiness"], "codebook")
    assert cue_aus([], ["neutral"]) == ((), "none")
    assert AU_CUE_CODEBOOK["disgust"] == (9, 10, 16, 17, 25, 26)
    a = np.random.default_rng(0).random((7, 7))
    assert cosine(a, a) == pytest.approx(1.0) and cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(a, np.zeros_like(a)) is None


# --- (c) the command, end to end -------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A LAVIS-style training checkpoint of the tiny captioner (weights + run config)."""
    from omegaconf import OmegaConf

    from lavis_ext.describe.captioner import load_captioner
    from lavis_ext.models.exp_blip import ExpBlip

    net = load_captioner("exp_blip:tiny").model
    config = OmegaConf.to_container(OmegaConf.load(ExpBlip.default_config_path("tiny")).model)
    config["generation"] = {"num_beams": 1, "max_len": 12}
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint_0.pth"
    torch.save({"model": net.state_dict(), "config": {"model": config}, "epoch": 0}, path)
    return path


def test_cli_writes_overlays_grids_and_a_table_with_att_cos(tmp_path, tiny_checkpoint, capsys):
    import json

    from skimage import data

    from lavis_ext.cli import main

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    crop = tmp_path / "crop.png"  # --no-detect would take it as an aligned crop; here: no face
    Image.new("RGB", (160, 160), (90, 140, 200)).save(crop)
    out = tmp_path / "explained"
    code = main(["explain", str(photo), str(crop), "--model", str(tiny_checkpoint),
                 "--out", str(out), "--max-length", "12"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "crop.png: no face detected" in captured.err
    table = json.loads((out / "astronaut_explain.json").read_text())
    for name in ("astronaut_attention_mean.png", "astronaut_attention_queries.png",
                 "astronaut_au_heatmap.png"):
        assert Image.open(out / name).size[0] >= 112, name
    assert Image.open(out / "astronaut_attention_mean.png").size == (224, 224)
    assert table["caption"] and table["landmark_source"] == "mtcnn"
    assert table["grid"] == {"rows": 7, "cols": 7, "cls": False} and table["queries"] == 8
    assert set(table["attention_mass"]) == {f"AU{au:02d}" for au in table["cue_aus"]}
    assert all(0.0 <= m <= 1.0 for m in table["attention_mass"].values())
    if table["cue_aus"]:
        assert -1.0 <= table["att_cos"] <= 1.0
    else:
        assert table["att_cos"] is None
    summary = json.loads((out / "explain_summary.json").read_text())
    assert [row["image"] for row in summary["images"]] == [str(photo)]
    assert summary["failures"][0]["error"] == "no face detected"
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries
    # --no-detect on a folder: each image in it is a crop; the regions come from the template.
    folder = tmp_path / "crops"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (160, 160), (90, 140, 200)).save(folder / "sub" / "a.png")
    (folder / "notes.txt").write_text("not an image")
    assert main(["explain", str(folder), "--no-detect", "--model", str(tiny_checkpoint),
                 "--out", str(out)]) == 0
    table = json.loads((out / "sub_a_explain.json").read_text())
    assert table["landmark_source"] == "template" and table["crop_size"] == [160, 160]


def test_synthetic_faces_know_their_5_points_and_mtcnn_agrees():
    import random

    from lavis_ext.data.synthetic.face import draw_face, draw_face_points
    from lavis_ext.describe.faces import load_detector
    from lavis_ext.describe.regions import cosine, heatmap

    detector = load_detector("mtcnn")
    for seed in range(4):
        image, points = draw_face_points({12: 3}, random.Random(seed), 160, noise=0)
        # Same draws as draw_face: the same seed gives the same picture.
        same = draw_face({12: 3}, random.Random(seed), 160, noise=0)
        assert np.array_equal(np.asarray(image), np.asarray(same))
        pixels = np.asarray(image).astype(int)
        for x, y in points[:2]:  # the pupils, wherever the tilt turned them
            assert pixels[int(round(y)), int(round(x))].sum() < 120, seed
        (face,) = detector.detect([image])[0][:1]
        d = np.linalg.norm(points[1] - points[0])
        assert np.abs(np.asarray(face.landmarks) - points).max() < 0.35 * d, seed
        # So the heatmaps built from the detected and from the drawn points mostly agree.
        detected = heatmap([1, 5, 12, 17], face.landmarks, image.size)
        drawn = heatmap([1, 5, 12, 17], points, image.size)
        assert cosine(detected, drawn) > 0.7, seed


def test_cli_records_compare_the_attention_with_their_labels(tmp_path, tiny_checkpoint,
                                                             capsys):
    import json

    from skimage import data

    from lavis_ext.cli import main
    from lavis_ext.describe.faces import align, alignment_matrix, load_detector, \
        transform_points

    root = tmp_path / "images"
    root.mkdir()
    photo = Image.fromarray(data.astronaut())
    photo.save(root / "astronaut.png")
    face = load_detector("mtcnn").detect([photo])[0][0]
    align(photo, face, 224, 0.2).save(root / "astronaut_crop.png")
    base = {"dataset": "rafau", "subject": None, "split": "test", "caption": []}
    records = [
        {**base, "image": "astronaut.png", "image_id": "a/1", "aus": {"6": 1, "12": 1,
                                                                      "4": 0},
         "emotions": []},
        {**base, "image": "astronaut.png", "image_id": "a/2", "aus": {},
         "emotions": ["happiness"], "face_image": "astronaut_crop.png",
         "face_box": list(face.box), "face_landmarks": [list(p) for p in face.landmarks]},
    ]
    ann = tmp_path / "test.json"
    ann.write_text(json.dumps(records))
    out = tmp_path / "explained"
    assert main(["explain", "--ann", str(ann), "--model", str(tiny_checkpoint),
                 "--out", str(out)]) == 2
    assert "--images" in capsys.readouterr().err
    assert main(["explain", "--model", str(tiny_checkpoint), "--out", str(out)]) == 2
    assert "nothing to explain" in capsys.readouterr().err
    code = main(["explain", "--ann", str(ann), "--images", str(root),
                 "--model", str(tiny_checkpoint), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    detected = json.loads((out / "a_1_explain.json").read_text())
    prepared = json.loads((out / "a_2_explain.json").read_text())
    assert detected["landmark_source"] == "mtcnn" and prepared["landmark_source"] == "record"
    # The prepared crop's points are the detected face's, mapped by the crop's warp.
    expected = transform_points(face.landmarks, alignment_matrix(face, 224, 0.2))
    assert np.allclose(prepared["landmarks"], expected, atol=0.01)
    assert np.allclose(detected["landmarks"], expected, atol=0.01)
    assert detected["reference"]["cue_aus"] == [6, 12]
    assert detected["reference"]["cue_source"] == "labels"
    assert prepared["reference"]["cue_aus"] == [6, 12, 25]  # happiness in the codebook
    assert prepared["reference"]["cue_source"] == "codebook"
    for table in (detected, prepared):
        assert -1.0 <= table["reference"]["att_cos"] <= 1.0
        assert set(table["reference"]["attention_mass"]) == {
            f"AU{au:02d}" for au in table["reference"]["cue_aus"]}
    summary = json.loads((out / "explain_summary.json").read_text())
    assert [r["image_id"] for r in summary["images"]] == ["a/1", "a/2"]
    assert -1.0 <= summary["mean_reference_att_cos"] <= 1.0


def test_alignment_loss_has_gradients_and_prefers_aligned_attention(tiny_captioner):
    import copy

    from lavis_ext.models.attention import alignment_loss

    model = copy.deepcopy(tiny_captioner.model)
    images = torch.stack([tiny_captioner.image_processor(Image.new("RGB", (112, 112), c))
                          for c in ((30, 30, 30), (200, 180, 160))])
    with CrossAttentionCapture(model, keep_graph=True) as capture:
        embeds = model.ln_vision(model.visual_encoder(images))
        model.Qformer.bert(query_embeds=model.query_tokens.expand(2, -1, -1),
                           encoder_hidden_states=embeds, return_dict=True)
    probs = capture.probabilities()
    grid = token_grid(probs.shape[-1], model.visual_encoder)
    target = torch.zeros(2, 7, 7)
    target[:, 2:4, 1:6] = 1.0
    loss = alignment_loss(probs, target, grid)
    loss.backward()
    assert 0.0 <= loss.item() <= 18.0 and model.query_tokens.grad.abs().sum() > 0
    # On fabricated attention: spread over the target it scores 0, on part of it more, off
    # it the full weight.
    on = (target[0] / target[0].sum()).reshape(1, 1, 1, 1, 49).expand(1, 2, 1, 1, 49)
    part = torch.zeros(1, 2, 1, 1, 49)
    part[..., [2 * 7 + 1, 3 * 7 + 4]] = 0.5
    off = torch.zeros(1, 2, 1, 1, 49)
    off[..., 0] = 1.0
    losses = [float(alignment_loss(p, target, grid)) for p in (on, part, off)]
    assert losses[0] == pytest.approx(0.0, abs=1e-5) and losses[0] < losses[1] < losses[2]
    assert losses[2] == pytest.approx(9.0)
    assert float(alignment_loss(off, torch.zeros(2, 7, 7), grid)) == 0.0
