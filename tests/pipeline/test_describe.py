import json

import numpy as np
from PIL import Image

from lavis_ext.pipeline.describe import FaceDetector, describe, write_rows


def _astronaut(path):
    from skimage import data

    Image.fromarray(data.astronaut()).save(path)
    return path


def test_describe_real_photo_finds_the_face(tmp_path, tiny_captioner):
    photo = _astronaut(tmp_path / "astronaut.png")
    rows = describe([str(photo)], tiny_captioner, progress=False)
    assert len(rows) == 1
    row = rows[0]
    assert row.error is None and row.caption
    x, y, w, h = row.box
    # The face is around (177, 66, 95, 95) in the 512x512 image; the crop holds it.
    assert x <= 177 and y <= 66 and x + w >= 177 + 95 and y + h >= 66 + 95 and w < 300
    out = tmp_path / "rows.jsonl"
    write_rows(rows, str(out))
    saved = [json.loads(line) for line in out.read_text().splitlines()]
    assert saved[0]["file"] == str(photo) and saved[0]["caption"] == row.caption
    assert set(saved[0]) == {"file", "frame", "box", "caption", "aus", "emotions", "error"}


def test_unreadable_and_faceless_files_are_reported_and_the_rest_go_on(tmp_path,
                                                                         tiny_captioner):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (90, 140, 200)).save(blank)
    photo = _astronaut(tmp_path / "astronaut.png")
    rows = describe([str(broken), str(blank), str(photo), str(tmp_path / "missing.png")],
                    tiny_captioner, progress=False)
    by_file = {r.file: r for r in rows}
    assert "unreadable" in by_file[str(broken)].error
    assert by_file[str(blank)].error == "no face detected"
    assert by_file[str(photo)].caption
    assert "unreadable" in by_file[str(tmp_path / "missing.png")].error
    out = tmp_path / "rows.csv"
    write_rows(rows, str(out))
    assert out.read_text().splitlines()[0] == "file,frame,box,caption,aus,emotions,error"


def test_no_detect_folder_and_video_frames(tmp_path, tiny_captioner):
    import cv2

    folder = tmp_path / "crops"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (112, 112), (i * 60, 100, 100)).save(folder / f"{i}.png")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for i in range(10):
        writer.write(np.full((64, 64, 3), i * 20, dtype=np.uint8))
    writer.release()
    rows = describe([str(folder), str(video)], tiny_captioner, detect=False, stride=4,
                    progress=False)
    images = [r for r in rows if r.file.endswith(".png")]
    frames = [r for r in rows if r.file.endswith(".avi")]
    assert len(images) == 3 and all(r.caption and r.frame is None for r in images)
    assert [r.frame for r in frames] == [0, 4, 8] and all(r.caption for r in frames)


def test_detector_boxes_are_square_and_inside_the_image(tmp_path):
    from skimage import data

    image = Image.fromarray(data.astronaut())
    boxes = FaceDetector()(image)
    assert boxes, "the astronaut's face is found"
    for x, y, w, h in boxes:
        assert w == h and x >= 0 and y >= 0 and x + w <= 512 and y + h <= 512
