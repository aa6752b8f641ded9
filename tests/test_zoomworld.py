"""ZoomWorld: determinism, the geometry of answers, that tiles are unreadable in the global view, and that a
seconds-scale pretrain lowers the loss."""

import copy
import csv
import hashlib
import itertools
import json
from pathlib import Path

import pytest
from fixtures import _small_zoomworld, make_zoomworld
from typer.testing import CliRunner

from visrl_bench.cli import app
from visrl_bench.core.boxes import Box, crop_region
from visrl_bench.datagen.zoomworld import (
    NONE,
    PATTERNS,
    WorldObject,
    crop_answer,
    make_scene,
    render,
)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes(tmp_path):
    a, b, c = (make_zoomworld(tmp_path / n, seed=s) for n, s in (("a", 3), ("b", 3), ("c", 4)))
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    meta = json.loads((a / "zoomworld.json").read_text())
    counts = meta["counts"]
    assert counts == {
        "pretrain": counts["pretrain"],
        "ground": counts["ground"],
        "sft": 6,
        "rl": 9,
        "test": 9,
        "pairs": 4,
        "ground_test": counts["ground_test"],
    }


def test_ground_split_is_a_curriculum_of_referring_expressions(tmp_path):
    from visrl_bench.datagen.zoomworld import OBJECT_COLOURS, QUESTION, SHAPES

    root = make_zoomworld(tmp_path / "zw")
    rows = _rows(root, "ground")
    # 9 images: a third with 1 object, a third with 2, a third with the benchmark's 3-5
    by_image: dict[str, int] = {}
    for r in rows:
        by_image[r["image"]] = r["objects"]
    sizes = [by_image[k] for k in sorted(by_image)]
    assert sizes[:3] == [1, 1, 1] and sizes[3:6] == [2, 2, 2] and all(3 <= n <= 5 for n in sizes[6:])
    from PIL import Image

    for r in rows:
        _, colour, shape = r["phrase"].split()
        assert colour in OBJECT_COLOURS and shape in SHAPES
        # the box is the named object's: its colour near its left edge on the middle row, left of the tile
        # (a triangle's middle row is narrower than that)
        image = Image.open(root / r["image"]).convert("RGB")
        x1, y1, _, y2 = r["bbox"]
        if shape != "triangle":
            assert image.getpixel((int(x1 + 6), int((y1 + y2) / 2))) == OBJECT_COLOURS[colour]
        # grounding never uses the benchmark's question phrasing: that transfer is the SFT warm-up's job
        assert "tile pattern" not in r["phrase"] and QUESTION.split("{")[0] not in r["phrase"]


def test_splits_load_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    root = make_zoomworld(tmp_path / "zw")
    ds = datasets.load_dataset("json", data_files={s: str(root / f"{s}.jsonl") for s in ("sft", "test")})
    assert ds["test"].num_rows == 9 and {"question", "answer", "bbox", "image"} <= set(
        ds["test"].column_names
    )


def _rows(root: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (root / f"{split}.jsonl").read_text().splitlines()]


def test_every_gold_box_contains_its_targets_tile(tmp_path):
    root = make_zoomworld(tmp_path / "zw")
    for split in ("sft", "rl", "test"):
        for row in _rows(root, split):
            box, tile = Box(*row["bbox"]), Box(*row["target"]["tile"])
            assert box.x1 <= tile.x1 and tile.x2 <= box.x2 and box.y1 <= tile.y1 and tile.y2 <= box.y2
            target = WorldObject(**{**row["target"], "box": box, "tile": tile})
            region = crop_region(box, (row["width"], row["height"]), _small_zoomworld().crop_min_side)
            assert crop_answer(target, region) == row["answer"] != NONE  # the gold crop reads the answer


def test_wrong_object_and_background_crops_say_none():
    cfg = _small_zoomworld()
    checked = 0
    for i in range(30):
        scene = make_scene(cfg, 0, f"s{i}")
        for target in scene.objects:
            for other in scene.objects:
                if other is target:
                    continue
                region = crop_region(other.box, scene.size, cfg.crop_min_side)
                overlap = Box(
                    max(region.x1, target.tile.x1),
                    max(region.y1, target.tile.y1),
                    min(region.x2, target.tile.x2),
                    min(region.y2, target.tile.y2),
                )
                if overlap.width <= 0 or overlap.height <= 0:
                    assert crop_answer(target, region) == NONE
                    checked += 1
        corner = crop_region(Box(0, 0, 10, 10), scene.size, cfg.crop_min_side)
        for target in scene.objects:
            if target.tile.x1 >= corner.x2 or target.tile.y1 >= corner.y2:
                assert crop_answer(target, corner) == NONE
    assert checked > 50


def test_pretrain_labels_follow_the_crop_rule(tmp_path):
    root = make_zoomworld(tmp_path / "zw")
    rows = _rows(root, "pretrain")
    kinds = {r["kind"] for r in rows}
    assert kinds == {"crop", "direct"} and not any("bbox" in r for r in rows)  # no question -> box pairs
    assert {r["answer"] for r in rows if r["kind"] == "crop"} >= {NONE}


