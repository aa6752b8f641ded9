"""GRPO on the box step, on TRL's GRPOTrainer: the policy samples G boxes per question, each is cropped and
answered through the focus step eval uses, and the task's own metric on that answer is the box's reward.

A rollout is a visual-CoT trajectory: the box turn (what GRPO trains: the group's completions), then the
crop and the answer turn (greedy, by the current policy, under no grad: the environment's reply). The
reward is the task's metric on the final answer — never a gold box — plus an optional format term
(`format_weight` x [the box parses], off by default), or, with `judge.url`, an LLM judge's verdict on an
open-ended answer (a failed judge call gives that completion no reward, None in TRL's terms, and is counted
in the summary). Group size, beta (KL to the reference; 0 means no reference model), clipping and the
sampling temperature are TRL's options, with TRL's defaults. `permute_rewards` is the control: the rewards
of each group shuffled among its completions, which must not teach anything.

`rollout` chooses what a completion is:
- `box` (default): the box turn alone, as above; the answer turn is the environment's greedy reply and is
  not trained.
- `zoom`: the whole multi-turn trajectory, through TRL's tool loop (trainers/grpo_zoom.py): the box reply
  is a call of the `zoom` tool, which crops through `FocusStep` and returns the crop and the next
  instruction as the next turn (the very turn eval's `--mode zoom` builds, `reasoning.crop_turn`); the model
  then answers or writes one more box, up to `max_turns` crops, and the turn after the last crop must
  answer. Every token the model wrote (boxes and answer) is trained; the tool's tokens (the crop's image
  tokens, the instruction, the turn markers) get TRL's tool mask and carry no loss. The reward is the
  task's metric on the final reply. A reply counts as a call exactly when eval's zoom mode would read it as
  one (`holds_box`), decided from the dialogue so far by the response parser installed on a copy of the
  processor.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from visrl_bench.trainers.common import Recipe, TrainConfig, fit, load_policy, trl_arguments
from visrl_bench.trainers.grpo_zoom import (
    ZoomWorld,
    check_tool_images,
    placeholder_tokens,
    zoom_completion_length,
    zoom_processor,
)

from visrl_bench.core.errors import Bounds, VisrlError
from visrl_bench.core.seeding import seeded_random
from visrl_bench.metrics.judge import Judge, JudgeConfig, JudgeError
from visrl_bench.task import TaskData, task_reward


@dataclass
class GRPOConfig(TaskData, TrainConfig):
    split: str | None = "rl"
    num_generations: int = 8  # G, the group size (TRL's default)
    beta: float = 0.0  # KL coefficient (TRL's default: no reference model)
    epsilon: float = 0.2  # PPO-style clipping (TRL's default)
    temperature: float = 1.0  # sampling of the boxes (TRL's default)
    max_completion_length: int | None = None  # box: tokens of a box reply (32); zoom: of the whole
    # trajectory, the crops' tokens included (None: every turn's reply + each crop's turn, measured)
    rollout: str = "box"  # box: GRPO on the box turn; zoom: on the multi-turn trajectory (TRL's tool loop)
    max_turns: int = 3  # zoom: most crops a trajectory may take (eval's --max-turns)
    reply_max_new_tokens: int = 32  # zoom: tokens of each reply (a box, or the answer)
    answer_max_new_tokens: int = 32
    format_weight: float = 0.0  # reward += weight when the box parses
    # the reward of a trajectory with a box that does not parse (None: score its answer anyway). Such a
    # box gets no crop, so a policy that guesses rather than says "none" would earn chance for breaking the
    # box and nothing for a box that misses: the generator's guard for DPO pairs, here too
    invalid_box_reward: float | None = 0.0
    permute_rewards: bool = False  # control: rewards shuffled within each group
    # box rollouts: each question's image and prompt encoded once and its G boxes sampled from copies of
    # that cache (TRL's rollout_func). Off: TRL's own sampling, which repeats the prompt G times and
    # encodes the image and the prompt once per completion
    shared_prefix: bool = False
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    lr: float = 1e-5
    batch_size: int = 8  # completions per device step: batch_size / num_generations questions

    BOUNDS: ClassVar[Bounds] = {
        **TrainConfig.BOUNDS,
        **TaskData.BOUNDS,
        "num_generations": (2, None),
        "beta": (0, None),
        "epsilon": (0, 1),
        "temperature": (1e-6, None),
        "max_completion_length": (1, None),
        "answer_max_new_tokens": (1, None),
        "max_turns": (1, 16),  # each crop adds an image to the context: 16 is far past any use
        "reply_max_new_tokens": (1, None),
        "format_weight": (0, None),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rollout not in ("box", "zoom"):
            raise VisrlError(f"option rollout takes 'box' or 'zoom', got {self.rollout!r}")
        if self.shared_prefix and self.rollout != "box":
            raise VisrlError("option shared_prefix applies to box rollouts only (rollout=box)")
        if (self.batch_size * self.grad_accum) % self.num_generations:
            raise VisrlError(
                f"batch_size x grad_accum ({self.batch_size * self.grad_accum}) must be a multiple of "
                f"num_generations ({self.num_generations}): a step scores whole groups"
            )


def completion_text(completion: Any) -> str:
    """TRL hands conversational completions as [{"role": "assistant", "content": text}]."""
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion)
    return str(completion)


class AnswerReward:
    """reward = the task's metric on the trajectory's answer (+ `format_weight` when its boxes parse).

    `box` rollouts: the answer is the current policy's greedy reply from the box's crop (generated here).
    `zoom` rollouts: the answer is the trajectory's final reply, its boxes those its environment cropped."""

    __name__ = "answer"  # TRL logs rewards/<name>/mean

    def __init__(self, task, samples: list, images: list, adapter, cfg: GRPOConfig):
        self.task, self.samples, self.images, self.adapter, self.cfg = task, samples, images, adapter, cfg
        self.min_side = cfg.crop_min_side or task.default_crop_min_side
        self.judge = Judge(cfg.judge) if cfg.judge.enabled else None
        self.trajectories = 0  # box -> crop -> answer rollouts scored
        self.crops = 0  # crops shown in those trajectories
        self.judge_failures: list[str] = []
        self.judged = 0  # answers sent to the judge
        self._calls = 0

    def __call__(
        self, prompts, completions, index, environments=None, log_metric=None, **kwargs
    ) -> list[float | None]:
        if self.cfg.rollout == "zoom":
            answers = [final_reply(c) for c in completions]
            # a crop TRL dropped (it would overrun the token budget) was never shown: count what was
            shown = [
                env.steps[: sum(m.get("role") == "tool" for m in c)]
                for c, env in zip(completions, environments, strict=True)
            ]
            well_formed = [bool(steps) and all(step.box is not None for step in steps) for steps in shown]
            broken = [any(step.box is None for step in steps) for steps in shown]
            crops = [len(steps) for steps in shown]
            if log_metric is not None:
                log_metric("zoom/crops", sum(crops) / len(crops))
        else:
            answers, well_formed = self.answers_from_crops(index, completions)
            broken = [not ok for ok in well_formed]
            crops = [1] * len(answers)
        rewards = [
            self.cfg.invalid_box_reward
            if bad and self.cfg.invalid_box_reward is not None
            else self.score(i, a, ok)
            for i, a, ok, bad in zip(index, answers, well_formed, broken, strict=True)
        ]
        self.trajectories += len(answers)
        self.crops += sum(crops)
        self._calls += 1
        self.check_judge()
        if self.cfg.permute_rewards:
            rewards = permuted_within_groups(rewards, self.cfg.num_generations, self.cfg.seed, self._calls)
        return rewards

    def answers_from_crops(self, index, completions) -> tuple[list[str], list[bool]]:
        """The box rollout's environment: each box cropped through `FocusStep`, answered greedily, no grad."""
        import torch

        from visrl_bench.models import GenerationSettings
        from visrl_bench.reasoning import FocusStep

        conv = self.adapter.box_convention
        steps, requests = [], []
        for i, completion in zip(index, completions, strict=True):
            sample, (image, resized) = self.samples[i], self.images[i]
            step = FocusStep.from_text(completion_text(completion), image, conv, resized, self.min_side)
            steps.append(step)
            requests.append(step.request(sample.question, self.task.prompt(sample), image))
        settings = GenerationSettings(max_new_tokens=self.cfg.answer_max_new_tokens)
        model = self.adapter.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                answers = [o[0] for o in self.adapter.generate(requests, settings, batch_size=len(requests))]
        finally:
            model.train(was_training)
        return answers, [step.box is not None for step in steps]

    def check_judge(self) -> None:
        """Stop the run once the judge has failed on more than `judge.max_failure_rate` of its calls (from
        the 8th on): TRL would otherwise train on no reward at all and exit as if it had learned."""
        if self.judge is None:
            return
        from visrl_bench.core.distributed import gather

        # every rank decides on the totals, so that all stop together (one alone would leave the others
        # waiting in TRL's next collective)
        counts = gather((self.judged, len(self.judge_failures)))
        judged, failed = sum(c[0] for c in counts), sum(c[1] for c in counts)
        if judged >= 8 and failed / judged > self.cfg.judge.max_failure_rate:
            last = self.judge_failures[-1] if self.judge_failures else "on another process"
            raise VisrlError(
                f"the judge failed on {failed} of {judged} answers (more than "
                f"judge.max_failure_rate={self.cfg.judge.max_failure_rate:g}); the last: "
                f"{last}; stopping before training on no reward"
            )

    def score(self, i: int, answer: str, well_formed: bool) -> float | None:
        sample, (_, resized) = self.samples[i], self.images[i]
        try:
            if self.judge is not None:
                self.judged += 1
                value = self.judge.score(sample.question, str(sample.answer), answer)
            else:
                conv = self.adapter.box_convention
                row = {"box_format": conv.value, "resized_size": list(resized) if resized else None}
                value = task_reward(self.task, sample, answer, row)
        except JudgeError as exc:
            self.judge_failures.append(f"{sample.id}: {exc}")
            return None
        return value + self.cfg.format_weight * well_formed


