"""Writers of small synthetic datasets in each dataset's native layout, warts included.

Each writer draws faces from the labels it writes and returns a manifest: the labels every
image must get back from ``prepare`` (by ``image_id``), rows written, and rows the reader must
skip by reason. Round-trip tests compare ``prepare``'s output with the manifest.
"""
from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from lavis_ext.data.synthetic.face import (Identity, draw_face, emotion_aus, random_aus,
                                           random_identity)
from lavis_ext.errors import UsageError
from lavis_ext.facs import (AFFECTNET, AU_NUMBERS, AU_SUBSETS, RAFDB_BASIC, RAFDB_COMPOUND,
                            canonical_emotion)

Manifest = dict[str, Any]
JPEG_QUALITY = 90


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=JPEG_QUALITY)


def _split_evenly(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def _manifest(dataset: str, variant: str | None) -> Manifest:
    return {"dataset": dataset, "variant": variant, "rows_read": 0, "skipped": {},
            "labels": {}, "images": 0}


def _skip(manifest: Manifest, reason: str) -> None:
    manifest["skipped"][reason] = manifest["skipped"].get(reason, 0) + 1


class _Markov:
    """AU intensities that persist over frames and change now and then, as in video."""

    def __init__(self, rng: random.Random, aus: tuple[int, ...], p_on: float = 0.3,
                 p_change: float = 0.08, graded: bool = False) -> None:
        self.rng, self.aus, self.p_on, self.p_change, self.graded = rng, aus, p_on, p_change, graded
        self.state = {au: self._new() for au in aus}

    def _new(self) -> int:
        if self.rng.random() >= self.p_on:
            return 0
        return self.rng.randint(1, 5) if self.graded else self.rng.randint(3, 5)

    def step(self) -> dict[int, int]:
        for au in self.aus:
            if self.rng.random() < self.p_change:
                self.state[au] = self._new()
        return dict(self.state)


# --- BP4D --------------------------------------------------------------------------------
BP4D_SEQUENCES = (("F001", "T1"), ("F003", "T2"), ("M009", "T1"), ("F004", "T8"),
                  ("M010", "T3"), ("F001", "T2"))
BP4D_CODED_EXTRA = (5, 9, 11, 13, 16, 18, 19, 20, 22, 25, 26, 27, 28, 43)


def _bp4d_padding(subject: str) -> int:
    return 3 if subject[0] == "M" and 9 <= int(subject[1:]) <= 18 else 4


def write_bp4d(out: Path, n: int, rng: random.Random, size: int, variant: str | None,
               progress: Callable) -> Manifest:
    manifest = _manifest("bp4d", variant)
    protocol = AU_SUBSETS["bp4d"]
    named_columns = sorted(set(protocol) | set(BP4D_CODED_EXTRA))
    identities: dict[str, Identity] = {}
    label_dir = out / "AUCoding" / "AU_OCC"
    label_dir.mkdir(parents=True, exist_ok=True)
    bar = progress(total=n, desc="bp4d faces")
    for index, ((subject, task), count) in enumerate(
            zip(BP4D_SEQUENCES, _split_evenly(n, len(BP4D_SEQUENCES)))):
        identity = identities.setdefault(subject, random_identity(rng))
        padding = _bp4d_padding(subject)
        start = rng.randint(1, 200) if padding == 3 else rng.randint(1000, 2500)
        markov = _Markov(rng, protocol)
        variant_header = index % 3  # 0: integers 0..99; 1: "0" + AU numbers; 2: "Frame" + AUs
        if variant_header == 0:
            header = [str(i) for i in range(100)]
            columns = list(range(1, 100))
        else:
            columns = named_columns
            header = ["0" if variant_header == 1 else "Frame"] + [str(c) for c in columns]
        rows = [header]
        uncoded_frame = rng.randint(0, count)  # one frame with nothing coded (all 9)
        frame = start
        for k in range(count + 1):
            state = markov.step()
            if k == uncoded_frame:
                values = {c: 9 for c in columns}
                _skip(manifest, "no AU coded (all 9)")
            else:
                values = {c: (int(bool(state[c])) if c in protocol else
                              rng.randint(0, 1) if c in BP4D_CODED_EXTRA else 9)
                          for c in columns}
                if rng.random() < 0.05:  # one protocol AU not coded on this frame
                    values[rng.choice(protocol)] = 9
                labels = {str(au): (None if values[au] == 9 else values[au]) for au in protocol}
                manifest["labels"][f"{subject}_{task}_{frame}"] = {"aus": labels, "emotions": []}
            rows.append([str(frame)] + [str(values[c]) for c in columns])
            drawn = {au: v for au, v in state.items() if values.get(au) == 1}
            _save(draw_face(drawn, rng, size, identity, jitter=0.25),
                  out / "Sequences_2D+3D" / subject / task / f"{str(frame).zfill(padding)}.jpg")
            manifest["images"] += 1
            manifest["rows_read"] += 1
            bar.update(1)
            frame += 1
        with (label_dir / f"{subject}_{task}.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    bar.close()
    return manifest


# --- DISFA -------------------------------------------------------------------------------
DISFA_SUBJECTS = ("SN001", "SN013", "SN003")


def write_disfa(out: Path, n: int, rng: random.Random, size: int, variant: str | None,
                progress: Callable, video: bool = True, threshold: int = 2) -> Manifest:
    manifest = _manifest("disfa", variant)
    aus = AU_SUBSETS["disfa"]
    bar = progress(total=n, desc="disfa faces")
    for s_index, (subject, count) in enumerate(zip(DISFA_SUBJECTS,
                                                   _split_evenly(n, len(DISFA_SUBJECTS)))):
        identity = random_identity(rng)
        markov = _Markov(rng, aus, p_on=0.35, graded=True)
        lines: dict[int, list[str]] = {au: [] for au in aus}
        frames = []
        for frame in range(1, count + 1):
            state = markov.step()
            for au in aus:
                lines[au].append(f"{frame},{state[au]}")
            img = draw_face(state, rng, size, identity, jitter=0.25)
            frames.append(img)
            _save(img, out / "Frames_LeftCamera" / subject / f"{frame:05d}.jpg")
            labels = {str(au): int(state[au] >= threshold) for au in aus}
            manifest["labels"][f"{subject}_{frame}"] = {
                "aus": labels, "au_intensity": {str(au): state[au] for au in aus}, "emotions": []}
            manifest["images"] += 1
            bar.update(1)
        # Wart: the last subject's AU 26 file lacks its last line (DISFA has one 4,844-line
        # subject); that frame's AU 26 is then not coded.
        if s_index == len(DISFA_SUBJECTS) - 1 and count:
            lines[26].pop()
            entry = manifest["labels"][f"{subject}_{count}"]
            entry["aus"]["26"] = None
            entry["au_intensity"]["26"] = None
        folder = out / "ActionUnit_Labels" / subject
        folder.mkdir(parents=True, exist_ok=True)
        for au in aus:
            (folder / f"{subject}_au{au}.txt").write_text("\n".join(lines[au]) + "\n")
            manifest["rows_read"] += len(lines[au])
        if video and frames:
            _write_avi(frames, out / "Videos_LeftCamera" / f"LeftVideo{subject}_comp.avi")
    bar.close()
    return manifest


def _write_avi(frames: list[Image.Image], path: Path, fps: float = 20.0) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = frames[0].size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write an MJPG video to {path}")
    try:
        for img in frames:
            writer.write(cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


# --- GFT ---------------------------------------------------------------------------------
GFT_SUBJECTS = ("001A", "002B", "008A", "010C", "005B")


def write_gft(out: Path, n: int, rng: random.Random, size: int, variant: str | None,
              progress: Callable) -> Manifest:
    manifest = _manifest("gft", variant)
    aus = AU_SUBSETS["gft"]
    rows = [["image"] + [f"au{au}" for au in aus]]
    bar = progress(total=n, desc="gft faces")
    for subject, count in zip(GFT_SUBJECTS, _split_evenly(n, len(GFT_SUBJECTS))):
        identity = random_identity(rng)
        markov = _Markov(rng, aus)
        frame = 1
        for k in range(count):
            if k == count // 2:
                frame += 5  # a gap of excluded frames
            state = markov.step()
            values = {au: str(int(bool(state[au]))) for au in aus}
            if rng.random() < 0.05:
                values[rng.choice(aus)] = rng.choice(("9", ""))
            image = f"frames/{subject}/{frame}.jpg"
            rows.append([image] + [values[au] for au in aus])
            drawn = {au: v for au, v in state.items() if values[au] == "1"}
            _save(draw_face(drawn, rng, size, identity, jitter=0.25), out / image)
            manifest["labels"][f"{subject}_{frame}"] = {
                "aus": {str(au): (int(values[au]) if values[au] in ("0", "1") else None)
                        for au in aus}, "emotions": []}
            manifest["images"] += 1
            manifest["rows_read"] += 1
            bar.update(1)
            frame += 1
        rows.append([f"frames/{subject}/{frame + 1}.jpg"] + [""] * len(aus))  # nothing coded
        manifest["rows_read"] += 1
        _skip(manifest, "no AU coded")
    bar.close()
    with (out / "gft_labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return manifest


# --- RAF-AU ------------------------------------------------------------------------------
def write_rafau(out: Path, n: int, rng: random.Random, size: int, variant: str | None,
                progress: Callable) -> Manifest:
    manifest = _manifest("rafau", variant)
    lines = []
    for i in progress(range(1, n + 1), desc="rafau faces"):
        aus = {} if rng.random() < 0.1 else random_aus(rng, AU_NUMBERS, p=0.12)
        name = f"{i:04d}.jpg"
        tokens = []
        for au in sorted(aus):
            prefix = rng.choice("LRBT") if rng.random() < 0.15 else ""
            suffix = rng.choice("ABCDE") if rng.random() < 0.05 else ""
            tokens.append(f"{prefix}{au}{suffix}")
        if tokens and rng.random() < 0.05:
            tokens.append("62")  # an AU outside the 27: dropped by the reader
        text = "+".join(tokens) if tokens else "null"
        line = f"{name} {text}"
        roll = rng.random()
        if roll < 0.05:
            line += "   "
        elif roll < 0.1:
            line += " 1"  # spurious third field
        lines.append(line)
        _save(draw_face(aus, rng, size), out / "aligned" / f"{i:04d}_aligned.jpg")
        manifest["labels"][f"{i:04d}"] = {
            "aus": {str(au): int(au in aus) for au in AU_NUMBERS}, "emotions": []}
        manifest["images"] += 1
        manifest["rows_read"] += 1
    (out / "RAFAU_label.txt").write_text("\n".join(lines) + "\n")
    return manifest


# --- EmotioNet ---------------------------------------------------------------------------
EMOTIONET_FILE = "EmotioNet_FACS_aws_2020_24600"


def write_emotionet(out: Path, n: int, rng: random.Random, size: int, variant: str | None,
                    progress: Callable) -> Manifest:
    """Writes the same table as .xlsx and .csv (``variant`` 'csv' writes the .csv only)."""
    manifest = _manifest("emotionet", variant)
    challenge = AU_SUBSETS["emotionet"]
    header = ["URL", "URL orig"] + [f"'AU {k}'" for k in range(1, 61)]
    rows: list[list[Any]] = []
    for i in progress(range(1, n + 1), desc="emotionet faces"):
        name = f"N_{i:010d}_{rng.randint(0, 99999):05d}.jpg"
        url = f"http://emotionet.example/images/{name}"
        quote = rng.random()
        cell_url = f"'{url}'" if quote < 0.15 else f"'{url}" if quote < 0.25 else url
        if i % 40 == 0:
            rows.append([cell_url, url.replace("emotionet", "orig")] + [999] * 60)
            _skip(manifest, "no AU annotated (all 999)")
            manifest["rows_read"] += 1
            continue
        aus = random_aus(rng, challenge, p=0.3)
        values = []
        for k in range(1, 61):
            if k in challenge:
                values.append(999 if rng.random() < 0.03 else int(k in aus))
            else:
                values.append(999 if k not in AU_NUMBERS or rng.random() < 0.5 else 0)
        rows.append([cell_url, url.replace("emotionet", "orig")] + values)
        drawn = {au: v for au, v in aus.items() if values[au - 1] == 1}
        _save(draw_face(drawn, rng, size), out / "images" / name)
        manifest["labels"][name.rsplit(".", 1)[0]] = {
            "aus": {str(au): (None if values[au - 1] == 999 else values[au - 1])
                    for au in challenge}, "emotions": []}
        manifest["images"] += 1
        manifest["rows_read"] += 1
    with (out / f"{EMOTIONET_FILE}.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header] + rows)
    if variant != "csv":
        import openpyxl

        book = openpyxl.Workbook(write_only=True)
        sheet = book.create_sheet("Sheet1")
        sheet.append(header)
        for row in rows:
            sheet.append(row)
        book.save(out / f"{EMOTIONET_FILE}.xlsx")
    return manifest


# --- AffectNet ---------------------------------------------------------------------------
def write_affectnet(out: Path, n: int, rng: random.Random, size: int, variant: str | None,
                    progress: Callable) -> Manifest:
    manifest = _manifest("affectnet", variant or "csv")
    non_emotion = {8: "none", 9: "uncertain", 10: "no-face"}
    if (variant or "csv") == "csv":
        header = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                  "facial_landmarks", "expression", "valence", "arousal"]
        tables = {"training.csv": [header], "validation.csv": [header]}
        for i in progress(range(n), desc="affectnet faces"):
            table = "validation.csv" if i % 5 == 4 else "training.csv"
            code = rng.randint(8, 10) if rng.random() < 0.1 else rng.randint(0, 7)
            rel = f"{i % 7 + 1}/{rng.getrandbits(96):024x}.jpg"
            if code == 10:
                img = Image.new("RGB", (size, size), tuple(rng.randint(0, 255) for _ in range(3)))
            else:
                aus = emotion_aus([AFFECTNET[code]], rng) if code in AFFECTNET else \
                    random_aus(rng, AU_NUMBERS, p=0.1)
                img = draw_face(aus, rng, size)
            _save(img, out / "Manually_Annotated_Images" / rel)
            landmarks = ";".join(f"{rng.uniform(0, size):.2f}" for _ in range(136))
            va = ("-2", "-2") if code in (9, 10) else (f"{rng.uniform(-1, 1):.4f}",
                                                      f"{rng.uniform(-1, 1):.4f}")
            tables[table].append([rel, "0", "0", str(size), str(size), landmarks, str(code), *va])
            manifest["rows_read"] += 1
            manifest["images"] += 1
            if code in AFFECTNET:
                manifest["labels"][rel.rsplit(".", 1)[0].replace("/", "_")] = {
                    "aus": {}, "emotions": [AFFECTNET[code]],
                    "split": "test" if table == "validation.csv" else "train"}
            else:
                _skip(manifest, f"not an emotion ({code} {non_emotion[code]})")
        folder = out / "Manually_Annotated_file_lists"
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in tables.items():
            with (folder / name).open("w", newline="") as handle:
                csv.writer(handle).writerows(rows)
        return manifest
    if variant != "npy":
        raise UsageError(f"AffectNet variant must be 'csv' or 'npy', got {variant!r}")
    for i in progress(range(n), desc="affectnet faces"):
        folder, split = ("val_set", "test") if i % 5 == 4 else ("train_set", "train")
        code = rng.randint(0, 7)
        image_id = str(1000 + i * 7)
        _save(draw_face(emotion_aus([AFFECTNET[code]], rng), rng, size),
              out / folder / "images" / f"{image_id}.jpg")
        annotations = out / folder / "annotations"
        annotations.mkdir(parents=True, exist_ok=True)
        stored = np.array(str(code)) if rng.random() < 0.3 else np.array(code)  # string wart
        np.save(annotations / f"{image_id}_exp.npy", stored)
        np.save(annotations / f"{image_id}_val.npy", np.array(str(round(rng.uniform(-1, 1), 4))))
        np.save(annotations / f"{image_id}_aro.npy", np.array(round(rng.uniform(-1, 1), 4)))
        np.save(annotations / f"{image_id}_lnd.npy", np.array(
            [rng.uniform(0, size) for _ in range(136)]))
        manifest["labels"][f"{split}_{image_id}"] = {"aus": {}, "emotions": [AFFECTNET[code]],
                                                     "split": split}
        manifest["rows_read"] += 1
        manifest["images"] += 1
    return manifest


# --- RAF-DB ------------------------------------------------------------------------------
def write_rafdb(out: Path, n: int, rng: random.Random, size: int, variant: str | None,
                progress: Callable) -> Manifest:
    subset = variant or "compound"
    if subset not in ("compound", "basic"):
        raise UsageError(f"RAF-DB variant must be 'compound' or 'basic', got {variant!r}")
    manifest = _manifest("rafdb", subset)
    table = RAFDB_COMPOUND if subset == "compound" else RAFDB_BASIC
    lines = []
    counters = {"train": 0, "test": 0}
    for i in progress(range(n), desc=f"rafdb {subset} faces"):
        split = "test" if i % 5 == 4 else "train"
        counters[split] += 1
        stem = f"{split}_{counters[split]:04d}" if subset == "compound" else \
            f"{split}_{counters[split]:05d}"
        code = rng.choice(sorted(table))
        value = table[code]
        emotions = list(value) if isinstance(value, tuple) else [value]
        lines.append(f"{stem}.jpg {code}")
        _save(draw_face(emotion_aus(emotions, rng), rng, size),
              out / subset / "Image" / "aligned" / f"{stem}_aligned.jpg")
        entry: dict[str, Any] = {"aus": {}, "emotions": emotions}
        if subset == "basic":
            entry["split"] = split
        manifest["labels"][f"{subset}_{stem}"] = entry
        manifest["rows_read"] += 1
        manifest["images"] += 1
    folder = out / subset / "EmoLabel"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return manifest


# --- FaceME ------------------------------------------------------------------------------
# A small stand-in label list (the real 85 labels come from the user's CSV header).
FACEME_LABELS: tuple[tuple[str, str, dict[int, int] | str], ...] = (
    ("emotions", "happy", "happiness"), ("emotions", "sad", "sadness"),
    ("emotions", "surprised", "surprise"), ("emotions", "angry", "anger"),
    ("emotions", "disgusted", "disgust"), ("emotions", "afraid", "fear"),
    ("internal feelings", "sleepy", {43: 4}),
    ("actions", "talking", {25: 3, 26: 2}),
    ("actions", "yawning", {26: 5, 27: 4, 43: 3}),
    ("health status", "tired", {43: 3, 15: 3, 4: 2}),
)


def write_faceme(out: Path, n: int, rng: random.Random, size: int, variant: str | None,
                 progress: Callable) -> Manifest:
    manifest = _manifest("faceme", variant)
    header = ["image", "annotator"] + [f"{group}/{label}" for group, label, _ in FACEME_LABELS]
    rows = [header]
    for i in progress(range(1, n + 1), desc="faceme faces"):
        first = rng.randrange(len(FACEME_LABELS))
        true = {first}
        if rng.random() < 0.3:
            true.add(rng.randrange(len(FACEME_LABELS)))
        aus: dict[int, int] = {}
        for index in true:
            spec = FACEME_LABELS[index][2]
            extra = emotion_aus([spec], rng) if isinstance(spec, str) else spec
            for au, value in extra.items():
                aus[au] = max(aus.get(au, 0), value)
        if 12 in aus and 15 in aus:
            del aus[15]
        image = f"images/{i:06d}.jpg"
        _save(draw_face(aus, rng, size), out / image)
        votes = [0] * len(FACEME_LABELS)
        for a in range(3 if rng.random() < 0.8 else 4):
            marks = [int(rng.random() < (0.85 if k in true else 0.05))
                     for k in range(len(FACEME_LABELS))]
            votes = [v + m for v, m in zip(votes, marks)]
            rows.append([image, f"annotator{a + 1}"] + [str(m) for m in marks])
            manifest["rows_read"] += 1
        emotions: list[str] = []
        for k, count in enumerate(votes):
            name = canonical_emotion(FACEME_LABELS[k][1])
            if count >= 2 and name not in emotions:
                emotions.append(name)
        manifest["labels"][f"images_{i:06d}"] = {"aus": {}, "emotions": emotions}
        manifest["images"] += 1
    with (out / "faceme_labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return manifest


WRITERS: dict[str, Callable[..., Manifest]] = {
    "bp4d": write_bp4d, "disfa": write_disfa, "gft": write_gft, "rafau": write_rafau,
    "emotionet": write_emotionet, "affectnet": write_affectnet, "rafdb": write_rafdb,
    "faceme": write_faceme,
}
VARIANTS: dict[str, tuple[str, ...]] = {"emotionet": ("xlsx", "csv"), "affectnet": ("csv", "npy"),
                                        "rafdb": ("compound", "basic")}


def make_synthetic(dataset: str, out: str | Path, n: int, seed: int = 0, image_size: int = 112,
                   *, variant: str | None = None, progress: bool = False) -> Manifest:
    """Write ``n`` labelled faces in ``dataset``'s native layout under ``out``.

    Returns the manifest (also written to ``out/synthetic_manifest.json``). ``variant``:
    EmotioNet ``xlsx`` (default: .xlsx and .csv) or ``csv``; AffectNet ``csv`` or ``npy``
    release; RAF-DB ``compound`` or ``basic``.
    """
    if dataset not in WRITERS:
        raise UsageError(f"unknown dataset {dataset!r}; expected one of {', '.join(WRITERS)}")
    if variant is not None and variant not in VARIANTS.get(dataset, ()):
        raise UsageError(f"{dataset} has no variant {variant!r}; variants: "
                         f"{VARIANTS.get(dataset, ())}")
    if n < 1:
        raise UsageError(f"n must be >= 1, got {n}")
    if image_size < 32:
        raise UsageError(f"image_size must be >= 32 pixels, got {image_size}")
    from tqdm import tqdm

    def bar(iterable=None, **kwargs):
        return tqdm(iterable, disable=not progress, **kwargs)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = WRITERS[dataset](out, n, random.Random(seed), image_size, variant, bar)
    manifest.update({"n": n, "seed": seed, "image_size": image_size})
    buffer = io.StringIO()
    json.dump(manifest, buffer, indent=1)
    from lavis_ext.data.records import atomic_write_text

    atomic_write_text(out / "synthetic_manifest.json", buffer.getvalue())
    return manifest