# candidate geometries (docs/zoomworld.md): world options and each arch's processor settings
GEOMETRIES = {
    "v1": (
        {"view_scale": 8, "cell": 4, "object_size": (28, 40), "readable_side": 64},
        {
            "llava": {"image_size": 64, "patch_size": 8},
            "qwen2_vl": {"min_pixels": 3072, "max_pixels": 3072, "qwen_patch": 8},
        },
    ),
    "d (the default)": ({}, {"llava": {}, "qwen2_vl": {}, "qwen3_vl": {}}),
    "d with a background ramp": ({"background_ramp": 48}, {"llava": {}, "qwen2_vl": {}, "qwen3_vl": {}}),
    "d, Qwen with one token per 4-px patch": ({}, {"qwen3_vl": {"qwen_patch": 4, "qwen_merge": 1}}),
}
TILE_CASES = [(arch, geometry) for geometry, (_, specs) in sorted(GEOMETRIES.items()) for arch in specs]


@pytest.mark.parametrize(("arch", "geometry"), TILE_CASES)
def test_tiles_are_unreadable_in_the_global_view_and_readable_in_a_crop(arch, geometry):
    """Change every tile's pattern: what the model's processor makes of the whole image is bit-identical,
    while the crop of an object changes."""
    from dataclasses import replace

    import numpy as np
    from visrl_bench.trainers.pretrain import zoomworld_spec

    from visrl_bench.models.hf.llava import mean_fill, pad_to_square
    from visrl_bench.models.tiny import build_model

    world, specs = GEOMETRIES[geometry]
    spec = replace(zoomworld_spec(arch), **specs[arch])
    spec.text_hidden, spec.text_layers, spec.vision_hidden, spec.vision_layers = 32, 1, 32, 1
    _, processor = build_model(arch, spec)
    ip = processor.image_processor

    def view(image):
        if arch == "llava":
            image = pad_to_square(image, mean_fill(ip))
        return np.asarray(ip(images=[image], return_tensors="np")["pixel_values"])

    cfg = replace(_small_zoomworld(), **world)
    for i in range(3):
        scene = make_scene(cfg, 0, f"probe{i}")
        names = sorted(PATTERNS)
        variant = copy.deepcopy(scene)
        for o in variant.objects:
            o.pattern = names[(names.index(o.pattern) + 1) % len(names)]
        a, b = render(scene), render(variant)
        assert np.array_equal(view(a), view(b))
        box = scene.objects[0].box
        region = tuple(int(v) for v in crop_region(box, scene.size, cfg.crop_min_side).as_list())
        assert not np.array_equal(view(a.crop(region)), view(b.crop(region)))


def test_a_geometry_that_would_show_the_tile_is_refused():
    from visrl_bench.core.errors import VisrlError
    from visrl_bench.datagen.zoomworld import ZoomWorldConfig

    with pytest.raises(VisrlError, match="period"):
        ZoomWorldConfig(view_scale=8, cell=8)  # one cell per view pixel: the view shows the pattern
    with pytest.raises(VisrlError, match="period"):
        ZoomWorldConfig(view_scale=16, cell=8, canvas=(520, 384))


def test_seconds_scale_pretrain_lowers_the_loss(tmp_path):
    from visrl_bench.trainers.pretrain import PretrainConfig, train

    root = make_zoomworld(tmp_path / "zw")
    small = {"text_hidden": 32, "text_layers": 1, "vision_hidden": 32, "vision_layers": 1}
    out = train(
        PretrainConfig(
            arch="qwen2_vl",
            data=str(root),
            out=str(tmp_path / "m"),
            steps=30,
            batch_size=8,
            lr=3e-3,
            warmup_steps=5,
            log_every=5,
            spec=small,
        ),
        progress=False,
    )
    with (out / "log.csv").open() as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")]
    assert losses[-1] < 0.8 * losses[0]
    info = json.loads((out / "provenance.json").read_text())
    assert info["arch"] == "qwen2_vl" and info["final_loss"] < info["first_loss"]
    # the checkpoint loads and answers through eval like any other
    from visrl_bench.eval.evaluate import EvalConfig, TaskSpec, evaluate
    from visrl_bench.models import GenerationSettings

    cfg = EvalConfig(
        model=str(out),
        tasks=[TaskSpec("zoomworld", str(root))],
        mode="gt_box",
        generation=GenerationSettings(max_new_tokens=3),
    )
    results = evaluate(cfg, tmp_path / "run", progress=False)
    assert results["results"]["zoomworld"]["n"] == 9 and results["results"]["zoomworld"]["focus_iou"] == 100.0


