"""lmms-eval interop: the `visrl_cot` plug-in run by lmms-eval's own CLI and evaluator, offline, gives the
predictions `visrl-bench eval` gives; both TextVQA scorers agree on the same predictions; and the core works
without lmms-eval and next to a torchvision that cannot be imported."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fixtures import make_textvqa

from visrl_bench.eval.evaluate import EvalConfig, TaskSpec, evaluate
from visrl_bench.models import GenerationSettings

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
MAX_NEW_TOKENS = 12

# lmms-eval reads each answer through the same EvalAI processor we use; these exercise its rules
ANSWER_WORDS = [
    "Dakota", "dakota", "two", "2", "the cat", "cat", "a dog", "dog.", "don't", "dont", "1,000", "1000",
    "yes", "no", "ale", "stout", "coca-cola", "coca cola", "it's", "its", "(5)", "5", "u.s.a.", "usa",
]  # fmt: skip


def _lmms_eval_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("lmms_eval") is not None


needs_lmms_eval = pytest.mark.skipif(
    not _lmms_eval_installed(), reason='lmms-eval not installed (pip install -e ".[lmms-eval]")'
)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, **OFFLINE, **extra}


# --- the core without lmms-eval, next to a broken torchvision --------------------------------------------
BROKEN_TORCHVISION = 'raise RuntimeError("operator torchvision::nms does not exist")\n'


def test_core_runs_without_lmms_eval_and_next_to_a_broken_torchvision(tmp_path, tiny_checkpoints):
    """A torchvision whose import raises (PyPI's CUDA build on CPU torch) shadows whatever is installed;
    lmms-eval is made unimportable. eval still runs on LLaVA and Qwen2-VL, `list` still works, and the
    `lmms-eval` command says what to install."""
    fake = tmp_path / "site"
    (fake / "torchvision").mkdir(parents=True)
    (fake / "torchvision" / "__init__.py").write_text(BROKEN_TORCHVISION)
    data = make_textvqa(tmp_path / "textvqa")
    ckpts = {arch: str(tiny_checkpoints[arch]) for arch in ("llava", "qwen2_vl")}
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["lmms_eval"] = None  # as if not installed
        from typer.testing import CliRunner
        from visrl_bench.cli import app
        r = CliRunner().invoke(app, ["list"])
        assert r.exit_code == 0, r.output
        for arch in ("llava", "qwen2_vl"):
            ckpt = {ckpts!r}
            r = CliRunner().invoke(app, ["eval", "--model", ckpt[arch], "--task", "textvqa", "--data",
                                         {str(data)!r}, "--output", {str(tmp_path)!r} + "/run_" + arch,
                                         "--max-new-tokens", "4"])
            assert r.exit_code == 0, r.output
        import visrl_bench._compat as compat
        assert compat.BROKEN_TORCHVISION and "torchvision::nms" in compat.BROKEN_TORCHVISION
        r = CliRunner().invoke(app, ["lmms-eval", "--tasks", "x"])
        assert r.exit_code == 2 and "lmms-eval is not installed" in r.stderr, r.output
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(PYTHONPATH=f"{fake}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"),
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
    for arch in ("llava", "qwen2_vl"):
        records = [json.loads(line) for line in (tmp_path / f"run_{arch}" / "samples.jsonl").open()]
        assert len(records) == 4 and all(r["prediction"] is not None for r in records)


# --- the plug-in from lmms-eval's CLI -----------------------------------------------------------------------
@needs_lmms_eval
def test_entry_point_registers_visrl_cot():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="lmms_eval.models")}
    assert names.get("visrl_cot") == "visrl_bench.lmms_eval.plugin:manifest"
    code = (
        "import visrl_bench, lmms_eval.models as m; "
        "print(m.get_model('visrl_cot').__name__, 'visrl_cot' in m.list_available_models())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300
    )
    assert out.stdout.split()[-2:] == ["VisrlCoT", "True"], out.stderr[-3000:]


def _lmms_eval_predictions(out_dir: Path) -> dict[int, str]:
    [samples] = list(out_dir.rglob("*_samples_*.jsonl"))
    preds = {}
    for line in samples.open():
        row = json.loads(line)
        resp = row["filtered_resps"]
        preds[row["doc_id"]] = resp[0] if isinstance(resp, list) else resp
    return preds


def _our_predictions(ckpt: Path, data: Path, mode: str, out: Path, batch_size: int) -> list[dict]:
    cfg = EvalConfig(
        model=str(ckpt),
        tasks=[TaskSpec("textvqa", str(data))],
        mode=mode,
        batch_size=batch_size,
        generation=GenerationSettings(max_new_tokens=MAX_NEW_TOKENS),
    )
    evaluate(cfg, out, progress=False)
    return [json.loads(line) for line in (out / "samples.jsonl").open()]


@needs_lmms_eval
@pytest.mark.parametrize(("arch", "mode"), [("llava", "direct"), ("qwen2_vl", "direct"), ("llava", "cot")])
def test_lmms_eval_cli_predictions_equal_visrl_bench_eval(tmp_path, tiny_checkpoints, arch, mode):
    from typer.testing import CliRunner

    from visrl_bench.cli import app

    data = make_textvqa(tmp_path / "textvqa")
    task_dir = tmp_path / "task"
    args = ["lmms-eval-task", "textvqa", "--data", str(data), "--out", str(task_dir)]
    made = CliRunner().invoke(app, [*args, "--max-new-tokens", str(MAX_NEW_TOKENS)])
    assert made.exit_code == 0, made.output
    trace = tmp_path / "trace.jsonl"
    model_args = f"pretrained={tiny_checkpoints[arch]},mode={mode},trace={trace}"
    cmd = [
        sys.executable, "-m", "visrl_bench.cli", "lmms-eval",
        "--model", "visrl_cot", "--model_args", model_args, "--tasks", "visrl_textvqa",
        "--include_path", str(task_dir), "--batch_size", "2", "--device", "cpu",
        "--output_path", str(tmp_path / "lmms_out"), "--log_samples",
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600, cwd=tmp_path)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    theirs = _lmms_eval_predictions(tmp_path / "lmms_out")
    ours = _our_predictions(tiny_checkpoints[arch], data, mode, tmp_path / "ours", batch_size=2)
    assert len(theirs) == len(ours) == 4
    assert [theirs[i] for i in range(4)] == [r["prediction"] for r in ours]
    assert any(p.strip() for p in theirs.values())  # the tiny model said something
    traced = [json.loads(line) for line in trace.open()]
    assert [t["prediction"] for t in sorted(traced, key=lambda t: t["position"])] == [
        r["prediction"] for r in ours
    ]
    if mode == "cot":  # the same box step too
        assert [t["focus"]["text"] for t in sorted(traced, key=lambda t: t["position"])] == [
            r["focus"]["text"] for r in ours
        ]


def _plain_lmms_eval_cli_usable() -> tuple[bool, str]:
    """The `lmms-eval` executable can only start where torchvision imports or is absent."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util as u; u.find_spec('torchvision') and __import__('torchvision')",
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return False, "installed torchvision cannot be imported (CPU torch + CUDA torchvision); see README"
    return True, ""


@needs_lmms_eval
def test_the_lmms_eval_executable_runs_visrl_cot(tmp_path, tiny_checkpoints):
    usable, why = _plain_lmms_eval_cli_usable()
    if not usable:
        pytest.skip(why)
    from visrl_bench.lmms_eval.tasks import write_textvqa_task

    data = make_textvqa(tmp_path / "textvqa")
    task_dir = write_textvqa_task(data, tmp_path / "task", max_new_tokens=MAX_NEW_TOKENS)
    exe = Path(sys.executable).parent / "lmms-eval"
    cmd = [
        str(exe), "--model", "visrl_cot",
        "--model_args", f"pretrained={tiny_checkpoints['llava']},mode=direct",
        "--tasks", "visrl_textvqa", "--include_path", str(task_dir), "--batch_size", "2", "--device", "cpu",
        "--output_path", str(tmp_path / "lmms_out"), "--log_samples",
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600, cwd=tmp_path)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    theirs = _lmms_eval_predictions(tmp_path / "lmms_out")
    ours = _our_predictions(tiny_checkpoints["llava"], data, "direct", tmp_path / "ours", batch_size=2)
    assert [theirs[i] for i in range(4)] == [r["prediction"] for r in ours]


# --- the same predictions, two scorers ----------------------------------------------------------------------
@needs_lmms_eval
def test_textvqa_scores_agree_with_lmms_eval_on_the_same_predictions(tmp_path):
    """Our score (`visrl-bench score`) and lmms-eval's (its task's process_results + aggregation, loaded from
    the task YAML we write) on 60 questions whose answers and predictions hit the normalisation rules. The
    answer normalisation agrees everywhere; the per-question mean differs by at most one unit in the last
    place (we sum like the official TextVQA evaluator, lmms-eval uses statistics.mean); the reported score
    agrees to every digit we print."""
    from lmms_eval.tasks import TaskManager

    import visrl_bench  # noqa: F401  (before lmms_eval: hides a broken torchvision)
    from visrl_bench.core.registry import TASKS
    from visrl_bench.eval.scoring import score_task
    from visrl_bench.lmms_eval.tasks import write_textvqa_task

    rng = random.Random(7)
    rows, preds = [], []
    for i in range(60):
        answers = [rng.choice(ANSWER_WORDS) for _ in range(10)]
        rows.append((1000 + i, f"question {i}?", "img_a" if i % 2 else "img_b", answers))
        pred = rng.choice([*answers, *ANSWER_WORDS, " " + answers[0].upper() + " ", answers[0] + "."])
        preds.append({"id": 1000 + i, "prediction": pred})
    data = make_textvqa(tmp_path / "textvqa", rows=rows)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    ours = score_task(TASKS.build("textvqa", str(data)), tmp_path / "p.jsonl")

    task_dir = write_textvqa_task(data, tmp_path / "task")
    os.environ.update(OFFLINE)
    task = TaskManager("ERROR", include_path=str(task_dir)).load_task_or_group(["visrl_textvqa"])
    [task] = task.values() if isinstance(task, dict) else [task]
    while isinstance(task, dict):  # groups nest tasks in lmms-eval 0.7
        [task] = task.values()
    docs = list(task.test_docs())
    scores = [
        task.process_results(doc, [p["prediction"]])["exact_match"]
        for doc, p in zip(docs, preds, strict=True)
    ]
    theirs = task.aggregation()["exact_match"](scores)

    per_question = [r["scores"]["vqa_accuracy"] for r in ours.records]
    assert len(per_question) == len(scores) == 60
    ulp_apart = [i for i, (a, b) in enumerate(zip(per_question, scores, strict=True)) if a != b]
    import math

    assert all(math.isclose(per_question[i], scores[i], rel_tol=0, abs_tol=4e-16) for i in ulp_apart)
    assert 0 < sum(per_question) < 60  # the fixture is neither all right nor all wrong
    assert ours.metrics["vqa_accuracy"] == round(100 * theirs, 6)


# --- K samples from one prefill (`generate`'s box sampling) ------------------------------------------------
@pytest.mark.parametrize("arch", ["llava", "qwen2_vl", "qwen2_5_vl"])
def test_k_samples_share_one_prefill_and_match_plain_generation(arch, tiny_adapters, tmp_path):
    """With greedy decoding every one of the K continuations from the shared prefill must be exactly the
    plain K=1 output (prompts of different lengths in one left-padded batch); with sampling they differ."""
    from fixtures import write_image
    from PIL import Image

    from visrl_bench.models import ChatRequest
    from visrl_bench.reasoning import box_step_messages

    requests = []
    for i in range(3):
        write_image(tmp_path / f"{i}.jpg", size=(60 + 20 * i, 48), color=(40 * i, 90, 160))
        question = "where is the thing in the picture? " * (i + 1)
        requests.append(ChatRequest(box_step_messages(question), [Image.open(tmp_path / f"{i}.jpg")]))
    adapter = tiny_adapters[arch]
    plain = adapter.generate(requests, GenerationSettings(max_new_tokens=8), batch_size=3)
    shared = adapter.generate(requests, GenerationSettings(max_new_tokens=8, num_return_sequences=3), 3)
    assert shared == [[p[0]] * 3 for p in plain]
    sampled = adapter.generate(
        requests, GenerationSettings(max_new_tokens=8, num_return_sequences=4, temperature=1.0), 2
    )
    assert [len(s) for s in sampled] == [4, 4, 4] and all(len(set(s)) > 1 for s in sampled)


# --- turn 2 continues from turn 1's cache (visual CoT) ---------------------------------------------------
class _PlainTurns:
    """The adapter without its own generate_two_turns: both turns prefilled from scratch."""

    def __init__(self, adapter):
        self.generate = adapter.generate


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl", "qwen2_5_vl"])
def test_turn_two_from_turn_one_cache_matches_a_fresh_prefill(arch, tiny_adapters, tmp_path):
    """Greedy replies and answers equal the two-separate-prefills path, with prompts of different lengths
    in one batch, K=1 and K=3, a crop as the new image and the uncropped image again."""
    from fixtures import write_image
    from PIL import Image

    from visrl_bench.models import ChatRequest, generate_two_turns
    from visrl_bench.reasoning import answer_step_messages, box_step_messages

    images, questions = [], []
    for i in range(3):
        write_image(tmp_path / f"{i}.jpg", size=(64 + 24 * i, 56), color=(30 * i, 120, 200))
        images.append(Image.open(tmp_path / f"{i}.jpg"))
        questions.append("what is written on the sign? " * (i + 1))
    first = [ChatRequest(box_step_messages(q), [im]) for q, im in zip(questions, images, strict=True)]

    def follow_up(i: int, reply: str) -> ChatRequest:
        image = images[i]
        second = image if i == 1 else image.crop((4, 4, 40 + 8 * i, 40))
        return ChatRequest(
            answer_step_messages(questions[i], reply, "Answer."),
            [image, second],
        )

    adapter = tiny_adapters[arch]
    before = dict(adapter.turn_two_batches)
    for k in (1, 3):
        settings = GenerationSettings(max_new_tokens=6, num_return_sequences=k)
        one = GenerationSettings(max_new_tokens=10)
        reused = generate_two_turns(adapter, first, follow_up, one, settings, batch_size=3)
        plain = generate_two_turns(_PlainTurns(adapter), first, follow_up, one, settings, batch_size=3)
        assert reused == plain
        assert all(len(outs) == k for outs in reused[1])
    assert adapter.turn_two_batches["from_turn_one_cache"] == before["from_turn_one_cache"] + 2
    assert adapter.turn_two_batches["refilled"] == before["refilled"]

    def rephrased(i: int, reply: str) -> ChatRequest:  # turn 2 does not repeat turn 1: refilled, same text
        return ChatRequest(answer_step_messages("and now?", reply, "Answer."), [images[i], images[i]])

    reused = generate_two_turns(adapter, first, rephrased, one, settings, batch_size=2)
    assert reused == generate_two_turns(_PlainTurns(adapter), first, rephrased, one, settings, batch_size=2)
    assert adapter.turn_two_batches["refilled"] == before["refilled"] + 2


# --- failures inside lmms-eval's evaluator end in a non-zero exit ------------------------------------------
def _run_visrl_lmms_eval(tmp_path: Path, task_dir: Path, pretrained: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "visrl_bench.cli", "lmms-eval",
        "--model", "visrl_cot", "--model_args", f"pretrained={pretrained},mode=direct",
        "--tasks", "visrl_textvqa", "--include_path", str(task_dir), "--batch_size", "2", "--device", "cpu",
        "--output_path", str(tmp_path / "lmms_out"),
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600, cwd=tmp_path)


@needs_lmms_eval
def test_visrl_bench_lmms_eval_exits_non_zero_when_the_evaluation_fails(tmp_path, tiny_checkpoints):
    """lmms-eval catches whatever its evaluation raises, logs it and exits 0; `visrl-bench lmms-eval` exits
    1 with one last line naming the error: for a checkpoint dir that does not exist (our plug-in's own
    error) and for a task whose code raises."""
    from visrl_bench.lmms_eval.tasks import write_textvqa_task

    data = make_textvqa(tmp_path / "textvqa")
    task_dir = write_textvqa_task(data, tmp_path / "task", max_new_tokens=4)
    missing = tmp_path / "no_such_checkpoint"
    run = _run_visrl_lmms_eval(tmp_path, task_dir, str(missing))
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 1, (run.stdout + run.stderr)[-4000:]
    assert last.startswith("error: lmms-eval evaluation failed: ") and str(missing) in last, last

    utils = task_dir / "utils.py"
    utils.write_text(
        utils.read_text()
        + '\n\ndef doc_to_text(doc, lmms_eval_specific_kwargs=None):\n    raise KeyError("no_such_field")\n'
    )
    run = _run_visrl_lmms_eval(tmp_path, task_dir, str(tiny_checkpoints["llava"]))
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 1, (run.stdout + run.stderr)[-4000:]
    assert last == "error: lmms-eval evaluation failed: KeyError: 'no_such_field'", last
    assert not list((tmp_path / "lmms_out").rglob("*results*.json"))


@needs_lmms_eval
@pytest.mark.parametrize(
    ("gen_kwargs", "expected"),
    [
        ({"temperature": 0, "top_p": 0, "max_new_tokens": 8}, (0.0, 1.0, 8)),  # POPE's, among 16 tasks
        ({"temperature": 0.7, "top_p": 0.9}, (0.7, 0.9, 16)),
        ({"do_sample": False, "temperature": 0.7, "top_p": 0}, (0.0, 1.0, 16)),
    ],
)
def test_lmms_eval_generation_kwargs_become_valid_settings(gen_kwargs, expected):
    from visrl_bench.core.errors import VisrlError
    from visrl_bench.lmms_eval.model import generation_from_gen_kwargs

    settings, _ = generation_from_gen_kwargs(gen_kwargs, 16, 0)
    assert (settings.temperature, settings.top_p, settings.max_new_tokens) == expected
    with pytest.raises(VisrlError, match="option max_new_tokens must be at least 1"):
        generation_from_gen_kwargs({"max_new_tokens": 0}, 16, 0)
