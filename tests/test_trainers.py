"""Trainer recipes on tiny models: each lowers its loss; step-DPO = the weighted sum of two DPO losses;
resume continues the same run; LoRA export gives the same model; the CLI runs a recipe."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(scope="module")
def zoomworld(tmp_path_factory):
    from fixtures import make_zoomworld

    return make_zoomworld(tmp_path_factory.mktemp("zw_train") / "zw")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, zoomworld):
    from fixtures import make_pairs

    root = tmp_path_factory.mktemp("pairs")
    return {
        "llava": make_pairs(root / "llava", zoomworld, "square_norm"),
        "qwen2_vl": make_pairs(root / "qwen2_vl", zoomworld, "norm1000"),
    }


def _losses(out):
    return [row["loss"] for row in json.loads((out / "train_summary.json").read_text())["log"]]


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_sft_lowers_loss_and_saves_an_eval_checkpoint(arch, tiny_checkpoints, zoomworld, tmp_path):
    from visrl_bench.trainers.sft import SFTConfig, train

    from visrl_bench.models import ChatRequest, GenerationSettings, load_model
    from visrl_bench.reasoning import box_step_messages

    out = tmp_path / "sft"
    final = train(
        SFTConfig(
            model=str(tiny_checkpoints[arch]),
            out=str(out),
            data=str(zoomworld),
            lr=1e-2,
            max_steps=8,
            batch_size=4,
            logging_steps=1,
            progress=False,
        )
    )
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["rows"] == 12  # 6 annotated questions x (box step, answer step)
    assert summary["final_loss"] < summary["first_loss"]
    assert summary["trainable_parameters"] < summary["parameters"]  # LoRA on the LM only
    assert "loss" in (out / "log.csv").read_text().splitlines()[0]
    adapter = load_model(final)  # merged: a plain checkpoint
    assert not any("lora" in n for n, _ in adapter.model.named_parameters())
    base = load_model(tiny_checkpoints[arch]).model.state_dict()
    trained = adapter.model.state_dict()
    assert trained.keys() == base.keys()
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    vision = adapter.vision_module
    # the LoRA deltas were merged into the language model's projections, and only there
    assert changed and all("language_model" in k and "proj" in k for k in changed)
    assert not any(f".{vision}." in f".{k}" for k in changed)
    from PIL import Image

    request = ChatRequest(box_step_messages("q?"), [Image.new("RGB", (64, 48))])
    settings = GenerationSettings(max_new_tokens=4)
    assert adapter.generate([request], settings) == load_model(final).generate([request], settings)


@pytest.mark.parametrize(("trainer", "arch"), [("dpo", "llava"), ("step_dpo", "qwen2_vl")])
def test_dpo_recipes_lower_their_loss(trainer, arch, tiny_checkpoints, pairs, tmp_path):
    from visrl_bench.core.config import load_config
    from visrl_bench.core.registry import TRAINERS

    recipe = TRAINERS.load(trainer)
    out = tmp_path / trainer
    cfg = load_config(
        recipe.config_class,
        None,
        ["lora=false", "lr=1e-2", "max_steps=6", "logging_steps=1"],
        model=str(tiny_checkpoints[arch]),
        pairs=str(pairs[arch]),
        out=str(out),
        batch_size=4,
        progress=False,
    )
    recipe.run(cfg)
    losses = _losses(out)
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 0: log 2
    assert losses[-1] < losses[0] - 0.05
    summary = json.loads((out / "train_summary.json").read_text())
    if trainer == "step_dpo":
        assert summary["by_step"] == {"box": 6, "answer": 6}
        logged = summary["log"][-1]
        assert {"box/rewards/margins", "answer/rewards/margins", "box/loss", "answer/loss"} <= set(logged)
    else:
        assert summary["by_step"] == {"trajectory": 6}


def _completion_logps(model, batch) -> torch.Tensor:
    """Sum of log p(token) over the completion tokens, from the logits: the test's own computation."""
    inputs = {
        k: v
        for k, v in batch.items()
        if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")
    }
    logits = model(**inputs).logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    mask = batch["completion_mask"][:, 1:].float()
    per_token = torch.gather(F.log_softmax(logits, -1), 2, targets.unsqueeze(-1)).squeeze(-1)
    return (per_token * mask).sum(-1)


def _dpo(policy, reference, batch, beta) -> torch.Tensor:
    pc, pr = _completion_logps(policy, batch).chunk(2)
    rc, rr = _completion_logps(reference, batch).chunk(2)
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()