def test_pretrain_can_freeze_or_slow_the_vision_tower(tmp_path):
    """`vision_lr_scale=0` trains the language side only: the tower's weights stay as they were."""
    from dataclasses import asdict

    import torch
    from safetensors.torch import load_file
    from visrl_bench.trainers.pretrain import PretrainConfig, build_model, train, zoomworld_spec

    from visrl_bench.models.tiny import TinySpec

    root = make_zoomworld(tmp_path / "zw")
    small = {"text_hidden": 32, "text_layers": 1, "vision_hidden": 32, "vision_layers": 1}

    def weights(out):
        return {k: v for f in sorted(out.glob("*.safetensors")) for k, v in load_file(f).items()}

    runs = {}
    for scale in (1.0, 0.0):
        out = tmp_path / f"m{scale}"
        cfg = PretrainConfig(arch="qwen3_vl", data=str(root), out=str(out), steps=3, batch_size=4, spec=small)
        cfg.vision_lr_scale = scale
        runs[scale] = weights(train(cfg, progress=False))
    # the weights both runs started from: the same seeded random init
    spec = TinySpec(**{**asdict(zoomworld_spec("qwen3_vl")), **small})
    start = {k: v.detach() for k, v in build_model("qwen3_vl", spec, 0)[0].state_dict().items()}
    tower = [k for k in runs[0.0] if ".visual." in f".{k}"]
    assert tower and len(tower) < len(start)
    assert all(torch.equal(runs[0.0][k], start[k]) for k in tower)
    assert not all(torch.equal(runs[1.0][k], start[k]) for k in tower)
    assert not all(torch.equal(runs[0.0][k], start[k]) for k in runs[0.0] if k not in tower)


def test_sincos_init_makes_neighbouring_coordinates_and_patches_similar():
    import torch
    from visrl_bench.trainers.coordinates import sincos_init
    from visrl_bench.trainers.pretrain import zoomworld_spec

    from visrl_bench.models.tiny import build_model, coordinate_tokens

    def cos(a, b):
        return torch.nn.functional.cosine_similarity(a, b, dim=0).item()

    cases = (("llava", ("0.40", "0.41"), "0.90"), ("qwen2_vl", ("400", "405"), "900"))
    for arch, near, far in (*cases, ("qwen3_vl", ("400", "405"), "900")):
        model, processor = build_model(arch, zoomworld_spec(arch))
        sincos_init(model, processor.tokenizer, arch)
        ids = processor.tokenizer.convert_tokens_to_ids([*near, far])
        for matrix in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            a, b, c = matrix[ids]
            assert cos(a, b) > 0.9 and cos(a, b) > cos(a, c) + 0.3
        assert len(coordinate_tokens(arch)) in (101, 1001)
    model, processor = build_model("llava", zoomworld_spec("llava"))
    sincos_init(model, processor.tokenizer, "llava")
    pos = model.model.vision_tower.embeddings.position_embedding.weight[1:].view(8, 8, -1)
    assert cos(pos[3, 3], pos[3, 4]) > cos(pos[3, 3], pos[3, 7]) and cos(pos[3, 3], pos[4, 3]) > cos(
        pos[3, 3], pos[7, 3]
    )
    model3, processor3 = build_model("qwen3_vl", zoomworld_spec("qwen3_vl"))
    sincos_init(model3, processor3.tokenizer, "qwen3_vl")  # Qwen3-VL's square grid of absolute positions
    side = model3.model.visual.num_grid_per_side
    grid = model3.model.visual.pos_embed.weight.view(side, side, -1)
    assert cos(grid[3, 3], grid[3, 4]) > cos(grid[3, 3], grid[3, 9]) + 0.05
    assert cos(grid[3, 3], grid[4, 3]) > cos(grid[3, 3], grid[9, 3]) + 0.05
    # outputs_only leaves what a perception-trained base already uses untouched
    before = model.get_input_embeddings().weight.clone()
    sincos_init(model, processor.tokenizer, "llava", outputs_only=True)
    assert torch.equal(before, model.get_input_embeddings().weight)


