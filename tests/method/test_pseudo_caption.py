import pytest
from PIL import Image

from lavis_ext.data.records import load_records, new_record, save_records
from lavis_ext.method.pseudo_caption import pseudo_caption_records


class CountingCaptioner:
    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def caption(self, images):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        return [f"It is a people who raises cheek {i}." for i in range(len(images))]


def _records(tmp_path, n):
    root = tmp_path / "images"
    root.mkdir()
    records = []
    for i in range(n):
        Image.new("RGB", (32, 32), (i, 0, 0)).save(root / f"{i}.png")
        records.append(new_record(f"{i}.png", str(i), "affectnet", "train",
                                  emotions=["happiness"]))
    records.append(new_record("missing.png", "missing", "affectnet", "train"))
    return root, records


def test_pseudo_caption_resumes_without_recaptioning(tmp_path):
    root, records = _records(tmp_path, 10)
    out = tmp_path / "out.json"
    first = CountingCaptioner(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        pseudo_caption_records(records, first, str(root), "au-pseudo", out=out, batch_size=3,
                               save_every=1, progress=False)
    partial = load_records(out)
    assert sum(1 for r in partial if r.get("captions", {}).get("au-pseudo")) == 6
    second = CountingCaptioner()
    summary = pseudo_caption_records(partial, second, str(root), "au-pseudo", out=out,
                                     batch_size=3, progress=False)
    assert summary["already_done"] == 6 and summary["captioned"] == 4
    assert summary["unreadable"] == 1
    final = load_records(out)
    assert all(r["captions"]["au-pseudo"] for r in final if r["image_id"] != "missing")
    assert "unreadable image" in final[-1]["failures"]["au-pseudo"]


class SizeCaptioner:
    def __init__(self):
        self.sizes = []

    def caption(self, images):
        self.sizes.extend(img.size for img in images)
        return ["A face." for _ in images]


def test_pseudo_caption_reads_the_aligned_crop(tmp_path):
    # Records from `prepare --faces align` name their crop: the model must see that, as in
    # training, not the whole frame.
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (104, 139), (9, 9, 9)).save(root / "frame.png")
    crop = tmp_path / "prepared" / "faces" / "frame.png.png"
    crop.parent.mkdir(parents=True)
    Image.new("RGB", (22, 22), (200, 9, 9)).save(crop)
    records = [new_record("frame.png", "with_crop", "bp4d", "train", face_image=str(crop),
                          face_box=[10, 10, 40, 50]),
               new_record("frame.png", "plain", "bp4d", "train")]
    captioner = SizeCaptioner()
    pseudo_caption_records(records, captioner, str(root), "au-pseudo",
                           out=tmp_path / "out.json", progress=False)
    assert captioner.sizes == [(22, 22), (104, 139)]


def test_pseudo_caption_with_a_trained_model(tmp_path, tiny_captioner):
    root, records = _records(tmp_path, 4)
    out = tmp_path / "out.json"
    summary = pseudo_caption_records(records[:4], tiny_captioner, str(root), "au-pseudo",
                                     out=out, progress=False)
    assert summary["captioned"] == 4
    assert all(r["caption"] and r["captions"]["au-pseudo"] for r in load_records(out))