def test_step_dpo_loss_is_the_weighted_sum_of_two_dpo_losses(tmp_path, pairs):
    from visrl_bench.trainers.dpo import build_trainer
    from visrl_bench.trainers.step_dpo import StepDPOConfig, StepDPOTrainer

    from visrl_bench.models import load_model
    from visrl_bench.models.tiny import build_tiny

    policy_dir = build_tiny("qwen2_vl", tmp_path / "policy", seed=1)
    reference_dir = build_tiny("qwen2_vl", tmp_path / "reference", seed=2)  # same tokenizer, other weights
    cfg = StepDPOConfig(
        model=str(policy_dir),
        reference=str(reference_dir),
        pairs=str(pairs["qwen2_vl"]),
        out=str(tmp_path / "out"),
        lora=False,
        beta=0.3,
        batch_size=4,
        progress=False,
    )
    trainer, _, adapter = build_trainer(
        cfg, ("box", "answer"), StepDPOTrainer, step_weights={"box": 0.3, "answer": 0.7}
    )
    reference = load_model(reference_dir).model.eval()
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = trainer.collate(rows[:8])
    assert set(batch) == {"box", "answer"} and len(batch["box"]["ref_chosen_logps"]) == 4
    policy = adapter.model.eval()
    with torch.no_grad():
        # the precomputed reference columns are the reference model's log-probs
        for step in ("box", "answer"):
            rc, rr = _completion_logps(reference, batch[step]).chunk(2)
            assert torch.allclose(batch[step]["ref_chosen_logps"], rc, atol=1e-4)
            assert torch.allclose(batch[step]["ref_rejected_logps"], rr, atol=1e-4)
        got = trainer.compute_loss(policy, batch)
        want = 0.3 * _dpo(policy, reference, batch["box"], 0.3) + 0.7 * _dpo(
            policy, reference, batch["answer"], 0.3
        )
    assert got.item() == pytest.approx(want.item(), rel=1e-4, abs=1e-5)
    assert abs(want.item() - 0.6931) > 1e-3  # different policy and reference: not the trivial log 2


def test_resume_after_interruption_continues_the_same_run(tiny_checkpoints, zoomworld, tmp_path):
    from safetensors.torch import load_file
    from visrl_bench.trainers.sft import SFTConfig, train

    def cfg(out, **kw):
        return SFTConfig(
            model=str(tiny_checkpoints["llava"]),
            out=str(out),
            data=str(zoomworld),
            lr=5e-3,
            lora=False,
            max_steps=6,
            batch_size=4,
            save_steps=3,
            progress=False,
            **kw,
        )

    whole = load_file(train(cfg(tmp_path / "a")) / "model.safetensors")
    interrupted = tmp_path / "b"
    train(cfg(interrupted))
    # the run "died" after its step-3 checkpoint: the later checkpoint and the final model are gone
    shutil.rmtree(interrupted / "checkpoint-6")
    shutil.rmtree(interrupted / "final")
    resumed = load_file(train(cfg(interrupted, resume=True)) / "model.safetensors")
    summary = json.loads((interrupted / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-3") and summary["steps"] == 6
    assert whole.keys() == resumed.keys()
    diffs = {k: (whole[k] - resumed[k]).abs().max().item() for k in whole}
    assert max(diffs.values()) < 1e-6, sorted(diffs.items(), key=lambda kv: -kv[1])[:5]


def test_export_merges_a_lora_adapter(tiny_checkpoints, tmp_path):
    from peft import LoraConfig, get_peft_model
    from visrl_bench.trainers.common import LM_LORA_TARGETS, export

    from visrl_bench.models import load_model
    from visrl_bench.train.collate import Completion, VisionBatcher

    base = tiny_checkpoints["llava"]
    adapter = load_model(base)
    peft_model = get_peft_model(adapter.model, LoraConfig(r=4, target_modules=LM_LORA_TARGETS))
    assert not any("vision_tower" in n and "lora" in n for n, _ in peft_model.named_parameters())
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained-looking adapter (B starts at zero)
    peft_model.save_pretrained(tmp_path / "adapter")
    from PIL import Image

    batch = VisionBatcher.for_adapter(adapter).sft(
        [
            Completion(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q?"}]}],
                [Image.new("RGB", (40, 30), "red")],
                "none",
            )
        ]
    )
    with torch.no_grad():
        want = peft_model(**batch).logits
    merged = load_model(export(tmp_path / "adapter", base, tmp_path / "merged")).model
    with torch.no_grad():
        got = merged(**batch).logits
    assert torch.allclose(got, want, atol=1e-4)


def test_train_cli_runs_a_recipe_from_yaml_and_overrides(tiny_checkpoints, zoomworld, tmp_path):
    from typer.testing import CliRunner

    from visrl_bench.cli import app

    (tmp_path / "sft.yaml").write_text(f"data: {zoomworld}\nmax_steps: 2\nbatch_size: 4\nprogress: false\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--trainer",
            "sft",
            "--config",
            str(tmp_path / "sft.yaml"),
            f"model={tiny_checkpoints['qwen2_vl']}",
            f"out={out}",
            "lr=1e-3",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["config"]["lr"] == 1e-3
    bad = CliRunner().invoke(
        app,
        [
            "train",
            "--trainer",
            "sft",
            f"model={tiny_checkpoints['qwen2_vl']}",
            f"out={out}",
            "learning_rate=1",
        ],
    )
    assert bad.exit_code == 2 and "unknown option(s) learning_rate" in bad.output
    typo = CliRunner().invoke(app, ["train", "--trainer", "step-dpo"])
    assert typo.exit_code == 2 and "step_dpo" in typo.output