def test_grounding_stage_continues_from_a_checkpoint(tmp_path):
    """The grounding preset through the CLI, here continuing a checkpoint: key=value overrides win over the
    preset, a held-out grounding IoU is recorded, and a checkpoint that already grounds is protected."""
    from visrl_bench.trainers.pretrain import PretrainConfig, train

    root = make_zoomworld(tmp_path / "zw")
    small = {"text_hidden": 32, "text_layers": 1, "vision_hidden": 32, "vision_layers": 1}
    first = train(
        PretrainConfig(
            arch="llava", data=str(root), out=str(tmp_path / "p"), steps=2, batch_size=4, spec=small
        ),
        progress=False,
    )
    args = ["zoomworld", "pretrain", "--arch", "llava", "--data", str(root), "--out", str(tmp_path / "g")]
    args += ["--init", str(first), "--grounding", "--no-progress", "steps=3", "batch_size=4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "g" / "provenance.json").read_text())
    assert info["config"]["init"] == str(first) and info["config"]["steps"] == 3
    assert info["config"]["ground_fraction"] == 1.0 and info["config"]["ground_curriculum"] == [0.4, 0.6]
    held_out = info["ground_holdout"]
    assert held_out["n"] >= 1 and 0.0 <= held_out["mean_iou"] <= 1.0
    result = CliRunner().invoke(app, [*args[:-2], "steps=3", "groundfraction=1"])
    assert result.exit_code == 2 and "unknown option(s) groundfraction" in result.stderr

    # continuing a checkpoint that already grounds: the preset's sincos_init would wipe its box outputs
    again = [*args[:6], "--out", str(tmp_path / "g2"), "--init", str(tmp_path / "g"), *args[10:]]
    result = CliRunner().invoke(app, again)
    assert result.exit_code == 2 and "pass sincos_init=false" in result.stderr, result.output
    result = CliRunner().invoke(app, [*again, "sincos_init=false"])
    assert result.exit_code == 0, result.output


def test_generate_cli_with_config(tmp_path):
    config = tmp_path / "zw.yaml"
    config.write_text(
        "pretrain_images: 3\nground_images: 3\nsft_questions: 2\nrl_questions: 2\ntest_questions: 4\n"
    )
    result = CliRunner().invoke(
        app, ["zoomworld", "generate", "--out", str(tmp_path / "zw"), "--seed", "1", "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert len(_rows(tmp_path / "zw", "test")) == 4
    config.write_text("canvass: [10, 10]\n")
    result = CliRunner().invoke(
        app, ["zoomworld", "generate", "--out", str(tmp_path / "x"), "--config", str(config)]
    )
    assert result.exit_code == 2 and "zw.yaml: unknown option(s) canvass for ZoomWorldConfig" in result.stderr


def test_baselines_table_and_checks():
    from visrl_bench.experiments.zoomworld import baselines_markdown, check_baselines

    def m(acc):
        return {"accuracy": acc, "accuracy_ci95": [acc - 2, acc + 2]}

    table = {
        "llava": {"direct": m(24.0), "gt_box": m(99.0), "random_box": m(1.0), "center_box": m(0.0)},
        "qwen2_vl": {"direct": m(40.0), "gt_box": m(85.0), "random_box": m(60.0), "center_box": m(10.0)},
    }
    checks = check_baselines(table)
    assert all(checks["llava"].values())
    assert checks["qwen2_vl"] == {
        "direct within 10 points of chance": False,  # 40 is 15 above 25
        "gt_box >= 90%": False,
        "random_box >= 30 points below gt_box": False,  # 25 below
        "center_box >= 30 points below gt_box": True,
    }
    meta = {
        "n": 420,
        "seed": 0,
        "command": "visrl-bench zoomworld baselines",
        "timings": {"total": "1 s"},
        "parameters": {"llava": 10, "qwen2_vl": 20},
        "crop_min_side": 32,
    }
    md = baselines_markdown(table, meta)
    assert "| gt_box | 99.0 [97.0, 101.0] | 85.0 [83.0, 87.0] |" in md
    assert "| gt_box >= 90% | yes | **no** |" in md and "n = 420" in md
    assert "grounding" not in md  # not measured: no row, no check

    probe = {"one_object_distinct_boxes": 97, "two_object_selection": 0.55}
    grounding = {
        "llava": {"n": 200, "mean_iou": 0.41, "iou_above_0.5": 0.37, "parse_failures": 0},
        "qwen2_vl": {"n": 200, "mean_iou": 0.0054, "iou_above_0.5": 0.005, "parse_failures": 12},
    }
    grounding["llava"].update(probe, one_object_iou=0.71)
    grounding["qwen2_vl"].update(probe, one_object_iou=0.02)
    checks = check_baselines(table, grounding)
    assert checks["llava"]["1-object grounding IoU >= 0.6"] is True
    assert checks["qwen2_vl"]["1-object grounding IoU >= 0.6"] is False
    md = baselines_markdown(table, {**meta, "grounding": grounding})
    assert "| grounding: 1-object IoU (ground_test) | 0.710 | 0.020 |" in md
    assert "| grounding: 2-object selection (chance 0.5) | 0.55 | 0.55 |" in md
    assert "| grounding: mean IoU (held-out 3-5 objects) | 0.410 | 0.005 |" in md
    assert "| grounding: IoU > 0.5 (%) | 37.0 | 0.5 |" in md
    assert "| grounding: boxes that do not parse | 0 | 12 |" in md
    assert "| 1-object grounding IoU >= 0.6 | yes | **no** |" in md and "(n = 200, 200)" in md


# The committed Qwen3-VL base grounds but does not read (gt_box 24.8%: its perception stage, continuing from
# grounding, stayed at the label entropy; docs/zoomworld.md). Strict: the test fails once a base that reads
# is committed, so the mark goes with it.
QWEN3_DOES_NOT_READ = pytest.mark.xfail(strict=True, reason="the committed Qwen3-VL base does not read yet")


@pytest.mark.parametrize("arch", ["llava", pytest.param("qwen3_vl", marks=QWEN3_DOES_NOT_READ)])
def test_committed_base_models_read_tiles_only_from_the_right_crop(arch, tmp_path):
    """The committed checkpoints (leaderboards/zoomworld_baselines.md) still behave on fresh questions."""
    from visrl_bench.eval.evaluate import EvalConfig, TaskSpec, evaluate
    from visrl_bench.models import GenerationSettings, load_model

    checkpoint = Path(__file__).resolve().parents[1] / "checkpoints" / "zoomworld" / arch
    root = make_zoomworld(tmp_path / "zw", seed=123, rl_questions=36)
    adapter = load_model(checkpoint)
    accuracy = {}
    for mode in ("gt_box", "center_box"):
        cfg = EvalConfig(
            model=str(checkpoint),
            tasks=[TaskSpec("zoomworld", str(root), "rl")],
            mode=mode,
            batch_size=36,
            generation=GenerationSettings(max_new_tokens=4),
        )
        results = evaluate(cfg, tmp_path / mode, adapter=adapter, progress=False)
        accuracy[mode] = results["results"]["zoomworld"]["accuracy"]
    # 36 fresh questions; the committed table's gt_box is about 80-100% (leaderboards/zoomworld_baselines.md)
    assert accuracy["gt_box"] >= 70 and accuracy["center_box"] <= 25, accuracy


def test_pair_questions_need_both_regions(tmp_path):
    """The two-region split: half yes, half no; each object's crop shows its own tile and nothing of the
    other's, so no single box can answer (direct and one-crop answers are at chance by construction)."""
    from visrl_bench.core.boxes import Box, crop_region
    from visrl_bench.core.registry import TASKS
    from visrl_bench.datagen.zoomworld import NONE, WorldObject, ZoomWorldConfig, crop_answer
    from visrl_bench.datagen.zoomworld_splits import generate

    cfg = ZoomWorldConfig(
        pretrain_images=2,
        ground_images=3,
        sft_questions=2,
        rl_questions=2,
        test_questions=2,
        pair_questions=60,
    )
    counts = generate(tmp_path / "zw", 0, cfg)
    assert counts["pairs"] == 60
    rows = _rows(tmp_path / "zw", "pairs")
    answers = [r["answer"] for r in rows]
    assert set(answers) == {"yes", "no"} and 20 <= answers.count("yes") <= 40
    for r in rows:
        a, b = (
            WorldObject(t["colour"], t["shape"], Box(*t["box"]), Box(*t["tile"]), t["pattern"])
            for t in r["targets"]
        )
        assert (a.pattern == b.pattern) == (r["answer"] == "yes")
        for seen, other in ((a, b), (b, a)):
            region = crop_region(seen.box, (r["width"], r["height"]), cfg.crop_min_side)
            assert crop_answer(seen, region, cfg.readable_side) == seen.pattern
            assert crop_answer(other, region, cfg.readable_side) == NONE
    task = TASKS.build("zoomworld", str(tmp_path / "zw"), "pairs")
    sample = next(iter(task.samples()))
    assert sample.category == "pair" and len(sample.gold_boxes) == 2
    assert task.prompt(sample).endswith("Answer yes or no.")
    right, wrong = sample.answer, "no" if sample.answer == "yes" else "yes"
    assert task.score(sample, f"{right}.")["scores"]["accuracy"] == 1.0
    assert task.score(sample, wrong)["scores"]["accuracy"] == 0.0
    assert task.score(sample, "none")["scores"]["accuracy"] == 0.0  # "none" is not "no"
    assert "chance 50%" in task.metric_notes["accuracy"]


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_pretraining_stopped_and_resumed_ends_with_the_same_weights(tmp_path, monkeypatch):
    """A run killed after its step-2 checkpoint and resumed ends bit for bit where an unbroken run ends:
    weights, the log's rows, the step count; provenance counts both sittings."""
    import torch
    from transformers import Trainer
    from visrl_bench.trainers.pretrain import PretrainConfig, train

    root = make_zoomworld(tmp_path / "zw")
    small = {"text_hidden": 32, "text_layers": 1, "vision_hidden": 32, "vision_layers": 1}
    common = dict(
        arch="llava",
        data=str(root),
        steps=6,
        batch_size=4,
        warmup_steps=2,
        log_every=1,
        save_every=2,
        ground_fraction=0.5,
        ground_holdout=0,
        coord_sigma=2.0,
        spec=small,
    )
    whole = train(PretrainConfig(**common, out=str(tmp_path / "whole")), progress=False)
    assert not (whole / "checkpoints").exists()  # spent once the final weights are written

    real_step = Trainer.training_step

    def crash_at_step_3(self, *args, **kwargs):
        if self.state.global_step == 3:
            raise KeyboardInterrupt("stopped")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(PretrainConfig(**common, out=str(tmp_path / "broken")), progress=False)
    assert (tmp_path / "broken" / "checkpoints" / "checkpoint-2").is_dir()
    monkeypatch.setattr(Trainer, "training_step", real_step)
    resumed = train(PretrainConfig(**common, out=str(tmp_path / "broken"), resume=True), progress=False)

    a, b = _weights(whole), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with (whole / "log.csv").open() as f, (resumed / "log.csv").open() as g:
        steps_a = [(r["step"], r["loss"]) for r in csv.DictReader(f) if r.get("loss")]
        steps_b = [(r["step"], r["loss"]) for r in csv.DictReader(g) if r.get("loss")]
    assert [s for s, _ in steps_b] == [s for s, _ in steps_a] == ["1", "2", "3", "4", "5", "6"]
    assert [float(x) for _, x in steps_b] == pytest.approx([float(x) for _, x in steps_a], rel=1e-6)
    info = json.loads((resumed / "provenance.json").read_text())
    assert info["steps"] == 6 and len(info["sittings"]) == 2
    assert info["seconds"] == pytest.approx(sum(info["sittings"]), abs=0.2)
    assert info["resumed_from"].endswith("checkpoint-2")


def test_soft_coordinate_targets_reward_a_near_miss():
    """sigma -> 0 is the one-hot cross-entropy; with sigma, a box one value off costs less than one far off,
    and a non-coordinate label keeps its one-hot loss."""
    import torch
    from visrl_bench.trainers.coordinates import SoftCoordinateLoss
    from visrl_bench.trainers.pretrain import zoomworld_spec

    from visrl_bench.models.tiny import build_tokenizer

    tokenizer = build_tokenizer("llava", zoomworld_spec("llava"))
    vocab = len(tokenizer)
    target, near, far, word = tokenizer.convert_tokens_to_ids(["0.40", "0.41", "0.90", "none"])
    labels = torch.tensor([[-100, target, word]])
    logits = torch.randn(1, 3, vocab)
    hard = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:])
    assert SoftCoordinateLoss(tokenizer, "llava", vocab, 1e-3)(logits, labels).item() == pytest.approx(
        hard.item(), rel=1e-5
    )
    soft = SoftCoordinateLoss(tokenizer, "llava", vocab, 2.0)

    def loss_when_sure_of(token):
        sure = torch.zeros(1, 2, vocab)
        sure[0, 0, token] = 10.0
        return soft(sure, labels[:, :2]).item()

    assert loss_when_sure_of(near) < loss_when_sure_of(far) - 1.0
    only_word = torch.tensor([[-100, -100, word]])
    assert soft(logits, only_word).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits[0, 1:2], only_word[0, 2:]).item(), rel=1e-5
    )


