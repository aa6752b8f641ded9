"""The `grpo` recipe on TRL's GRPOTrainer: a scripted reward rises on a tiny model; the answer reward is the
task's metric on the answer from the box's crop; the permuted-reward control; a failing judge."""

import json

import pytest
from visrl_bench.trainers.grpo import AnswerReward, GRPOConfig, permuted_within_groups, train

from visrl_bench.core.boxes import Box, BoxConvention, format_box
from visrl_bench.core.config import load_config
from visrl_bench.core.errors import VisrlError
from visrl_bench.core.registry import TASKS


@pytest.fixture(scope="module")
def zoomworld(tmp_path_factory):
    from fixtures import make_zoomworld

    return make_zoomworld(tmp_path_factory.mktemp("zw_grpo") / "zw")


def digits(prompts, completions, index, **kwargs):
    """Scripted: the share of digits in the box reply (a box is mostly digits)."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


digits.__name__ = "digits"


def small_grpo(model, zoomworld, out, **options) -> GRPOConfig:
    """Full fine-tuning of a tiny model on the RL split: 2 questions x 4 boxes per step, 8-token boxes."""
    common = dict(split="rl", lora=False, batch_size=8, num_generations=4, max_completion_length=8)
    common |= dict(logging_steps=1, progress=False)
    return GRPOConfig(model=str(model), out=str(out), data=str(zoomworld), **{**common, **options})


def test_grpo_raises_a_scripted_reward_and_saves_an_eval_checkpoint(tiny_checkpoints, zoomworld, tmp_path):
    from visrl_bench.models import load_model

    out = tmp_path / "grpo"
    cfg = small_grpo(tiny_checkpoints["qwen2_vl"], zoomworld, out, lr=2e-2, max_steps=24)
    final = train(cfg, reward_funcs=[digits])
    rewards = [float(r["reward"]) for r in _rows(out / "log.csv") if r.get("reward")]
    assert len(rewards) == 24
    first, last = sum(rewards[:6]) / 6, sum(rewards[-6:]) / 6
    assert last > first + 0.1, rewards  # measured: 0.44 -> 0.61 (first 6 vs last 6 steps), seeded
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 24 and summary["sampled_boxes"] == 24 * 8
    load_model(final)  # a plain checkpoint eval loads


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_shared_prefix_rollouts_sample_what_trl_samples(arch, tiny_checkpoints, zoomworld, tmp_path):
    """At a temperature that makes sampling greedy and a rate that leaves the model as it is, TRL's own
    rollouts and the shared-prefix ones (one prefill per question) give the same boxes: the same rewards
    and completion lengths at every step."""
    logs, summaries = {}, {}
    for shared in (False, True):
        out = tmp_path / f"grpo_shared_{shared}"
        cfg = small_grpo(
            tiny_checkpoints[arch],
            zoomworld,
            out,
            lr=1e-12,
            max_steps=2,
            temperature=1e-6,
            shared_prefix=shared,
        )
        train(cfg, reward_funcs=[digits])
        rows = [r for r in _rows(out / "log.csv") if r.get("reward")]
        logs[shared] = [(r["reward"], r["completions/mean_length"]) for r in rows]
        summaries[shared] = json.loads((out / "train_summary.json").read_text())
    assert len(logs[True]) == 2 and logs[True] == logs[False]
    assert summaries[True]["rollout_prefills"] == 2 * 8 // 4 and summaries[False]["rollout_prefills"] is None
    with pytest.raises(VisrlError, match="shared_prefix applies to box rollouts only"):
        GRPOConfig(model="m", out="o", rollout="zoom", shared_prefix=True)


def _rows(path):
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


class LeftHalfAdapter:
    """A stand-in policy (test double): answers the sample's pattern when the crop's centre lies in the left
    half of the image, 'none' otherwise."""

    arch = "scripted"
    box_convention = BoxConvention.NORM1000

    def __init__(self, answer, guess: bool = False):
        import torch

        self.answer, self.guess = answer, guess  # guess: answer the pattern without a crop, too
        self.model = torch.nn.Linear(1, 1)
        self.seen = []

    def generate(self, requests, settings, batch_size=1):
        out = []
        for r in requests:
            _image, crop = r.images
            self.seen.append(crop.size)
            right = getattr(crop, "left_half", self.guess)
            out.append([self.answer if right else "none"])
        return out


def test_the_answer_reward_is_the_tasks_metric_on_the_crops_answer(zoomworld, monkeypatch):
    from PIL import Image

    from visrl_bench.reasoning import focus

    task = TASKS.build("zoomworld", str(zoomworld), "rl")
    sample = next(iter(task.samples()))
    image = sample.load_image()
    w, h = image.size
    real_of = focus.FocusStep.of

    def marking_of(text, parsed, img, min_side, crop=True):  # marks crops whose box centre is on the left
        step = real_of(text, parsed, img, min_side, crop)
        if parsed.box is not None and isinstance(step.second, Image.Image):
            step.second.left_half = (parsed.box.x1 + parsed.box.x2) / 2 < w / 2
        return step

    monkeypatch.setattr(focus.FocusStep, "of", staticmethod(marking_of))
    left = format_box(Box(0, 0, w / 4, h / 2), "norm1000", (w, h))
    right = format_box(Box(3 * w / 4, 0, w, h / 2), "norm1000", (w, h))
    adapter = LeftHalfAdapter(sample.answer)
    completions = [[{"role": "assistant", "content": t}] for t in (left, right, "no box here", left)]
    cfg = GRPOConfig(model="x", out="y", num_generations=4, batch_size=4, format_weight=0.5)
    reward = AnswerReward(task, [sample], [(image, None)], adapter, cfg)
    got = reward(prompts=[None] * 4, completions=completions, index=[0, 0, 0, 0])
    # the task's accuracy on the crop's answer, + 0.5 for a box that parses; never a gold box
    assert got == [1.5, 0.5, 0.0, 1.5]
    assert reward.trajectories == 4 and len(adapter.seen) == 4

    cfg = GRPOConfig(model="x", out="y", num_generations=4, batch_size=4, permute_rewards=True)
    shuffled = AnswerReward(task, [sample], [(image, None)], adapter, cfg)(
        prompts=[None] * 4, completions=completions, index=[0, 0, 0, 0]
    )
    assert sorted(shuffled) == [0.0, 0.0, 1.0, 1.0]  # the group's rewards, shuffled among its completions

    # a policy that guesses the pattern without a crop: a box that does not parse earns nothing, unless
    # the guard is off
    guesser = LeftHalfAdapter(sample.answer, guess=True)
    cfg = GRPOConfig(model="x", out="y", num_generations=4, batch_size=4)
    assert AnswerReward(task, [sample], [(image, None)], guesser, cfg)(
        prompts=[None] * 4, completions=completions, index=[0, 0, 0, 0]
    ) == [1.0, 0.0, 0.0, 1.0]
    cfg = GRPOConfig(model="x", out="y", num_generations=4, batch_size=4, invalid_box_reward=None)
    assert AnswerReward(task, [sample], [(image, None)], guesser, cfg)(
        prompts=[None] * 4, completions=completions, index=[0, 0, 0, 0]
    ) == [1.0, 0.0, 1.0, 1.0]


def test_permuted_rewards_stay_inside_their_group():
    rewards = [1.0, 0.0, 0.0, 0.0, 5.0, 6.0, 7.0, 8.0]
    out = permuted_within_groups(rewards, 4, seed=0, call=1)
    assert sorted(out[:4]) == [0.0, 0.0, 0.0, 1.0] and sorted(out[4:]) == [5.0, 6.0, 7.0, 8.0]
    assert out != rewards or permuted_within_groups(rewards, 4, seed=0, call=2) != rewards
    assert out == permuted_within_groups(rewards, 4, seed=0, call=1)  # seeded


def test_a_failed_judge_call_is_no_reward_and_is_counted(zoomworld):
    task = TASKS.build("zoomworld", str(zoomworld), "rl")
    sample = next(iter(task.samples()))
    image = sample.load_image()
    cfg = load_config(
        GRPOConfig,
        overrides=[
            *("model=x", "out=y", "num_generations=2", "batch_size=2"),
            *("judge.url=http://127.0.0.1:9/v1/chat/completions", "judge.model=m", "judge.retries=0"),
        ],
    )
    reward = AnswerReward(task, [sample], [(image, None)], LeftHalfAdapter(sample.answer), cfg)
    got = reward(prompts=[None] * 2, completions=["[1, 2, 3, 4]", "[5, 6, 7, 8]"], index=[0, 0])
    assert got == [None, None] and len(reward.judge_failures) == 2
    # a box that does not parse is not sent to the judge: it earns invalid_box_reward
    assert reward(prompts=[None], completions=["x"], index=[0]) == [0.0] and len(reward.judge_failures) == 2
    # past the 8th call, a judge failing on more than max_failure_rate of them stops the run, loudly
    reward(prompts=[None] * 2, completions=["[1, 2, 3, 4]"] * 2, index=[0, 0])
    reward(prompts=[None] * 2, completions=["[1, 2, 3, 4]"] * 2, index=[0, 0])
    with pytest.raises(VisrlError, match=r"the judge failed on 8 of 8 answers .* stopping"):
        reward(prompts=[None] * 2, completions=["[1, 2, 3, 4]"] * 2, index=[0, 0])


def test_grpo_options_are_checked():
    with pytest.raises(VisrlError, match="multiple of num_generations"):
        GRPOConfig(model="x", out="y", batch_size=6, num_generations=4)
    with pytest.raises(VisrlError, match="option num_generations"):
        GRPOConfig(model="x", out="y", num_generations=1)


def test_grpo_through_the_cli_with_the_answer_reward(tiny_checkpoints, zoomworld, tmp_path):
    from typer.testing import CliRunner

    from visrl_bench.cli import app

    out = tmp_path / "grpo"
    args = ["train", "--trainer", "grpo", f"model={tiny_checkpoints['llava']}", f"out={out}"]
    args += [
        f"data={zoomworld}",
        "max_steps=2",
        "batch_size=4",
        "num_generations=4",
        "max_completion_length=6",
    ]
    args += ["answer_max_new_tokens=4", "format_weight=0.5", "limit=4", "progress=false"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["answer_rollouts"] == summary["sampled_boxes"] == 8
    assert summary["questions"] == 4 and summary["judge"] is None and summary["judge_failures"] == 0
    assert "rewards/answer/mean" in (out / "log.csv").read_text().splitlines()[0]


# --- zoom rollouts: TRL's tool loop ----------------------------------------------------------------------
def _zoom_parser(tiny_adapters):
    from visrl_bench.trainers.grpo_zoom import zoom_processor

    adapter = tiny_adapters["qwen2_vl"]
    processor = zoom_processor(adapter.processor)
    tok = processor.tokenizer
    return processor, lambda reply, context: tok.parse_response(
        tok(reply, add_special_tokens=False).input_ids,
        prefix=tok(context, add_special_tokens=False).input_ids,
    )


def test_a_reply_is_a_zoom_call_exactly_when_eval_reads_one(tiny_adapters):
    from visrl_bench.reasoning import ANSWER_INSTRUCTION, BOX_INSTRUCTION, ZOOM_INSTRUCTION

    processor, parse = _zoom_parser(tiny_adapters)
    box, words = "[100, 200, 300, 400]", "stripes"
    calls = {
        (where, reply): "tool_calls" in parse(reply, f"q? {where} Answer briefly.")
        for where in (BOX_INSTRUCTION, ZOOM_INSTRUCTION, ANSWER_INSTRUCTION)
        for reply in (box, words)
    }
    assert calls == {
        (BOX_INSTRUCTION, box): True,  # the box turn: its reply is the box step, parsable or not
        (BOX_INSTRUCTION, words): True,
        (ZOOM_INSTRUCTION, box): True,  # after a crop with more allowed: a box is a call
        (ZOOM_INSTRUCTION, words): False,  # ... anything else the answer
        (ANSWER_INSTRUCTION, box): False,  # after the last crop: the answer, whatever it says
        (ANSWER_INSTRUCTION, words): False,
    }
    message = parse(box, BOX_INSTRUCTION)
    assert message["content"] == box and message["tool_calls"][0]["function"] == {
        "name": "zoom",
        "arguments": {"box": box},
    }
    # the adapter's own processor is left as it was (eval and saving use it)
    assert processor.chat_template != tiny_adapters["qwen2_vl"].processor.chat_template
    assert getattr(tiny_adapters["qwen2_vl"].processor.tokenizer, "response_template", None) is None


def test_zoom_rollouts_show_eval_crop_turns_and_mask_their_tokens(
    tiny_checkpoints, zoomworld, tmp_path, monkeypatch
):
    """One GRPO step of 3-turn zoom trajectories on tiny Qwen2-VL: each crop the tool inserted is eval's
    crop turn token for token (its image expanded to the crop's patches), and exactly those tokens carry
    TRL's tool mask 0 (no loss); every token the model wrote carries 1."""
    import re

    from trl import GRPOTrainer

    from visrl_bench.models import load_model
    from visrl_bench.reasoning import zoom_request

    seen = []
    real = GRPOTrainer._generate_and_score_completions

    def capture(self, inputs):
        out = real(self, inputs)
        seen.append((inputs, out, list(self.environments)))
        return out

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", capture)
    cfg = GRPOConfig(
        model=str(tiny_checkpoints["qwen2_vl"]),
        out=str(tmp_path / "zoom"),
        data=str(zoomworld),
        split="rl",
        lora=False,
        max_steps=1,
        batch_size=4,
        num_generations=4,
        rollout="zoom",
        max_turns=3,
        reply_max_new_tokens=5,
        progress=False,
    )
    train(cfg)
    adapter = load_model(tiny_checkpoints["qwen2_vl"])
    tok, merge = adapter.processor.tokenizer, adapter.processor.image_processor.merge_size
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    task = TASKS.build("zoomworld", str(zoomworld), "rl")
    samples = list(task.samples())
    inputs, out, environments = seen[0]
    crops_seen = 0
    for row, (x, env) in enumerate(zip(inputs, environments, strict=True)):
        ids, mask = out["completion_ids"][row], out["tool_mask"][row]
        keep = out["completion_mask"][row].bool()
        ids, mask = ids[keep].tolist(), mask[keep].tolist()
        segments = [m.span() for m in re.finditer("0+", "".join(map(str, mask)))]  # the tool's turns
        assert len(segments) <= len(env.steps) <= cfg.max_turns
        sample, image = samples[x["index"]], samples[x["index"]].load_image()
        for k, (a, b) in enumerate(segments, start=1):
            steps = env.steps[:k]
            # eval's dialogue after these boxes; TRL appends what follows the reply's end-of-turn token
            request = zoom_request(
                steps, sample.question, task.prompt(sample), image, final=k >= cfg.max_turns
            )
            full = adapter.render(request)
            upto = adapter.processor.apply_chat_template(
                request.messages[: 2 * k], add_generation_prompt=False
            )
            expected = full[upto.rindex("<|im_end|>") + len("<|im_end|>") :]
            got = tok.decode(ids[a:b], skip_special_tokens=False)
            assert re.sub(r"(<\|image_pad\|>)+", "<|image_pad|>", got) == expected
            grid = adapter.processor.image_processor(images=[steps[-1].second], return_tensors="pt")[
                "image_grid_thw"
            ]
            assert ids[a:b].count(pad) == int(grid.prod()) // merge**2  # the crop's own patches
            crops_seen += 1
        assert all(ids[i] != pad for i in range(len(ids)) if mask[i] == 1)  # the model wrote no image token
        assert sum(mask) == len(ids) - sum(b - a for a, b in segments)
    assert crops_seen >= 4  # every trajectory's box turn is a call (5 tokens fit the budget)
    summary = json.loads((tmp_path / "zoom" / "train_summary.json").read_text())
    assert summary["crops_per_trajectory"] >= 1 and summary["answer_rollouts"] == 4


def test_the_zoom_reward_scores_the_final_reply_and_counts_only_crops_shown(zoomworld):
    from types import SimpleNamespace

    from visrl_bench.core.boxes import ParsedBox

    task = TASKS.build("zoomworld", str(zoomworld), "rl")
    sample = next(iter(task.samples()))
    image = sample.load_image()
    cfg = GRPOConfig(model="x", out="y", num_generations=2, batch_size=2, rollout="zoom", format_weight=0.5)
    reward = AnswerReward(task, [sample], [(image, None)], LeftHalfAdapter(sample.answer), cfg)
    box = SimpleNamespace(box=Box(0, 0, 10, 10), parsed=ParsedBox(Box(0, 0, 10, 10)))
    unparsed = SimpleNamespace(box=None)
    answered = [
        {"role": "assistant", "content": "[1, 2, 3, 4]"},
        {"role": "tool", "content": []},
        {"role": "assistant", "content": str(sample.answer)},
    ]
    dropped = [{"role": "assistant", "content": "[1, 2, 3, 4]"}]  # TRL dropped the crop: over budget
    envs = [SimpleNamespace(steps=[box]), SimpleNamespace(steps=[unparsed])]
    got = reward(prompts=[None] * 2, completions=[answered, dropped], index=[0, 0], environments=envs)
    assert got == [1.5, 0.0]  # right answer + boxes parsed; no crop shown: its box text scored 0, no bonus
    assert reward.crops == 1 and reward.trajectories == 2


def test_zoom_rollouts_refuse_a_processor_tr_ls_tool_loop_cannot_feed(tiny_adapters):
    from visrl_bench.trainers.grpo_zoom import check_tool_images

    adapter = tiny_adapters["llava"]
    from PIL import Image

    with pytest.raises(VisrlError, match="image_grid_thw"):
        check_tool_images(adapter, Image.new("RGB", (64, 48)))
    check_tool_images(tiny_adapters["qwen2_vl"], Image.new("RGB", (64, 48)))
    # the ablation grid decides from the adapter's flag which bases get a grpo_zoom cell: the flag must say
    # what the processor does, for every architecture
    for arch, each in tiny_adapters.items():
        takes = "image_grid_thw" in each.processor.image_processor(images=[Image.new("RGB", (64, 48))])
        assert type(each).tool_images == takes, arch
    with pytest.raises(VisrlError, match="rollout takes"):
        GRPOConfig(model="x", out="y", rollout="tools")
