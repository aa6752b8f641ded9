"""Tiny benchmark fixtures written in each benchmark's REAL file layout (images made with PIL)."""

from __future__ import annotations

import base64
import io
import json
import pickle
import shutil
from pathlib import Path

from PIL import Image


def png_bytes(size: tuple[int, int] = (32, 24), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def write_image(path: Path, size=(64, 48), color=(10, 120, 200)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


# --- V*Bench --------------------------------------------------------------------------------------------
VSTAR_QUESTIONS = {
    "direct_attributes": [
        ("sa_1", "What is the color of the cup?", ["red", "blue", "green", "white"], [[4, 6, 10, 8]]),
        (
            "sa_2",
            "What is the material of the glove?",
            ["rubber", "cotton", "leather", "wool"],
            [[30, 20, 6, 6]],
        ),
        ("sa_3", "What is the color of the dog?", ["black", "brown", "white", "golden"], [[1, 1, 5, 5]]),
    ],
    "relative_position": [
        (
            "sa_10",
            "Is the cat on the left or right side of the car?",
            ["left", "right"],
            [[2, 2, 4, 4], [40, 10, 8, 8]],
        ),
    ],
}


def make_vstar_folders(root: Path) -> Path:
    for category, questions in VSTAR_QUESTIONS.items():
        for stem, question, options, bbox in questions:
            write_image(root / category / f"{stem}.jpg")
            meta = {
                "target_object": ["thing"] * len(bbox),
                "bbox": bbox,
                "question": question,
                "options": options,
            }
            (root / category / f"{stem}.json").write_text(json.dumps(meta))
    return root


def make_vstar_jsonl(root: Path) -> Path:
    """The test_questions.jsonl variant; the correct option is not always first here."""
    make_vstar_folders(root)
    rows = []
    qid = 0
    for category, questions in VSTAR_QUESTIONS.items():
        for stem, question, options, _ in questions:
            rotated = options[1:] + options[:1]  # the correct one (options[0]) is now last
            text = question + "\n" + "\n".join(f"({'ABCD'[i]}) {o}" for i, o in enumerate(rotated))
            text += "\nAnswer with the option's letter from the given choices directly."
            rows.append(
                {
                    "image": f"{category}/{stem}.jpg",
                    "text": text,
                    "category": category,
                    "question_id": qid,
                    "label": "ABCD"[len(options) - 1],
                }
            )
            qid += 1
    (root / "test_questions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


# --- HR-Bench -------------------------------------------------------------------------------------------
HR_HEADER = ["index", "question", "answer", "category", "A", "B", "C", "D", "cycle_category", "image"]


def hr_rows(n_questions: int = 4, cycles: int = 2) -> list[dict]:
    """n_questions (half FSP, half FCP) x cycles rows; options rotate each cycle."""
    rows = []
    index = 0
    for q in range(n_questions):
        options = [f"opt{q}-{k}" for k in range(4)]
        image = base64.b64encode(png_bytes(color=(q * 40 % 255, 90, 160))).decode()
        for c in range(cycles):
            rot = options[c:] + options[:c]
            rows.append(
                {
                    "index": index,
                    "question": f"What is written on sign {q}?",
                    "answer": "ABCD"[rot.index(options[0])],
                    "category": "FSP" if q < n_questions // 2 else "FCP",
                    "A": rot[0],
                    "B": rot[1],
                    "C": rot[2],
                    "D": rot[3],
                    "cycle_category": f"cycle{c + 1}",
                    "image": image,
                }
            )
            index += 1
    return rows


def write_hr_tsv(path: Path, rows: list[dict], header: list[str] = HR_HEADER) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(header)
        for r in rows:
            w.writerow([r.get(h, "") for h in header])
    return path


def write_hr_parquet(path: Path, rows: list[dict]) -> Path:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


# --- TextVQA --------------------------------------------------------------------------------------------
TEXTVQA_ROWS = [
    (34602, "what is the brand of this camera?", "img_a", ["nous les gosses"] * 4 + ["dakota"] * 6),
    (34603, "what does the small white text spell?", "img_a", ["copenhagen"] * 10),
    (34604, "what kind of beer is this?", "img_b", ["ale"] * 3 + ["stout"] * 7),
    (34605, "how many items?", "img_b", ["two"] * 5 + ["2"] * 3 + ["3"] * 2),
]


def make_textvqa(root: Path, rows=TEXTVQA_ROWS) -> Path:
    data = []
    for qid, question, image_id, answers in rows:
        data.append(
            {
                "question": question,
                "image_id": image_id,
                "image_classes": ["Camera"],
                "flickr_original_url": "",
                "flickr_300k_url": "",
                "image_width": 64,
                "image_height": 48,
                "answers": answers,
                "question_tokens": question.split(),
                "question_id": qid,
                "set_name": "val",
            }
        )
        write_image(root / "train_images" / f"{image_id}.jpg")
    root.mkdir(parents=True, exist_ok=True)
    blob = {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": data}
    (root / "TextVQA_0.5.1_val.json").write_text(json.dumps(blob))
    ocr = {
        "dataset_name": "textvqa",
        "data": [
            {"image_id": "img_a", "ocr_tokens": ["DAKOTA", "copenhagen"], "ocr_info": [], "set_name": "val"},
            {"image_id": "img_b", "ocr_tokens": ["STOUT"], "ocr_info": [], "set_name": "val"},
        ],
    }
    (root / "TextVQA_Rosetta_OCR_v0.2_val.json").write_text(json.dumps(ocr))
    return root


# --- RefCOCO --------------------------------------------------------------------------------------------
REF_IMAGES = [(1, "COCO_train2014_000000000001.jpg", 100, 80), (2, "COCO_train2014_000000000002.jpg", 60, 60)]
REF_ANNS = [(11, 1, [10, 10, 40, 40], 1), (12, 1, [50, 20, 30, 50], 2), (13, 2, [0, 0, 30, 30], 1)]
# (ref_id, ann_id, image_id, split, [(sent_id, sentence)])
REFS = [
    (0, 11, 1, "val", [(100, "left man"), (101, "man in red")]),
    (1, 12, 1, "testA", [(102, "the dog")]),
    (2, 13, 2, "val", [(103, "top left square")]),
    (3, 12, 1, "train", [(104, "dog on right")]),
]


def make_refcoco(root: Path, refs_name: str = "refs(unc).p") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    instances = {
        "images": [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in REF_IMAGES],
        "annotations": [
            {
                "id": a,
                "image_id": im,
                "bbox": b,
                "category_id": c,
                "area": b[2] * b[3],
                "iscrowd": 0,
                "segmentation": [[b[0], b[1], b[0] + b[2], b[1], b[0] + b[2], b[1] + b[3]]],
            }
            for a, im, b, c in REF_ANNS
        ],
        "categories": [
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 2, "name": "dog", "supercategory": "animal"},
        ],
    }
    (root / "instances.json").write_text(json.dumps(instances))
    refs = [
        {
            "sent_ids": [s for s, _ in sents],
            "file_name": "x.jpg",
            "ann_id": ann,
            "ref_id": ref,
            "image_id": img,
            "split": split,
            "category_id": 1,
            "sentences": [{"tokens": t.split(), "raw": t, "sent_id": s, "sent": t} for s, t in sents],
        }
        for ref, ann, img, split, sents in REFS
    ]
    with (root / refs_name).open("wb") as f:
        pickle.dump(refs, f, protocol=2)
    for _, name, w, h in REF_IMAGES:
        write_image(root / "images" / name, size=(w, h))
    return root


def make_refcoco_parquet(root: Path, split: str = "val") -> Path:
    import pandas as pd

    rows = [
        {
            "question_id": "11",
            "image": {"bytes": png_bytes((100, 80)), "path": None},
            "question": "caption",
            "answer": ["left man", "man in red"],
            "bbox": [10.0, 10.0, 40.0, 40.0],
            "iscrowd": 0,
            "file_name": "a.jpg",
        },
        {
            "question_id": "13",
            "image": {"bytes": png_bytes((60, 60)), "path": None},
            "question": "caption",
            "answer": ["top left square"],
            "bbox": [0.0, 0.0, 30.0, 30.0],
            "iscrowd": 0,
            "file_name": "b.jpg",
        },
    ]
    (root / "data").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(root / "data" / f"{split}-00000-of-00001.parquet", index=False)
    return root


# --- one fixture per registered task, for the generic task test ------------------------------------------
def make_fixture(task_name: str, root: Path) -> tuple[Path, dict]:
    """(data path, task options) for a registered task name."""
    if task_name == "vstar_bench":
        return make_vstar_folders(root), {}
    if task_name.startswith("hr_bench_"):
        variant = task_name.rsplit("_", 1)[1]
        return write_hr_tsv(root / f"hr_bench_{variant}.tsv", hr_rows()), {}
    if task_name == "textvqa":
        return make_textvqa(root), {}
    if task_name in ("refcoco", "refcoco+"):
        return make_refcoco(root, "refs(unc).p"), {}
    if task_name == "refcocog":
        return make_refcoco(root, "refs(umd).p"), {}
    if task_name == "zoomworld":
        return make_zoomworld(root), {}
    raise KeyError(f"no fixture for task {task_name!r}: add one to tests/fixtures.py")


def make_zoomworld(root: Path, seed: int = 0, **sizes) -> Path:
    """A small ZoomWorld (a few images per split, or `sizes`) in the generator's real layout."""
    from dataclasses import replace

    from visrl_bench.datagen.zoomworld_splits import generate

    generate(root, seed, replace(_small_zoomworld(), **sizes))
    return root


def _small_zoomworld():
    from visrl_bench.datagen.zoomworld import ZoomWorldConfig

    return ZoomWorldConfig(
        pretrain_images=12,
        pretrain_examples_per_image=8,
        ground_images=9,
        ground_test_images=9,
        sft_questions=6,
        rl_questions=9,
        test_questions=9,
        pair_questions=4,
    )


def make_pairs(root: Path, zoomworld: Path, convention: str = "norm1000", n: int = 6) -> Path:
    """A `generate`-format pairs dir by hand: for each ZoomWorld question, the gold box (chosen) against a box
    in the opposite corner (rejected), the gold answer against "none"."""
    from PIL import Image

    from visrl_bench.core.boxes import Box, as_convention, crop_region, format_box

    conv = as_convention(convention)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "crops").mkdir(exist_ok=True)
    rows = []
    for i, line in enumerate((zoomworld / "sft.jsonl").read_text().splitlines()[:n]):
        q = json.loads(line)
        image = Image.open(zoomworld / q["image"]).convert("RGB")
        w, h = image.size
        gold = Box(*q["bbox"])
        far = Box(w - gold.x2, h - gold.y2, w - gold.x1, h - gold.y1)
        shutil.copy(zoomworld / q["image"], root / "images" / f"{i}.png")
        crops = {}
        for name, box in (("c", gold), ("r", far)):
            region = crop_region(box, image.size, 32)
            image.crop(tuple(int(v) for v in region.as_list())).save(root / "crops" / f"{i}{name}.png")
            crops[name] = f"crops/{i}{name}.png"
        base = {
            "question_id": q["id"],
            "task": "zoomworld",
            "image": f"images/{i}.png",
            "question": q["question"],
            "prompt": f"{q['question']} Answer with the pattern name, or none.",
            "chosen_box": format_box(gold, conv, image.size),
            "rejected_box": format_box(far, conv, image.size),
            "chosen_crop": crops["c"],
            "rejected_crop": crops["r"],
            "chosen_score": 1.0,
            "rejected_score": 0.0,
            "chosen_iou": 1.0,
            "rejected_iou": 0.0,
            "chosen_answer": q["answer"],
            "rejected_answer": "none",
        }
        for step in ("box", "answer", "trajectory"):
            rows.append({**base, "id": f"{q['id']}#{step}", "step": step})
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root
