"""Write an lmms-eval task (for `--include_path`) over a local copy of one of our benchmarks.

lmms-eval reads its data through `datasets`, normally from the Hub. Offline, a task can read a dataset saved
with `save_to_disk` (`dataset_kwargs: {load_from_disk: true}`). `write_textvqa_task` converts a TextVQA
folder in its official layout (what `visrl-bench eval --task textvqa` reads) into such a dataset. It also
writes a task whose prompt is our TextVQA prompt and whose scoring is lmms-eval's own
`textvqa_process_results`. The same checkpoint then gets the same input from both harnesses, and the two
scores can be compared on the same predictions.
"""

from __future__ import annotations

import json
from pathlib import Path

from visrl_bench.core.registry import TASKS

TEXTVQA_UTILS = '''"""Written by visrl-bench (visrl_bench.lmms_eval.tasks): TextVQA over a local dataset."""

from lmms_eval.tasks.textvqa.utils import textvqa_process_results  # noqa: F401  (lmms-eval's own scoring)

PROMPT = {prompt!r}  # visrl-bench's TextVQA prompt, so both harnesses ask the same thing


def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return PROMPT.format(question=doc["question"])
'''


def write_textvqa_task(
    data: str | Path,
    out: str | Path,
    *,
    split: str = "val",
    task_name: str = "visrl_textvqa",
    max_new_tokens: int = 64,
    limit: int | None = None,
) -> Path:
    """TextVQA folder -> OUT/{data (datasets, save_to_disk), TASK.yaml, utils.py}; returns OUT."""
    import datasets

    task = TASKS.build("textvqa", str(data), split)
    rows: dict[str, list] = {"question_id": [], "question": [], "answers": [], "image": []}
    for i, sample in enumerate(task.samples()):
        if limit is not None and i >= limit:
            break
        rows["question_id"].append(int(sample.id) if sample.id.isdigit() else sample.id)
        rows["question"].append(sample.question)
        rows["answers"].append(list(sample.answer))
        # the file's own bytes: lmms-eval decodes exactly what `visrl-bench eval` decodes
        rows["image"].append({"bytes": Path(sample.image.path).read_bytes(), "path": None})
    features = datasets.Features(
        {
            "question_id": datasets.Value("int64")
            if all(isinstance(q, int) for q in rows["question_id"])
            else datasets.Value("string"),
            "question": datasets.Value("string"),
            "answers": datasets.Sequence(datasets.Value("string")),
            "image": datasets.Image(),
        }
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = datasets.DatasetDict({"validation": datasets.Dataset.from_dict(rows, features=features)})
    dataset.save_to_disk(str(out / "data"))
    (out / "utils.py").write_text(TEXTVQA_UTILS.format(prompt=task.prompt_template))
    # JSON is YAML; lmms-eval's `!function` tag is the one thing JSON cannot say, so those lines are added
    head = {
        "task": task_name,
        "dataset_path": str((out / "data").resolve()),
        "dataset_kwargs": {"load_from_disk": True},
        "test_split": "validation",
        "output_type": "generate_until",
        "doc_to_target": "answers",
        "generation_kwargs": {"max_new_tokens": max_new_tokens, "temperature": 0, "until": []},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }
    lines = [f"{k}: {json.dumps(v)}" for k, v in head.items()]
    lines += [
        "doc_to_visual: !function utils.doc_to_visual",
        "doc_to_text: !function utils.doc_to_text",
        "process_results: !function utils.textvqa_process_results",
    ]
    (out / f"{task_name}.yaml").write_text("\n".join(lines) + "\n")
    return out