def test_ground_test_is_held_out_and_names_both_objects_of_a_two_object_scene(tmp_path):
    root = make_zoomworld(tmp_path / "zw")
    rows = _rows(root, "ground_test")
    assert {r["objects"] for r in rows} == {1, 2} | {r["objects"] for r in rows if r["objects"] >= 3}
    assert all(r["image"].startswith("images/ground_test/") for r in rows)
    two = [r for r in rows if r["objects"] == 2]
    assert len(two) == 2 * len({r["image"] for r in two})  # both objects named: selection is measurable
    trained = {r["image"] for r in _rows(root, "ground")}
    assert not trained & {r["image"] for r in rows}


def test_grounding_probe_measures_localisation_and_selection(tmp_path, monkeypatch):
    """Boxes on the named object score IoU 1 and select it; a box on the other object of a 2-object scene
    selects wrongly; one constant box is counted as one distinct box."""
    from visrl_bench.trainers import grounding

    from visrl_bench.core.boxes import Box

    root = make_zoomworld(tmp_path / "zw")
    rows = _rows(root, "ground_test")
    other = {}
    for r in rows:
        if r["objects"] == 2:
            other.setdefault(r["image"], []).append(r["bbox"])

    def fake_boxes(checkpoint, root, rows, batch_size=32, box_step=False):
        out = []
        for r in rows:
            if r["objects"] == 1:
                out.append(Box(0, 0, 10, 10))  # the box prior: the same box for every image
            elif r["objects"] == 2:  # the first-named object of each scene, whichever is asked
                out.append(Box(*other[r["image"]][0]))
            else:
                out.append(Box(*r["bbox"]))
        return out

    monkeypatch.setattr(grounding, "_ground_boxes", fake_boxes)
    report = grounding.grounding_probe(Path("unused"), root)
    assert report["1"]["distinct_boxes"] == 1 and report["1"]["mean_iou"] < 0.1
    assert report["2"]["selection"] == 0.5 and report["2"]["decided"] == report["2"]["n"]
    assert report["3-5"]["mean_iou"] == 1.0 and report["3-5"]["iou_above_0.5"] == 1.0


