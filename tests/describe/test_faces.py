"""Detection with landmarks, alignment, the IoU tracker and the table (no captioner here)."""
import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from lavis_ext.errors import InputError, UsageError
from lavis_ext.describe.faces import (Face, HaarDetector, MTCNNDetector, TooManyPixels,
                                      align, iou, load_detector, open_image, template_points)
from lavis_ext.describe.table import AU_COLUMNS, COLUMNS, Table, blank_row
from lavis_ext.describe.track import IoUTracker

ASTRONAUT_FACE = (181, 62, 268 - 181, 172 - 62)  # x, y, w, h (docs/describe.md)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def mtcnn():
    return load_detector("mtcnn")


def test_mtcnn_finds_the_astronaut_with_5_landmarks(astronaut, mtcnn):
    assert isinstance(mtcnn, MTCNNDetector) and mtcnn.name == "mtcnn"
    faces = mtcnn.detect([astronaut])[0]
    assert len(faces) == 1
    face = faces[0]
    assert iou(face.box, ASTRONAUT_FACE) >= 0.5
    assert face.confidence > 0.99
    assert len(face.landmarks) == 5
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert lx < nx < rx and ly < ny < mly and mlx < mrx  # eyes, nose, mouth in order
    x, y, w, h = face.box
    assert all(x <= px <= x + w and y <= py <= y + h for px, py in face.landmarks)


def test_min_confidence_and_min_face_drop_faces(astronaut):
    assert load_detector("mtcnn", min_face=150).detect([astronaut]) == [[]]
    assert load_detector("mtcnn", min_confidence=1.0).detect([astronaut]) == [[]]
    blank = Image.new("RGB", (200, 160), (90, 140, 200))
    assert load_detector("mtcnn").detect([blank, blank]) == [[], []]


def test_equal_sized_images_share_one_batch_with_the_same_result(astronaut, mtcnn):
    alone = mtcnn.detect([astronaut])[0][0]
    flipped = astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    batch = mtcnn.detect([astronaut, flipped, Image.new("RGB", (64, 64))])
    assert len(batch[0]) == 1 and len(batch[1]) == 1 and batch[2] == []
    assert np.allclose(batch[0][0].box, alone.box, atol=0.5)
    x, y, w, h = batch[1][0].box  # the mirrored face is mirrored
    assert abs((512 - x - w) - alone.box[0]) < 3


def test_haar_is_the_fallback_when_facenet_pytorch_is_missing(monkeypatch, astronaut):
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # import raises ImportError
    detector = load_detector("auto")
    assert isinstance(detector, HaarDetector) and detector.name == "haar"
    faces = detector.detect([astronaut])[0]
    assert faces and faces[0].landmarks is None and faces[0].confidence is None
    assert iou(faces[0].box, ASTRONAUT_FACE) >= 0.5
    with pytest.raises(UsageError, match="facenet-pytorch"):
        load_detector("mtcnn")


def test_bad_detector_settings_are_usage_errors():
    with pytest.raises(UsageError, match="--min-confidence"):
        load_detector(min_confidence=1.5)
    with pytest.raises(UsageError, match="--min-face"):
        load_detector(min_face=0)
    with pytest.raises(UsageError, match="--detector"):
        load_detector("retina")


def test_alignment_puts_the_landmarks_on_the_template(astronaut, mtcnn):
    size, margin = 160, 0.3
    # Rotate the photo: the aligned crop must be upright again, eyes level.
    tilted = astronaut.rotate(25, center=(225, 115), resample=Image.Resampling.BICUBIC)
    face = mtcnn.detect([tilted])[0][0]
    crop = align(tilted, face, size=size, margin=margin)
    assert crop.size == (size, size)
    again = mtcnn.detect([crop.resize((320, 320))])[0]
    assert again, "the aligned crop still shows a face"
    points = np.asarray(again[0].landmarks) * size / 320
    assert abs(points[0, 1] - points[1, 1]) < 0.04 * size  # eyes level after alignment
    assert np.abs(points - template_points(size, margin)).max() < 0.08 * size


def test_alignment_maps_template_points_onto_themselves():
    size, margin = 120, 0.2
    points = template_points(size, margin)
    picture = np.zeros((size, size, 3), np.uint8)
    for x, y in points.round().astype(int):
        picture[y - 1:y + 2, x - 1:x + 2] = 255
    face = Face((0, 0, size, size), 1.0, [tuple(p) for p in points])
    out = np.asarray(align(Image.fromarray(picture), face, size=size, margin=margin))
    assert np.array_equal(out > 127, picture > 127)


def test_box_crop_without_landmarks_is_a_square_with_margin():
    picture = Image.new("RGB", (300, 200), (0, 0, 0))
    picture.paste((255, 255, 255), (100, 50, 160, 110))  # a 60 px "face"
    crop = np.asarray(align(picture, Face((100, 50, 60, 60)), size=100, margin=0.25))
    white = np.argwhere(crop[..., 0] > 127)
    # 60 px + 2 x 15 px margin -> 90 px; the face is 60/90 of the crop, centred.
    assert abs(white[:, 0].min() - 100 * 15 / 90) <= 1.5
    assert abs(white[:, 0].max() - 100 * 75 / 90) <= 1.5


