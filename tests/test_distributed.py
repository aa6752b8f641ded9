"""Data parallel `eval` and `generate` (2 CPU processes over gloo, tiny models): the same records and
metrics as one process, a killed run resumed with 1 or 2 processes to the identical result, and the shard
store underneath."""

import filecmp
import json
import subprocess
import sys
import time

import pytest

from visrl_bench.core.rundir import ShardedRecords, append_records

CLI = [sys.executable, "-m", "visrl_bench.cli"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_checkpoints):
    from fixtures import make_zoomworld

    data = make_zoomworld(tmp_path_factory.mktemp("dp") / "zw", test_questions=40, rl_questions=16)
    return tiny_checkpoints["qwen2_vl"], data


def _eval_args(world, out, batch_size=1):
    model, data = world
    args = ["eval", "--model", str(model), "--task", "zoomworld", "--data", str(data), "--split", "test"]
    args += ["--mode", "cot", "--batch-size", str(batch_size), "--max-new-tokens", "8", "--no-progress"]
    return [*args, "--output", str(out)]


def _run(args, **kwargs):
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def one_process_run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("dp_one") / "run"
    _run(_eval_args(world, out))
    return out


def _same_run(a, b):
    assert filecmp.cmp(a / "samples.jsonl", b / "samples.jsonl", shallow=False)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert ra["results"] == rb["results"]
    assert not (b / "shards").exists()
    return ra, rb


def test_two_process_eval_writes_what_one_process_writes(world, one_process_run, tmp_path):
    out = tmp_path / "two"
    result = _run([*_eval_args(world, out), "--num-processes", "2"])
    assert result.stdout.count("wrote ") == 1  # the main process reports, once
    one, two = _same_run(one_process_run, out)
    assert one["provenance"]["execution"]["processes"] == 1
    assert two["provenance"]["execution"] == {
        "processes": 2,
        "launcher": "accelerate",
        "threads_per_process": 1,
    }
    timing = two["timing"]["zoomworld"]
    assert timing["samples"] == 40 and sorted(timing["samples_per_process"]) == [20, 20]  # 10 windows of 4