def final_reply(completion: list[dict]) -> str:
    """The text of a multi-turn completion's last assistant message: the trajectory's answer."""
    replies = [m for m in completion if m.get("role") == "assistant"]
    return completion_text(replies[-1:]) if replies else ""


def permuted_within_groups(rewards: list, group: int, seed: int, call: int) -> list:
    """Each consecutive group of `group` rewards (one question's completions) shuffled by a seeded RNG."""
    out = []
    for start in range(0, len(rewards), group):
        chunk = rewards[start : start + group]
        seeded_random("grpo_permute", seed, call, start).shuffle(chunk)
        out += chunk
    return out


class SharedPrefixRollout:
    """TRL's `rollout_func` for box rollouts: TRL hands the step's prompts with each question repeated G
    times in a row (its RepeatSampler); each question is rendered and tokenized as TRL's own path does
    (the trainer's processor and chat template), prefilled once, and its G boxes sampled with TRL's
    generation config from copies of that cache (the adapter's shared prefill, as `generate` uses). The
    completions are cut after the first EOS as TRL cuts them, so the loss sees what TRL's path would have."""

    def __init__(self, adapter):
        self.adapter = adapter
        self.questions = 0  # prefills run (one per question per step), for the summary

    def __call__(self, prompts: list, trainer) -> dict[str, Any]:
        import torch

        group = trainer.num_generations
        prompt_ids, completion_ids = [], []
        for start in range(0, len(prompts), group):
            prompt = prompts[start]
            if any(_key_of(p) != _key_of(prompt) for p in prompts[start : start + group]):
                raise VisrlError("shared_prefix: TRL did not hand each question's G prompts together")
            inputs = trainer.processing_class.apply_chat_template(
                conversation=[prompt],
                chat_template=trainer.chat_template,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                **trainer.chat_template_kwargs,
            ).to(self.adapter.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.adapter.dtype)
            with torch.no_grad():
                out = self.adapter._generate_from_shared_prefill(inputs, trainer.generation_config, group)
            length = inputs["input_ids"].shape[1]
            ids = inputs["input_ids"][0].tolist()
            for row in out[:, length:].tolist():
                stop = next((i for i, t in enumerate(row) if t in trainer.eos_token_ids), len(row) - 1)
                prompt_ids.append(ids)
                completion_ids.append(row[: stop + 1])
            self.questions += 1
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}


