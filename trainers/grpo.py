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

What this recipe does not do: train the answer turn (the crop's and answer's tokens are not completions
here, so they carry no loss), or zoom several times in one trajectory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from visrl_bench.trainers.common import (
    Recipe,
    TrainConfig,
    load_policy,
    resume_point,
    route_logs,
    save_model,
    trainable_parameters,
    trl_arguments,
    write_summary,
)

from visrl_bench.core.errors import Bounds, VisrlError
from visrl_bench.core.seeding import seeded_random
from visrl_bench.metrics.judge import Judge, JudgeConfig, JudgeError
from visrl_bench.task import task_reward


@dataclass
class GRPOConfig(TrainConfig):
    task: str = "zoomworld"
    data: str = ""
    split: str | None = "rl"
    task_options: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None  # the first N questions of `split`
    crop_min_side: int | None = None  # None: the task's own rule, as in eval
    num_generations: int = 8  # G, the group size (TRL's default)
    beta: float = 0.0  # KL coefficient (TRL's default: no reference model)
    epsilon: float = 0.2  # PPO-style clipping (TRL's default)
    temperature: float = 1.0  # sampling of the boxes (TRL's default)
    max_completion_length: int = 32  # tokens of a box reply
    answer_max_new_tokens: int = 32
    format_weight: float = 0.0  # reward += weight when the box parses
    permute_rewards: bool = False  # control: rewards shuffled within each group
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    lr: float = 1e-5
    batch_size: int = 8  # completions per device step: batch_size / num_generations questions

    BOUNDS: ClassVar[Bounds] = {
        **TrainConfig.BOUNDS,
        "limit": (1, None),
        "crop_min_side": (1, None),
        "num_generations": (2, None),
        "beta": (0, None),
        "epsilon": (0, 1),
        "temperature": (1e-6, None),
        "max_completion_length": (1, None),
        "answer_max_new_tokens": (1, None),
        "format_weight": (0, None),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
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
    """reward(box) = the task's metric on the answer the current policy gives from that box's crop."""

    __name__ = "answer"  # TRL logs rewards/<name>/mean

    def __init__(self, task, samples: list, images: list, adapter, cfg: GRPOConfig):
        self.task, self.samples, self.images, self.adapter, self.cfg = task, samples, images, adapter, cfg
        self.min_side = cfg.crop_min_side or task.default_crop_min_side
        self.judge = Judge(cfg.judge) if cfg.judge.enabled else None
        self.trajectories = 0  # box -> crop -> answer rollouts scored
        self.judge_failures: list[str] = []
        self._calls = 0

    def __call__(self, prompts, completions, index, **kwargs) -> list[float | None]:
        import torch

        from visrl_bench.models import GenerationSettings
        from visrl_bench.reasoning import FocusStep

        conv = self.adapter.box_convention
        texts = [completion_text(c) for c in completions]
        steps, requests = [], []
        for i, text in zip(index, texts, strict=True):
            sample, (image, resized) = self.samples[i], self.images[i]
            step = FocusStep.from_text(text, image, conv, resized, self.min_side)
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
        rewards: list[float | None] = []
        for i, step, answer in zip(index, steps, answers, strict=True):
            sample, (image, resized) = self.samples[i], self.images[i]
            try:
                if self.judge is not None:
                    value = self.judge.score(sample.question, str(sample.answer), answer)
                else:
                    row = {"box_format": conv.value, "resized_size": list(resized) if resized else None}
                    value = task_reward(self.task, sample, answer, row)
            except JudgeError as exc:
                self.judge_failures.append(f"{sample.id}: {exc}")
                rewards.append(None)
                continue
            rewards.append(value + self.cfg.format_weight * (step.box is not None))
        self.trajectories += len(texts)
        self._calls += 1
        if self.cfg.permute_rewards:
            rewards = permuted_within_groups(rewards, self.cfg.num_generations, self.cfg.seed, self._calls)
        return rewards


def permuted_within_groups(rewards: list, group: int, seed: int, call: int) -> list:
    """Each consecutive group of `group` rewards (one question's completions) shuffled by a seeded RNG."""
    out = []
    for start in range(0, len(rewards), group):
        chunk = rewards[start : start + group]
        seeded_random("grpo_permute", seed, call, start).shuffle(chunk)
        out += chunk
    return out


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
    args = trl_arguments(
        TRLGRPOConfig,
        cfg,
        num_generations=cfg.num_generations,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        temperature=cfg.temperature,
        max_completion_length=cfg.max_completion_length,
        log_completions=False,
    )
    trainer = GRPOTrainer(
        model=adapter.model,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=adapter.processor,
    )
    route_logs(trainer, out)
    resume = resume_point(cfg, adapter.model)
    result = trainer.train(resume_from_checkpoint=resume)
    trained, total = trainable_parameters(adapter.model)
    final = out / "final"
    save_model(adapter.model, cfg.model, final, {"trainer": "grpo", "config": cfg.as_dict()})
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    write_summary(
        out,
        {
            "trainer": "grpo",
            "model": str(final),
            "questions": len(samples),
            "skipped_questions": len(skipped),
            "skipped_examples": skipped[:3],
            "steps": trainer.state.global_step,
            "sampled_boxes": trainer.state.global_step * cfg.batch_size * cfg.grad_accum,
            "answer_rollouts": reward.trajectories,  # box -> crop -> answer trajectories scored
            "first_reward": rewards[0] if rewards else None,
            "final_reward": rewards[-1] if rewards else None,
            "train_loss": result.training_loss,
            "judge": reward.judge.provenance() if reward.judge else None,
            "judge_failures": len(reward.judge_failures),
            "judge_failure_examples": reward.judge_failures[:3],
            "trainable_parameters": trained,
            "parameters": total,
            "resumed_from": resume,
            "seconds": round(time.perf_counter() - started, 1),
            "config": cfg.as_dict(),
        },
    )
    return final


RECIPE = Recipe(
    "grpo", GRPOConfig, train, "GRPO on the box step: reward = the task's metric on the crop's answer (TRL)"
)