# resumed with another number of processes (2 -> 1) by default; 2 -> 2 (measured identical too) with -m slow
@pytest.mark.parametrize("resume_with", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_a_killed_two_process_run_resumes_to_the_same_result(world, one_process_run, tmp_path, resume_with):
    import psutil

    out = tmp_path / "killed"
    launcher = subprocess.Popen(
        [*CLI, *_eval_args(world, out), "--num-processes", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    shard = out / "shards" / "samples.rank1.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (shard.is_file() and shard.read_text().count("\n") >= 1):
        time.sleep(0.02)
    # every process of the run at once (torchrun's workers are not in the launcher's process group)
    for proc in [*psutil.Process(launcher.pid).children(recursive=True), psutil.Process(launcher.pid)]:
        proc.kill()
    launcher.wait()
    assert not (out / "samples.jsonl").exists(), "the run finished before it was killed"
    with shard.open("a") as f:  # killed mid-write: a torn last line
        f.write('{"task": "zoomworld", "id": "te')
    _run([*_eval_args(world, out), "--resume", "--num-processes", str(resume_with)])
    _same_run(one_process_run, out)


def test_two_process_generate_writes_what_one_process_writes(world, tmp_path):
    model, data = world
    base = [f"model={model}", "task=zoomworld", f"data={data}", "split=rl", "k=4", "max_new_tokens=8"]
    base += ["batch_size=8", "progress=false"]
    _run(["generate", *base, f"out={tmp_path / 'one'}"])
    _run(["generate", *base, f"out={tmp_path / 'two'}", "--num-processes", "2"])
    for name in ("questions.jsonl", "pairs.jsonl"):
        assert filecmp.cmp(tmp_path / "one" / name, tmp_path / "two" / name, shallow=False), name
    stats = [json.loads((tmp_path / d / "stats.json").read_text()) for d in ("one", "two")]
    assert stats[1]["execution"]["processes"] == 2
    drop = ("execution", "seconds_this_run", "config")
    assert {k: v for k, v in stats[0].items() if k not in drop} == {
        k: v for k, v in stats[1].items() if k not in drop
    }


def test_shards_merge_into_one_process_order_keeping_one_record_per_key(tmp_path):
    def records(*positions):
        return [{"task": "t", "id": f"s{p}", "position": p} for p in positions]

    for rank, positions in ((0, (0, 1, 4, 5)), (1, (2, 3))):
        store = ShardedRecords(tmp_path, "samples.jsonl", rank, 2)
        with store.open() as sink:
            append_records(sink, records(*positions))
    with (tmp_path / "shards" / "samples.rank1.jsonl").open("a") as f:
        f.write('{"task": "t", "id": "s6"')  # a rank killed mid-write
    one = ShardedRecords(tmp_path, "samples.jsonl")  # resumed with one process
    one.repair()
    assert sorted(r["position"] for r in one.done()) == [0, 1, 2, 3, 4, 5]
    with one.open() as sink:
        append_records(sink, records(6, 3))  # a window run again whole: 3 is written twice
    merged = one.merge(key=lambda r: (r["task"], r["id"]), order=lambda r: r["position"])
    assert [r["position"] for r in merged] == list(range(7))
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert [json.loads(line)["position"] for line in lines] == list(range(7))
    assert not (tmp_path / "shards").exists()


# --- distributed training: DDP on 2 CPU processes over gloo ----------------------------------------------
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]


def _summary(out):
    return json.loads((out / "train_summary.json").read_text())


def test_sft_under_accelerate_launch_lowers_its_loss_and_saves_once(tiny_checkpoints, world, tmp_path):
    out = tmp_path / "sft"
    args = ["train", "--trainer", "sft", f"model={tiny_checkpoints['llava']}", f"data={world[1]}"]
    args += [f"out={out}", "lr=1e-2", "max_steps=6", "batch_size=2", "logging_steps=1", "progress=false"]
    result = subprocess.run(
        [*LAUNCH, "-m", "visrl_bench.cli", *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1
    summary = _summary(out)
    assert summary["execution"]["processes"] == 2 and summary["steps"] == 6
    assert summary["final_loss"] < summary["first_loss"]
    assert (out / "train.log").is_file() and (out / "train.rank1.log").is_file()
    evaluate = ["eval", "--model", str(out / "final"), "--task", "zoomworld", "--data", str(world[1])]
    evaluate += ["--split", "test", "--limit", "2", "--max-new-tokens", "4", "--no-progress"]
    _run([*evaluate, "--output", str(tmp_path / "ev")])  # a checkpoint eval loads


def test_step_dpo_on_two_processes_lowers_its_loss(tiny_checkpoints, world, tmp_path):
    from fixtures import make_pairs

    pairs = make_pairs(tmp_path / "pairs", world[1], "norm1000")
    out = tmp_path / "step_dpo"
    args = ["train", "--trainer", "step_dpo", f"model={tiny_checkpoints['qwen2_vl']}", f"pairs={pairs}"]
    args += [f"out={out}", "lora=false", "lr=1e-2", "max_steps=6", "batch_size=2", "logging_steps=1"]
    _run([*args, "progress=false", "--num-processes", "2"])
    summary = _summary(out)
    losses = [row["loss"] for row in summary["log"]]
    assert summary["execution"]["processes"] == 2 and len(losses) == 6
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 0
    assert losses[-1] < losses[0] - 0.05  # measured: 0.693 -> 0.386
    assert "box/loss" in summary["log"][-1] and "answer/loss" in summary["log"][-1]
    assert (out / "reference_logps.json").is_file()  # computed once, by the main process


def test_the_step_balanced_sampler_gives_every_batch_both_steps():
    from visrl_bench.trainers.step_dpo import StepBalancedSampler

    steps = ["box"] * 5 + ["answer"] * 2
    sampler = StepBalancedSampler(steps, batch_size=4, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) == 12  # 3 blocks of 2 box + 2 answer pairs
    for b in range(0, len(order), 4):
        assert sorted(steps[i] for i in order[b : b + 4]) == ["answer", "answer", "box", "box"]
    assert {i for i in order if steps[i] == "box"} == set(range(5))  # every pair, the shorter cycled
    assert list(sampler) != order  # reshuffled every epoch
    with pytest.raises(Exception, match="multiple of 2"):
        StepBalancedSampler(steps, batch_size=3, seed=0)
    sampler.set_epoch(0)  # a resumed run's epoch 0 is the first epoch's order again
    assert list(sampler) == order


@pytest.mark.parametrize("name", ["multi_gpu", "deepspeed_zero2_7b"])
def test_the_accelerate_configs_read_as_accelerate_reads_them(name):
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(Path(__file__).parents[1] / "configs" / "accelerate" / f"{name}.yaml"))
    assert config.num_processes == 8 and config.mixed_precision == "bf16"
    if name == "deepspeed_zero2_7b":
        # ZeRO-2 keeps whole weights on every GPU: the main process's save is the full model
        assert config.deepspeed_config["zero_stage"] == 2


def test_grpo_on_two_processes_counts_every_rank(world, tmp_path):
    """GRPO's summary totals over the ranks: each of 2 processes samples its own groups and answers them."""
    model, data = world
    out = tmp_path / "grpo"
    args = ["train", "--trainer", "grpo", f"model={model}", f"data={data}", "split=rl", f"out={out}"]
    args += ["lora=false", "max_steps=1", "batch_size=4", "num_generations=2", "limit=8"]
    args += ["max_completion_length=4", "answer_max_new_tokens=4", "progress=false", "--num-processes", "2"]
    _run(args)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 1
    assert summary["sampled_boxes"] == 8 and summary["answer_rollouts"] == 8  # 4 on each rank


def test_more_processes_than_windows_of_work_is_said(world, tmp_path):
    """Two processes for one window: the run is right, and the terminal says one process sat idle."""
    args = [*_eval_args(world, tmp_path / "run", batch_size=8), "--limit", "4", "--num-processes", "2"]
    result = _run(args)
    assert "1 window(s) of work for 2 processes; 1 had nothing to do" in result.stderr
    assert json.loads((tmp_path / "run" / "results.json").read_text())["results"]["zoomworld"]["n"] == 4