def test_screen_cell_trains_probes_records_and_resumes(tmp_path):
    """One screening cell through the CLI: a world from YAML, a from-scratch grounding run, a row with the
    command, steps, seconds and the probe; running it again probes the same weights without retraining."""
    world = tmp_path / "world.yaml"
    world.write_text(
        "object_size: [40, 56]\npretrain_images: 4\nground_images: 6\nground_test_images: 6\n"
        "sft_questions: 2\nrl_questions: 2\ntest_questions: 3\npair_questions: 0\n"
    )
    results = tmp_path / "results.jsonl"
    args = ["zoomworld", "screen", "--name", "cell", "--arch", "qwen2_vl", "--stage", "ground"]
    args += ["--world", str(world), "--work", str(tmp_path / "w"), "--results", str(results), "--no-progress"]
    args += ["steps=3", "batch_size=4", "coord_sigma=2", "spec.qwen_patch=4", "spec.rope_theta=10"]
    args += ["spec.text_hidden=32", "spec.text_layers=1", "spec.vision_hidden=32", "spec.vision_layers=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    row = json.loads(results.read_text().splitlines()[0])
    assert (
        row["steps"] == 3
        and row["seconds"] > 0
        and row["world"]
        == {
            "object_size": [40, 56],
            "pretrain_images": 4,
            "ground_images": 6,
            "ground_test_images": 6,
            "sft_questions": 2,
            "rl_questions": 2,
            "test_questions": 3,
            "pair_questions": 0,
        }
    )
    assert row["settings"]["spec"]["qwen_patch"] == 4 and row["settings"]["coord_sigma"] == 2.0
    assert set(row["probe"]) == {"1", "2", "3-5"} and "selection" in row["probe"]["2"]
    assert "zoomworld screen --name cell" in row["command"]
    weights = _weights(tmp_path / "w" / "runs" / "cell")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    again = json.loads(results.read_text().splitlines()[1])
    assert again["probe"] == row["probe"] and again["seconds"] == row["seconds"]
    import torch

    assert all(torch.equal(v, _weights(tmp_path / "w" / "runs" / "cell")[k]) for k, v in weights.items())


def test_the_world_stays_honest(tmp_path):
    """No test image is trained on (no pixel-identical image in any training split), and no training row
    maps the benchmark's question to a box: pretraining answers questions from given crops, grounding names
    objects by phrase; turning a question into a box is left to the SFT warm-up and RL."""
    from visrl_bench.datagen.zoomworld import QUESTION

    root = make_zoomworld(tmp_path / "zw")

    def digests(split: str) -> set[str]:
        return {hashlib.sha256((root / r["image"]).read_bytes()).hexdigest() for r in _rows(root, split)}

    test = digests("test")
    for split in ("pretrain", "ground", "sft", "rl"):
        assert not test & digests(split), split
    prefix = QUESTION.split("{")[0]
    for r in _rows(root, "pretrain"):
        assert r["kind"] in ("direct", "crop") and r["answer"] in (*PATTERNS, NONE)
    for r in _rows(root, "ground"):
        assert prefix not in r["phrase"] and "question" not in r


def test_a_checkpoint_written_over_another_loads_the_new_weights(tmp_path):
    """Overwriting a folder whose old weights were one file with new sharded weights (or the reverse) must
    not leave the old file: from_pretrained would load it first, silently the old model."""
    import torch
    from visrl_bench.trainers.pretrain import zoomworld_spec

    from visrl_bench.models import load_model
    from visrl_bench.models.tiny import build_model, save_checkpoint

    out = tmp_path / "ckpt"
    old, processor = build_model("llava", zoomworld_spec("llava"), seed=0)
    old.save_pretrained(out)  # one model.safetensors
    new, _ = build_model("llava", zoomworld_spec("llava"), seed=1)
    save_checkpoint(new, processor, out, {"arch": "llava"})  # 4 MB shards: two files and an index
    assert (out / "model.safetensors.index.json").is_file() and not (out / "model.safetensors").exists()
    loaded = load_model(out, device="cpu").model.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in new.state_dict().items() if k in loaded)
    assert not all(torch.equal(v, loaded[k]) for k, v in old.state_dict().items() if k in loaded)


