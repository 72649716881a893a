"""`expblip prepare ... --faces align`: the astronaut pasted into 1040x1392 frames of a
dataset's native layout is found, aligned and cached once; frames without a face are counted
by reason and left out; AffectNet's own box is used without a detector; training reads the
crops."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from lavis_ext.cli import main
from lavis_ext.data.prepare import prepare_dataset
from lavis_ext.data.readers.affectnet import five_points_from_68
from lavis_ext.data.records import add_captions, load_records, save_records
from lavis_ext.data.synthetic import make_synthetic
from lavis_ext.describe.faces import Face, align, iou, load_detector
from lavis_ext.describe.prepare_faces import (NO_FACE, FacePreparer, FaceSettings, crop_name,
                                              MISSING, UNREADABLE)

FRAME = (1040, 1392)  # BP4D's frame size (width, height)
OFFSETS = [(300, 500), (40, 820), (520, 90)]


class ForbiddenDetector:
    """A detector double that fails the test if anything asks it for faces."""

    name = "forbidden"

    def detect(self, images):
        raise AssertionError(f"the detector was called on {len(images)} image(s)")


def frame_with(face: Image.Image, offset: tuple[int, int]) -> Image.Image:
    frame = Image.new("RGB", FRAME, (96, 96, 96))
    frame.paste(face, offset)
    return frame


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def astronaut_face(astronaut) -> Face:
    """The ground truth: the detector's face on the original 512x512 photo."""
    return load_detector("mtcnn").detect([astronaut])[0][0]


