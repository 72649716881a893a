"""A small rating kit on disk: test records of three datasets, their images, two models."""
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from lavis_ext.data.records import new_record, save_records

DATASETS = {"bp4d": 6, "rafdb": 3, "disfa": 3}  # test items per dataset


@dataclass
class KitFiles:
    ann: Path
    images: Path
    preds: dict[str, Path]   # model name -> predictions file
    ids: list[str]           # the image ids every model captioned, with an image


def write_kit(root: Path, models=("mix", "exp")) -> KitFiles:
    images = root / "images"
    images.mkdir(parents=True)
    records, ids = [], []
    for dataset, count in DATASETS.items():
        for i in range(count):
            image_id = f"{dataset}-{i}"
            name = f"{image_id}.png"
            Image.new("RGB", (48, 48), (40 * i % 255, 90, 30)).save(images / name)
            records.append(new_record(name, image_id, dataset, "test"))
            ids.append(image_id)
    # Left out of a kit: a train record, one without its image, one that "exp" did not caption.
    records.append(new_record("bp4d-train.png", "bp4d-train", "bp4d", "train"))
    records.append(new_record("gone.png", "rafdb-gone", "rafdb", "test"))
    records.append(new_record("rafdb-extra.png", "rafdb-extra", "rafdb", "test"))
    Image.new("RGB", (48, 48)).save(images / "rafdb-extra.png")
    Image.new("RGB", (48, 48)).save(images / "bp4d-train.png")
    ann = root / "test.json"
    save_records(records, ann)
    preds = {}
    for model in models:
        rows = [{"image_id": r["image_id"], "caption": f"{model} says the face of "
                 f"{r['image_id']} frowns."} for r in records
                if not (model == models[-1] and r["image_id"] == "rafdb-extra")]
        preds[model] = root / f"{model}.json"
        preds[model].write_text(json.dumps(rows))
    return KitFiles(ann, images, preds, ids)
