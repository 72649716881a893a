"""``expblip describe``: faces with landmarks into a resumable table, tracks, pictures."""
import random

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lavis_ext.describe.cli import NO_FACE, describe
from lavis_ext.describe.faces import FaceDescriber, WholeImage, iou, load_detector
from lavis_ext.describe.table import AU_COLUMNS, COLUMNS, LANDMARK_COLUMNS, Table

ASTRONAUT_FACE = (181, 62, 268 - 181, 172 - 62)  # x, y, w, h


@pytest.fixture(scope="module")
def describer(tiny_captioner):
    return FaceDescriber(tiny_captioner, load_detector("mtcnn"), batch_size=4)


def _astronaut(path):
    from skimage import data

    Image.fromarray(data.astronaut()).save(path)
    return path


def test_astronaut_one_aligned_face_into_a_pandas_table_and_no_new_rows_on_rerun(
        tmp_path, describer):
    photo = _astronaut(tmp_path / "astronaut.png")
    out = tmp_path / "faces.csv"
    pictures = tmp_path / "annotated"
    summary = describe([str(photo)], describer, Table(out), annotate=pictures,
                       progress=False)
    assert summary.detector == "mtcnn" and summary.faces == 1 and summary.rows == 1
    frame = pd.read_csv(out)
    assert list(frame.columns) == COLUMNS
    assert {"file", "frame", "timestamp_s", "face_id", "confidence", "x", "y", "w", "h",
            "lm0_x", "lm4_y", "caption", "AU01", "AU12", "emotion", "error"} <= set(COLUMNS)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["file"] == str(photo) and pd.isna(row["frame"]) and row["face_id"] == 0
    assert iou((row.x, row.y, row.w, row.h), ASTRONAUT_FACE) >= 0.5
    assert row["confidence"] > 0.99
    assert frame[LANDMARK_COLUMNS].notna().all(axis=None)
    assert isinstance(row["caption"], str) and row["caption"] and pd.isna(row["error"])
    # AUs a caption does not settle are empty (NaN); pandas 3's stack() keeps NaN, so drop it
    assert set(frame[AU_COLUMNS].stack().dropna().unique()) <= {0, 1}
    picture = Image.open(pictures / "astronaut.png")
    assert picture.size == (512, 512)
    assert np.abs(np.asarray(picture, float) - np.asarray(Image.open(photo), float)).max() > 0
    # A rerun finds everything in the table: no new rows, nothing redrawn.
    again = describe([str(photo)], describer, Table(out), annotate=pictures, progress=False)
    assert again.rows == 0 and again.skipped_files == 1 and again.annotated == 0
    assert len(pd.read_csv(out)) == 1


def test_bad_files_get_error_rows_and_the_rest_go_on(tmp_path, describer):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (90, 140, 200)).save(blank)
    photo = _astronaut(tmp_path / "astronaut.jpg")
    data = photo.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt_video = tmp_path / "corrupt.mp4"
    corrupt_video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    missing = tmp_path / "missing.png"
    paths = [broken, empty, blank, photo, truncated, corrupt_video, missing]
    out = tmp_path / "rows.jsonl"
    summary = describe([str(p) for p in paths], describer, Table(out), progress=False)
    frame = pd.read_json(out, lines=True)
    by_file = {r.file: r for r in frame.itertuples()}
    for bad in (broken, empty, truncated, corrupt_video, missing):
        assert by_file[str(bad)].error.startswith("unreadable"), bad
    assert "truncated" in by_file[str(truncated)].error
    assert by_file[str(blank)].error == NO_FACE
    assert isinstance(by_file[str(photo)].caption, str) and pd.isna(by_file[str(photo)].error)
    assert summary.failed_files == 5 and summary.files == 7