def test_base_recipe_runs_its_stages_in_order_and_skips_finished_ones(tmp_path, monkeypatch):
    """`zoomworld baselines --from-scratch` trains each arch by its recipe: every stage continues from the one
    before, the last writes the base; run again, finished stages are left as they are."""
    from visrl_bench.trainers import base_recipes

    from visrl_bench.experiments.zoomworld import train_base

    root = make_zoomworld(tmp_path / "zw")
    small = {"text_hidden": 32, "text_layers": 1, "vision_hidden": 32, "vision_layers": 1}
    recipe = (
        ("grounding", {"steps": 2, "ground_fraction": 1.0, "sincos_init": True, "spec": small}),
        ("perception", {"steps": 2, "ground_fraction": 0.25, "spec": small}),
    )
    monkeypatch.setitem(base_recipes.BASE_RECIPES, "llava", recipe)
    timings = train_base("llava", root, tmp_path / "models", tmp_path / "work", batch_size=4, progress=False)
    assert list(timings) == ["pretrain llava (grounding)", "pretrain llava (perception)"]
    first = json.loads((tmp_path / "work" / "grounding" / "llava" / "provenance.json").read_text())
    last = json.loads((tmp_path / "models" / "llava" / "provenance.json").read_text())
    assert first["config"]["init"] == "" and first["config"]["sincos_init"] is True
    assert last["config"]["init"] == str(tmp_path / "work" / "grounding" / "llava")
    assert last["config"]["ground_fraction"] == 0.25

    def stamps():
        return [
            (d / "model.safetensors").stat().st_mtime_ns
            for d in (tmp_path / "work" / "grounding" / "llava", tmp_path / "models" / "llava")
        ]

    before = stamps()
    train_base("llava", root, tmp_path / "models", tmp_path / "work", batch_size=4, progress=False)
    assert stamps() == before  # both stages finished: nothing is retrained

    # a changed first stage is retrained, and so is every stage after it (it continued from the old weights);
    # `steps` replaces the last stage's only
    recipe[0][1]["steps"] = 3
    train_base("llava", root, tmp_path / "models", tmp_path / "work", batch_size=4, steps=4, progress=False)
    after = stamps()
    assert after[0] != before[0] and after[1] != before[1]
    first = json.loads((tmp_path / "work" / "grounding" / "llava" / "provenance.json").read_text())
    last = json.loads((tmp_path / "models" / "llava" / "provenance.json").read_text())
    assert first["steps"] == 3 and last["steps"] == 4 and last["resumed_from"] is None


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl", "qwen3_vl"])
def test_every_base_recipe_stage_is_a_valid_config_that_can_continue_the_one_before(arch):
    """A recipe's mistake shows here, not an hour into `--from-scratch`: every stage's settings are a valid
    PretrainConfig, the first starts from scratch, and a later stage re-initialises coordinate outputs
    (sincos_init) only after a stage that never trained them (pretrain refuses it otherwise)."""
    from visrl_bench.trainers.base_recipes import BASE_RECIPES
    from visrl_bench.trainers.pretrain import PretrainConfig

    stages = BASE_RECIPES[arch]
    assert len({name for name, _ in stages}) == len(stages)  # one work dir per stage
    configs = [PretrainConfig(arch=arch, data="d", out="o", **settings) for _, settings in stages]
    for before, cfg in itertools.pairwise(configs):
        if cfg.sincos_init:
            assert before.ground_fraction == 0, cfg