@pytest.fixture(scope="module")
def emotionet(tmp_path_factory, astronaut):
    """EmotioNet's layout (label CSV + images/) whose images are replaced by 1040x1392
    frames: three with the astronaut at an offset, one of uniform noise, one cut-off JPEG,
    one missing; then ``expblip prepare emotionet --faces align`` once."""
    work = tmp_path_factory.mktemp("emotionet")
    root, out = work / "raw", work / "prepared"
    manifest = make_synthetic("emotionet", root, 6, seed=0, image_size=48, variant="csv")
    names = sorted(manifest["labels"])
    assert len(names) == 6
    pasted = {}
    for name, offset in zip(names, OFFSETS):
        frame_with(astronaut, offset).save(root / "images" / f"{name}.jpg", quality=95)
        pasted[name] = offset
    noise = np.random.default_rng(0).integers(0, 256, (FRAME[1], FRAME[0], 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "images" / f"{names[3]}.jpg", quality=95)
    cut = root / "images" / f"{names[4]}.jpg"
    frame_with(astronaut, OFFSETS[0]).save(cut, quality=95)
    cut.write_bytes(cut.read_bytes()[:4000])
    (root / "images" / f"{names[5]}.jpg").unlink()
    code = main(["prepare", "emotionet", "--root", str(root), "--out", str(out),
                 "--faces", "align", "--no-progress"])
    assert code == 0
    return {"root": root, "out": out, "pasted": pasted, "noise": names[3], "cut": names[4],
            "missing": names[5]}


def written(out: Path) -> list[dict]:
    return [r for split in ("train", "test") if (out / f"{split}.json").is_file()
            for r in load_records(out / f"{split}.json")]


def test_pasted_faces_are_found_aligned_and_cached(emotionet, astronaut_face, capsys):
    records = {r["image_id"]: r for r in written(emotionet["out"])}
    assert set(records) == set(emotionet["pasted"])  # the three faces, nothing else
    x, y, w, h = astronaut_face.box
    for image_id, (dx, dy) in emotionet["pasted"].items():
        record = records[image_id]
        assert record["image"] == f"images/{image_id}.jpg"  # the source stays
        assert iou(record["face_box"], (x + dx, y + dy, w, h)) >= 0.5, record["face_box"]
        assert len(record["face_landmarks"]) == 5
        crop = Path(record["face_image"])
        assert crop == emotionet["out"] / "faces" / "images" / f"{image_id}.jpg.png"
        with Image.open(crop) as img:
            assert img.size == (224, 224)
    report = json.loads((emotionet["out"] / "report.json").read_text())
    faces = report["faces"]
    assert faces["aligned"] == 3 and faces["by_source"] == {"detected": 3}
    assert faces["not_found"] == {NO_FACE: 1, UNREADABLE: 1, MISSING: 1}
    assert faces["not_found_examples"][NO_FACE][0].endswith(f"{emotionet['noise']}.jpg")
    assert faces["not_found_examples"][UNREADABLE][0].split(" (")[0].endswith(
        f"{emotionet['cut']}.jpg")
    assert sum(report["records_written"].values()) == 3
    assert not list((emotionet["out"] / "faces").rglob("*.tmp"))


def test_rerun_reuses_every_crop_and_detects_nothing(emotionet):
    out = emotionet["out"]
    before = {p: p.stat().st_mtime_ns for p in (out / "faces").rglob("*.png")}
    records_before = written(out)
    report = prepare_dataset("emotionet", emotionet["root"], out, progress=False,
                             faces=FacePreparer(FaceSettings(), detector=ForbiddenDetector()))
    faces = report["faces"]
    assert faces["by_source"] == {"reused": 3}
    assert faces["not_found"] == {NO_FACE: 1, UNREADABLE: 1, MISSING: 1}
    assert {p: p.stat().st_mtime_ns for p in (out / "faces").rglob("*.png")} == before
    assert written(out) == records_before


def test_other_settings_make_the_crops_again(emotionet, tmp_path):
    # Changed settings must not reuse crops made with others (the size differs here).
    out = tmp_path / "again"
    prepare_dataset("emotionet", emotionet["root"], out, progress=False,
                    faces=FacePreparer(FaceSettings(size=64, min_face=80)))
    crop = Path(written(out)[0]["face_image"])
    with Image.open(crop) as img:
        assert img.size == (64, 64)
    report = prepare_dataset("emotionet", emotionet["root"], out, progress=False,
                             faces=FacePreparer(FaceSettings(size=96, min_face=80)))
    assert report["faces"]["by_source"] == {"detected": 3}
    with Image.open(crop) as img:
        assert img.size == (96, 96)


def test_the_dataset_feeds_the_crop(emotionet):
    import lavis_ext  # noqa: F401  (LAVIS's base dataset class)
    from torchvision import transforms

    from lavis_ext.datasets.facial_datasets import FacialCaptionDataset

    records = written(emotionet["out"])
    plain = dict(records[0])
    for key in ("face_box", "face_landmarks", "face_image"):
        plain.pop(key)
    plain["image_id"] += "_whole"
    for record in records + [plain]:
        add_captions(record, "au-rule", ["A face."])
    ann = emotionet["out"] / "captioned.json"
    save_records(records + [plain], ann)
    to_tensor = transforms.ToTensor()
    dataset = FacialCaptionDataset(to_tensor, None, [(str(ann), str(emotionet["root"]))])
    for index, record in enumerate(records):
        with Image.open(record["face_image"]) as img:
            expected = to_tensor(img.convert("RGB"))
        assert torch.equal(dataset[index]["image"], expected)
    assert dataset[len(records)]["image"].shape == (3, FRAME[1], FRAME[0])  # no crop: as before


def write_affectnet(root: Path, rows: list[list[str]], image: Image.Image) -> None:
    header = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
              "facial_landmarks", "expression", "valence", "arousal"]
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    for name, part in (("training.csv", rows[:-1]), ("validation.csv", rows[-1:])):
        with (lists / name).open("w", newline="") as handle:
            csv.writer(handle).writerows([header] + part)
    for row in rows:
        path = root / "Manually_Annotated_Images" / row[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=95)