def _face_video(path, frames=8, fps=12.0):
    """One synthetic face (lavis_ext's drawer) sliding right across a plain background."""
    import cv2

    from lavis_ext.data.synthetic.face import draw_face, random_identity

    rng = random.Random(2)
    identity = random_identity(rng)
    face = draw_face({12: 3}, rng, size=128, identity=identity, jitter=0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    for i in range(frames):
        canvas = Image.new("RGB", (320, 240), (40, 60, 80))
        canvas.paste(face, (30 + 12 * i, 40 + 3 * i))
        writer.write(cv2.cvtColor(np.asarray(canvas), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_video_face_keeps_its_id_and_timestamps_follow_fps(tmp_path, describer):
    video = _face_video(tmp_path / "clip.avi", frames=8, fps=12.0)
    out = tmp_path / "rows.csv"
    pictures = tmp_path / "pictures"
    describe([str(video)], describer, Table(out), stride=2, annotate=pictures,
             progress=False)
    frame = pd.read_csv(out)
    assert list(frame["frame"]) == [0, 2, 4, 6]
    assert frame["error"].isna().all(), frame["error"].tolist()
    assert frame["face_id"].nunique() == 1
    assert np.allclose(frame["timestamp_s"], frame["frame"] / 12.0, atol=1e-4)
    assert (frame["x"].diff().dropna() > 0).all()  # the face moves right
    import decord

    annotated = decord.VideoReader(str(pictures / "clip.mp4"))
    assert len(annotated) == 4 and annotated[0].shape == (240, 320, 3)


def test_rerun_after_a_crash_continues_the_video_and_its_tracks(tmp_path, describer):
    video = _face_video(tmp_path / "clip.avi", frames=6, fps=10.0)
    full = tmp_path / "full.jsonl"
    describe([str(video)], describer, Table(full), stride=1, progress=False)
    lines = full.read_text().splitlines(keepends=True)
    assert len(lines) == 6
    # As if the run had died while writing row 4: three whole rows and a torn one.
    crashed = tmp_path / "crashed.jsonl"
    crashed.write_text("".join(lines[:3]) + lines[3][:25])
    summary = describe([str(video)], describer, Table(crashed), stride=1, progress=False)
    assert summary.skipped_frames == 3 and summary.rows == 3
    resumed = pd.read_json(crashed, lines=True)
    expected = pd.read_json(full, lines=True)
    assert list(resumed["frame"]) == list(range(6))
    assert resumed["face_id"].equals(expected["face_id"])  # NaN where a frame had no face
    assert resumed["face_id"].nunique() == 1
    assert list(resumed["caption"]) == list(expected["caption"])


def test_no_detect_folder_and_parquet(tmp_path, tiny_captioner):
    folder = tmp_path / "crops"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (112, 112), (i * 60, 100, 100)).save(folder / "sub" / f"{i}.png")
    (folder / "notes.txt").write_text("not media")
    describer = FaceDescriber(tiny_captioner, WholeImage(), batch_size=2)
    out = tmp_path / "rows.parquet"
    pictures = tmp_path / "pictures"
    summary = describe([str(folder)], describer, Table(out), annotate=pictures,
                       progress=False)
    frame = pd.read_parquet(out)
    assert len(frame) == 3 and frame["caption"].notna().all() and frame["w"].eq(112).all()
    assert summary.annotated == 3 and (pictures / "sub" / "2.png").is_file()
    assert len(list(out.glob("part-*.parquet"))) == 2  # flushed per batch of 2
    assert describe([str(folder)], describer, Table(out), progress=False).rows == 0


def test_cli_exit_codes(tmp_path, capsys):
    from lavis_ext.cli import main

    assert main(["describe", str(tmp_path), "--out", str(tmp_path / "rows.txt")]) == 2
    assert "--out" in capsys.readouterr().err
    code = main(["describe", str(tmp_path / "missing.png"), "--model", "exp_blip:tiny",
                 "--num-beams", "1", "--max-length", "10",
                 "--out", str(tmp_path / "rows.csv")])
    captured = capsys.readouterr()
    assert code == 3, captured.err
    assert "missing.png" in captured.err and "with the mtcnn detector" in captured.out