def test_open_image_refuses_truncated_and_oversized(tmp_path, astronaut):
    from PIL import ImageFile

    path = tmp_path / "a.jpg"
    astronaut.save(path, quality=90)
    data = path.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        for flag in (True, False):  # True as LAVIS sets it on import
            ImageFile.LOAD_TRUNCATED_IMAGES = flag
            with pytest.raises(OSError, match="truncated"):
                open_image(cut)
            with pytest.raises(OSError, match="truncated"):
                open_image(io.BytesIO(cut.read_bytes()))
            assert ImageFile.LOAD_TRUNCATED_IMAGES is flag
            assert open_image(path).size == (512, 512)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    with pytest.raises(TooManyPixels, match="512x512"):
        open_image(path, max_pixels=512 * 511)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_open_image_tells_complete_from_cut_files_of_other_formats(tmp_path, astronaut, fmt):
    """The end-of-data check reads every format's complete file as complete."""
    from PIL import ImageFile

    path = tmp_path / f"a.{fmt.lower()}"
    astronaut.save(path, format=fmt)
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        assert open_image(path).size == (512, 512)
        if fmt in ("PNG", "BMP"):
            cut = tmp_path / f"cut.{fmt.lower()}"
            cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            with pytest.raises(OSError, match="truncated"):
                open_image(cut)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def test_open_image_leaves_pils_global_flag_alone_for_other_threads(tmp_path, astronaut):
    """While one thread opens (cut and whole) images, another thread's view of
    LOAD_TRUNCATED_IMAGES never changes."""
    import threading

    from PIL import ImageFile

    path = tmp_path / "a.jpg"
    astronaut.save(path, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    seen, done = set(), threading.Event()

    def watch():
        while not done.is_set():
            seen.add(ImageFile.LOAD_TRUNCATED_IMAGES)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(20):
            with pytest.raises(OSError, match="truncated"):
                open_image(cut)
            open_image(path)
    finally:
        done.set()
        watcher.join()
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    assert seen == {True}


# -- tracker ------------------------------------------------------------------------------------
def test_tracker_keeps_ids_for_moving_faces_and_starts_new_ones():
    tracker = IoUTracker(iou_threshold=0.3, max_missed=1)
    assert tracker.update([(0, 0, 50, 50), (200, 0, 50, 50)]) == [0, 1]
    # Both move 10 px; listed in the other order: ids follow the boxes, not the order.
    assert tracker.update([(210, 5, 50, 50), (10, 5, 50, 50)]) == [1, 0]
    # A new face far away gets a new id; face 1 is missing for one frame.
    assert tracker.update([(20, 10, 50, 50), (400, 400, 40, 40)]) == [0, 2]
    assert tracker.update([(215, 5, 50, 50), (25, 10, 50, 50)]) == [1, 0]
    # Missing for more than max_missed frames: the track ends, the face comes back as new.
    tracker.update([(25, 10, 50, 50)])
    tracker.update([(25, 10, 50, 50)])
    assert tracker.update([(215, 5, 50, 50), (25, 10, 50, 50)]) == [3, 0]


def test_tracker_matches_best_overlap_first_and_resumes():
    tracker = IoUTracker(iou_threshold=0.2)
    tracker.resume([(7, (100, 100, 60, 60)), (9, (130, 100, 60, 60))], next_id=10)
    # The box at 128 overlaps track 9 best, the one at 98 overlaps track 7 best.
    assert tracker.update([(128, 100, 60, 60), (98, 100, 60, 60)]) == [9, 7]
    assert tracker.update([(500, 500, 10, 10)]) == [10]
    with pytest.raises(ValueError):
        IoUTracker(iou_threshold=0)


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0


# -- table ----------------------------------------------------------------------------------
def _rows():
    row = blank_row("a.png", None, None)
    row.update(face_id=0, confidence=0.99, x=1.234, y=2.0, w=3.0, h=4.0, lm0_x=1.5,
               caption="brows raised,\nlips pressed", AU01=1, AU24=0, emotion="surprise")
    return [row, blank_row("b.mp4", 3, 0.12, "no face detected")]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_table_formats_load_in_pandas_and_read_back(tmp_path, suffix):
    import pandas as pd

    table = Table(tmp_path / f"rows{suffix}")
    table.append(_rows()[:1])
    table.append(_rows()[1:])
    path = str(table.path)
    frame = (pd.read_csv(path) if suffix == ".csv" else pd.read_json(path, lines=True)
             if suffix == ".jsonl" else pd.read_parquet(path))
    assert list(frame.columns) == COLUMNS and len(frame) == 2
    assert frame.loc[0, "AU01"] == 1 and frame.loc[0, "AU24"] == 0
    assert pd.isna(frame.loc[0, "AU02"]) and pd.isna(frame.loc[1, "AU01"])
    assert frame.loc[0, "caption"] == "brows raised, lips pressed"  # one line per row
    assert frame.loc[1, "frame"] == 3 and frame.loc[1, "timestamp_s"] == pytest.approx(0.12)
    back = list(Table(path).read())
    assert back[0]["x"] == 1.23 and back[0]["face_id"] == 0 and back[1]["frame"] == 3
    assert back[0]["AU02"] is None and back[1]["error"] == "no face detected"
    state = Table(path).state()
    assert state.rows == 2 and state.files_done == {"a.png"}
    assert state.frames_done == {"b.mp4": {3}}
    assert set(AU_COLUMNS) < set(COLUMNS) and "AU01" in AU_COLUMNS


def test_table_cuts_a_torn_last_line_and_refuses_other_layouts(tmp_path, capsys):
    path = tmp_path / "rows.jsonl"
    Table(path).append(_rows())
    whole = path.read_text()
    path.write_text(whole + '{"file": "c.png", "fra')  # a crash in the middle of a row
    assert Table(path).state().rows == 2
    assert path.read_text() == whole
    assert "unfinished last line" in capsys.readouterr().out
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"file": "a.png", "box": [1, 2, 3, 4]}) + "\n")
    with pytest.raises(InputError, match="columns differ"):
        Table(old)
    with pytest.raises(UsageError, match="--out"):
        Table(tmp_path / "rows.txt")
    (tmp_path / "file.parquet").write_text("x")
    with pytest.raises(InputError, match="folder"):
        Table(tmp_path / "file.parquet")