def test_affectnet_aligns_with_its_own_box_and_landmarks(tmp_path, astronaut, astronaut_face):
    dx, dy = OFFSETS[0]
    frame = frame_with(astronaut, (dx, dy))
    x, y, w, h = (round(v + d, 2) for v, d in zip(astronaut_face.box, (dx, dy, 0, 0)))
    five = [[round(px + dx, 2), round(py + dy, 2)] for px, py in astronaut_face.landmarks]
    values = [0.0] * 136
    groups = (range(36, 42), range(42, 48), [30], [48], [54])
    for point, indices in zip(five, groups):
        for i in indices:
            values[2 * i], values[2 * i + 1] = point
    assert five_points_from_68(values) == five
    landmarks = ";".join(f"{v:.2f}" for v in values)
    box = [str(v) for v in (x, y, w, h)]
    rows = [["1/box.jpg", *box, "", "1", "0.5", "0.5"],
            ["1/lnd.jpg", *box, landmarks, "3", "0.1", "0.2"],
            ["2/val.jpg", *box, landmarks, "6", "0.1", "0.2"]]
    root = tmp_path / "affectnet"
    write_affectnet(root, rows, frame)
    out = tmp_path / "prepared"
    report = prepare_dataset("affectnet", root, out, progress=False,
                             faces=FacePreparer(FaceSettings(), detector=ForbiddenDetector()))
    assert report["faces"]["by_source"] == {"from the dataset's face box": 3}
    records = {r["image_id"]: r for r in written(out)}
    assert set(records) == {"1_box", "1_lnd", "2_val"}
    source = Image.open(root / "Manually_Annotated_Images" / "1" / "box.jpg").convert("RGB")
    for image_id, points in (("1_box", None), ("1_lnd", five)):
        record = records[image_id]
        assert record["face_box"] == [x, y, w, h]
        assert record["face_landmarks"] == points
        expected = align(source, Face((x, y, w, h), None,
                                      [tuple(p) for p in points] if points else None))
        with Image.open(record["face_image"]) as crop:
            assert np.array_equal(np.asarray(crop), np.asarray(expected))


def test_crop_names_are_stable_and_stay_in_the_folder():
    assert crop_name("Sequences_2D+3D/F001/T1/2440.jpg") == "Sequences_2D+3D/F001/T1/2440.jpg.png"
    assert crop_name("a/b.jpg") != crop_name("a/b.png")
    escaped = crop_name("../outside/x.jpg")
    assert escaped.startswith("_hashed/") and escaped == crop_name("../outside/x.jpg")
    assert crop_name("/abs/x.jpg").startswith("_hashed/")


def test_face_flags_need_faces_and_auto_is_refused(tmp_path, capsys):
    make_synthetic("rafdb", tmp_path / "raw", 4, seed=0, image_size=40)
    assert main(["prepare", "rafdb", "--root", str(tmp_path / "raw"), "--out",
                 str(tmp_path / "out"), "--min-face", "80"]) == 2
    assert "--min-face only apply with --faces align" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="expected mtcnn or haar"):
        FaceSettings(detector="auto").check()
    with pytest.raises(ValueError, match="--align-size 8"):
        FacePreparer(FaceSettings(size=8))


def test_no_face_anywhere_is_exit_3(tmp_path, capsys):
    root = tmp_path / "raw"
    manifest = make_synthetic("emotionet", root, 2, seed=1, image_size=48, variant="csv")
    rng = np.random.default_rng(1)
    for name in manifest["labels"]:
        noise = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        Image.fromarray(noise).save(root / "images" / f"{name}.jpg")
    assert main(["prepare", "emotionet", "--root", str(root), "--out", str(tmp_path / "out"),
                 "--faces", "align", "--no-progress"]) == 3
    captured = capsys.readouterr()
    assert "faces not found: 2 (2 no face found)" in captured.out
    assert "all 2 faces failed" in captured.err
    assert written(tmp_path / "out") == []