def test_qwen_mrope_sections_can_interleave_the_axes():
    """transformers gives M-RoPE section i to axis i % 3, so one-pair sections interleave time, height and
    width (Qwen3-VL's layout): width then also gets high frequencies, which the chunked default gives none."""
    import torch

    from visrl_bench.models.tiny import TinySpec, build_model

    def width_turns(section):
        spec = TinySpec(text_hidden=32, heads=1, rope_theta=1000.0, mrope_section=section)
        model, _ = build_model("qwen2_vl", spec)
        positions = torch.zeros(3, 1, 2, dtype=torch.long)
        positions[2, 0, 1] = 1  # one column to the right, same time and row
        cos, _ = model.model.language_model.rotary_emb(torch.zeros(1), positions)
        return torch.acos(cos[0, 1, :16].clamp(-1, 1)).max().item()  # the largest turn per column

    assert width_turns(()) < 0.1  # the chunked default: width's frequencies are the lowest
    assert width_turns((1,) * 16) > 0.4
    with pytest.raises(ValueError, match=r"spec\.mrope_section"):
        build_model("qwen2_vl", TinySpec(text_hidden=32, heads=1, mrope_section=(8, 8)))


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen3_vl"])
def test_qwen_merge_sets_how_many_patches_make_one_image_token(arch):
    """`spec.qwen_merge` reaches both the model's merger and the processor: a 32 x 24 view in 4-px patches
    is 8 x 6 image tokens unmerged, 4 x 3 merged 2 x 2, and the model takes what the processor gives."""
    from dataclasses import replace

    import torch
    from PIL import Image
    from visrl_bench.trainers.pretrain import zoomworld_spec

    from visrl_bench.models.tiny import build_model

    for merge, tokens in ((1, 48), (2, 12)):
        spec = replace(zoomworld_spec(arch), qwen_patch=4, qwen_merge=merge, text_layers=1, vision_layers=1)
        model, processor = build_model(arch, spec)
        assert model.config.vision_config.spatial_merge_size == merge
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        batch = processor(text=[text], images=[Image.new("RGB", (512, 384), "grey")], return_tensors="pt")
        image_token = model.config.image_token_id
        assert int((batch["input_ids"] == image_token).sum()) == tokens
        with torch.no_grad():
            model(**batch)


def test_perception_draws_balance_none_only_when_asked():
    """Without none_share a draw is the old one-randrange draw (the committed bases' data order); with it,
    "none" is that share of the crop examples and the direct examples keep theirs."""
    import random

    from visrl_bench.trainers.pretrain import PerceptionDraws

    rows = [{"kind": "crop", "answer": "none"}] * 60 + [{"kind": "crop", "answer": "red-cyan"}] * 20
    rows += [{"kind": "direct", "answer": "red-cyan"}] * 20
    rows = [{**r, "i": i} for i, r in enumerate(rows)]
    plain, old = PerceptionDraws(rows, None, random.Random(3)), random.Random(3)
    assert [plain(False)["i"] for _ in range(50)] == [rows[old.randrange(len(rows))]["i"] for _ in range(50)]
    assert all(plain(True)["answer"] != "none" for _ in range(50))

    draws = PerceptionDraws(rows, 0.4, random.Random(0))
    drawn = [draws(False) for _ in range(20000)]
    crops = [r for r in drawn if r["kind"] == "crop"]
    assert abs(len(crops) / len(drawn) - 0.8) < 0.02
    assert abs(sum(r["answer"] == "none" for r in crops) / len(crops) - 0.4) < 0.02
