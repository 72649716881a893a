"""The face fields of a record (``prepare --faces align``) are checked, and the crop is the
file a model reads."""
from __future__ import annotations

from pathlib import Path

import pytest

from lavis_ext.data.records import RecordError, image_file, new_record, validate_record


def record(**extra):
    return new_record("frames/1.jpg", "1", "bp4d", "train", **extra)


def test_face_fields_are_validated_with_the_field_named():
    validate_record(record(face_box=[1, 2.5, 30, 40], face_image="/c/1.jpg.png",
                           face_landmarks=[[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]))
    validate_record(record(face_box=[1, 2, 3, 4], face_landmarks=None))
    for bad, field in (({"face_box": [1, 2, 0, 4]}, "face_box"),
                       ({"face_box": [1, 2, 3]}, "face_box"),
                       ({"face_box": [1, 2, True, 4]}, "face_box"),
                       ({"face_landmarks": [[1, 2]] * 68}, "face_landmarks"),
                       ({"face_landmarks": [[1, "2"]] * 5}, "face_landmarks"),
                       ({"face_image": ""}, "face_image")):
        with pytest.raises(RecordError, match=rf"train.json\[3\]: field '{field}'"):
            validate_record(record(**bad), "train.json[3]")


def test_image_file_is_the_crop_when_there_is_one(tmp_path):
    root = tmp_path / "BP4D"
    assert image_file(record(), root) == root / "frames" / "1.jpg"
    crop = tmp_path / "prepared" / "faces" / "frames" / "1.jpg.png"
    assert image_file(record(face_image=str(crop)), root) == crop
    assert image_file(record(face_image="aligned/1.png"), root) == root / "aligned" / "1.png"
    assert isinstance(image_file(record(), str(root)), Path)