def _key_of(prompt: list[dict]) -> tuple:
    """A prompt's text and its images' pixels: the same question text on two images is two questions."""
    parts = [p for m in prompt for p in (m["content"] if isinstance(m["content"], list) else [m["content"]])]
    text = "".join((p.get("text") or "") if isinstance(p, dict) else str(p) for p in parts)
    images = [p["image"] for p in parts if isinstance(p, dict) and p.get("image") is not None]
    return text, tuple((im.size, hash(im.tobytes())) for im in images)


def train(cfg: GRPOConfig, reward_funcs: list | None = None) -> Path:
    """`reward_funcs` (TRL's signature: (prompts, completions, index, **columns) -> rewards) replace the
    answer reward: a user's own reward, or a test's scripted one."""
    from datasets import Dataset
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import GRPOTrainer

    from visrl_bench.core.registry import TASKS
    from visrl_bench.reasoning import box_step_messages

    started = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    adapter = load_policy(cfg)
    task = TASKS.build(cfg.task, cfg.data, cfg.split, seed=cfg.seed, **cfg.task_options)
    samples, images, skipped = [], [], []
    for sample in task.samples():
        if cfg.limit is not None and len(samples) >= cfg.limit:
            break
        try:
            images.append(sample.open_for(adapter))
        except VisrlError as exc:  # counted in the summary; the question is left out
            skipped.append(str(exc))
            continue
        samples.append(sample)
    if not samples:
        raise VisrlError(f"no usable questions in {cfg.task} {cfg.data} split={cfg.split}")
    # the box turn as eval asks it: the adapter's image preparation, our dialogue, TRL's chat rendering
    dataset = Dataset.from_dict(
        {
            "prompt": [box_step_messages(s.question) for s in samples],
            "image": [adapter.prepare_image(image) for image, _ in images],
            "index": list(range(len(samples))),
        }
    )
    reward = AnswerReward(task, samples, images, adapter, cfg)
    funcs = reward_funcs or [reward]
    processor, rollout_args, rollout_kwargs = adapter.processor, {}, {}
    completion_length = cfg.max_completion_length or 32
    if cfg.rollout == "zoom":
        check_tool_images(adapter, dataset[0]["image"])
        processor = zoom_processor(adapter.processor)
        rollout_kwargs = {"environment_factory": ZoomWorld(task, samples, images, adapter, cfg).environment}
        rollout_args = {
            "max_tool_calling_iterations": cfg.max_turns,
            # TRL keeps the image token out of sampled replies; in a trajectory whose tokens are read back
            # with the crops' images, a sampled video placeholder would be taken for one too
            "generation_kwargs": {
                "suppress_tokens": placeholder_tokens(adapter.model.config),
                "max_new_tokens": cfg.reply_max_new_tokens,  # per reply; the trajectory's budget is below
            },
        }
        completion_length = cfg.max_completion_length or zoom_completion_length(processor, dataset, cfg)
    shared = SharedPrefixRollout(adapter) if cfg.shared_prefix else None
    if shared is not None:
        # TRL marks rollout_func experimental and says so on the terminal; the option's doc says it here
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        rollout_kwargs = {"rollout_func": shared}
    args = trl_arguments(
        TRLGRPOConfig,
        cfg,
        num_generations=cfg.num_generations,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        temperature=cfg.temperature,
        max_completion_length=completion_length,
        log_completions=False,
        **rollout_args,
    )
    trainer = GRPOTrainer(
        model=adapter.model,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        **rollout_kwargs,
    )

    def facts() -> dict[str, Any]:
        """Counts summed over the data-parallel ranks (every rank runs this; the main one writes it)."""
        from visrl_bench.core.distributed import gather

        rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
        mine = (reward.trajectories, reward.crops, shared.questions if shared else 0, reward.judge_failures)
        ranks = gather(mine)
        trajectories, crops, prefills = (sum(r[i] for r in ranks) for i in range(3))
        failures = [f for r in ranks for f in r[3]]
        return {
            "questions": len(samples),
            "skipped_questions": len(skipped),
            "skipped_examples": skipped[:3],
            "processes": len(ranks),
            "sampled_boxes": trainer.state.global_step * cfg.batch_size * cfg.grad_accum * len(ranks),
            "answer_rollouts": trajectories,  # box -> crop -> answer trajectories scored
            "rollout_prefills": prefills if shared else None,  # shared_prefix: one per question
            "crops_per_trajectory": round(crops / trajectories, 4) if trajectories else None,
            "max_completion_length": completion_length,
            "first_reward": rewards[0] if rewards else None,
            "final_reward": rewards[-1] if rewards else None,
            "judge": reward.judge.provenance() if reward.judge else None,
            "judge_failures": len(failures),
            "judge_failure_examples": failures[:3],
        }

    return fit(trainer, adapter, cfg, "grpo", started, facts)


RECIPE = Recipe(
    "grpo", GRPOConfig, train, "GRPO on the box step: reward = the task's metric on the crop's answer (TRL)"
)
