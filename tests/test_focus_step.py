"""One focus step for every path: the same sample, through eval, data generation, the SFT warm-up and
pretraining, gives the same answer-turn dialogue, token for token, and the same images, pixel for pixel."""

import pytest
from conftest import TINY_ARCHS
from PIL import ImageChops

from visrl_bench.core.boxes import format_box
from visrl_bench.core.registry import TASKS
from visrl_bench.eval.evaluate import EvalConfig, run_window
from visrl_bench.models import GenerationSettings
from visrl_bench.reasoning import COT, GT_BOX, FocusStep


class Capture:
    """The tiny model's processor and box convention; answers are scripted, every request is kept."""

    def __init__(self, adapter, box_text=None):
        self.inner, self.box_text, self.requests = adapter, box_text, []
        self.arch, self.path, self.box_convention = adapter.arch, adapter.path, adapter.box_convention

    def input_size(self, image):
        return self.inner.input_size(image)

    def describe(self):
        return self.inner.describe()

    def generate(self, requests, settings, batch_size=1):
        self.requests += requests
        k = settings.num_return_sequences
        return [[self.box_text] * k if len(r.images) == 1 else ["none"] * k for r in requests]


@pytest.fixture(scope="module")
def zoomworld(tmp_path_factory):
    from fixtures import make_zoomworld

    root = make_zoomworld(tmp_path_factory.mktemp("focus") / "zw")
    task = TASKS.build("zoomworld", root, "test")
    return root, task, next(iter(task.samples()))


def _answer_turns(adapter, requests):
    """(rendered text, token ids, images) of each two-image request."""
    out = []
    for r in requests:
        if len(r.images) == 2:
            inputs = adapter._encode([adapter.render(r)], [r])
            out.append((adapter.render(r), inputs["input_ids"][0].tolist(), r.images))
    return out


def _same(a, b):
    text_a, ids_a, images_a = a
    text_b, ids_b, images_b = b
    assert text_a == text_b and ids_a == ids_b
    for x, y in zip(images_a, images_b, strict=True):
        assert x.size == y.size and ImageChops.difference(x, y).getbbox() is None


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_a_supplied_box_gives_one_dialogue_in_eval_sft_and_pretraining(arch, tiny_adapters, zoomworld):
    from visrl_bench.trainers.pretrain import build_example

    from visrl_bench.train.collate import sft_completions

    _, task, sample = zoomworld
    adapter = tiny_adapters[arch]
    gold, min_side = sample.gold_boxes[0], task.default_crop_min_side

    evaluated = Capture(adapter)
    cfg = EvalConfig(model="x", tasks=[], generation=GenerationSettings(max_new_tokens=2))
    run_window(task, [(0, sample)], evaluated, GT_BOX, cfg)
    (eval_turn,) = _answer_turns(adapter, evaluated.requests)

    _, answer = sft_completions(task, sample, adapter)
    (sft_turn,) = _answer_turns(adapter, [answer])

    image = sample.load_image()
    row = {"kind": "crop", "question": sample.question, "focus": gold.as_list(), "answer": sample.answer}
    request, _ = build_example(
        row, image, adapter.box_convention, adapter.input_size, min_side, task.prompt(sample)
    )
    (pretrain_turn,) = _answer_turns(adapter, [request])

    _same(eval_turn, sft_turn)
    _same(eval_turn, pretrain_turn)
    # the second image is the crop of the exact gold box under the task's rule
    step = FocusStep.from_box(gold, image, adapter.box_convention, adapter.input_size(image), min_side)
    assert ImageChops.difference(eval_turn[2][1], step.second).getbbox() is None


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_a_box_step_grounding_example_is_the_sft_box_turn(arch, tiny_adapters, zoomworld):
    """Pretraining's grounding asked as the box step is, prompt and target, the SFT warm-up's box turn for
    the same object; the referring phrasing stays the default."""
    from visrl_bench.trainers.pretrain import build_example

    from visrl_bench.train.collate import sft_completions

    _, task, sample = zoomworld
    adapter = tiny_adapters[arch]
    box_turn, _ = sft_completions(task, sample, adapter)
    phrase = sample.question.removeprefix("What is the tile pattern on ").removesuffix("?")
    row = {"kind": "ground", "phrase": phrase, "bbox": sample.gold_boxes[0].as_list(), "box_step": True}
    image = sample.load_image()
    args = (image, adapter.box_convention, adapter.input_size, task.default_crop_min_side, "")
    request, target = build_example(row, *args)
    assert request.messages == box_turn.messages and target == box_turn.target
    referring, same_target = build_example({**row, "box_step": False}, *args)
    assert referring.messages != request.messages and same_target == target


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_a_colour_grounding_example_gives_the_box_and_asks_the_colour(arch, tiny_adapters, zoomworld):
    """Grounding asked the other way round (`colour_share`): the object's box, in the model's own
    convention, is in the question and the phrase's colour is the target."""
    from visrl_bench.trainers.pretrain import build_example

    _, task, sample = zoomworld
    adapter = tiny_adapters[arch]
    image = sample.load_image()
    args = (image, adapter.box_convention, adapter.input_size, task.default_crop_min_side, "")
    row = {"kind": "ground", "phrase": "the olive diamond", "bbox": sample.gold_boxes[0].as_list()}
    _, box = build_example(row, *args)
    request, target = build_example({**row, "colour": True, "box_step": True}, *args)
    text = request.messages[0]["content"][-1]["text"]
    assert target == "olive" and box in text and text.startswith("What colour is the object")


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_a_model_written_box_gives_one_dialogue_in_eval_and_generate(
    arch, tiny_adapters, zoomworld, tmp_path
):
    from visrl_bench.datagen.pairs import GenerateConfig, _window

    root, task, sample = zoomworld
    adapter = tiny_adapters[arch]
    image = sample.load_image()
    text = "The region is " + format_box(
        sample.gold_boxes[0], adapter.box_convention, image.size, adapter.input_size(image)
    )

    evaluated = Capture(adapter, text)
    cfg = EvalConfig(model="x", tasks=[], generation=GenerationSettings(max_new_tokens=2))
    run_window(task, [(0, sample)], evaluated, COT, cfg)
    (eval_turn,) = _answer_turns(adapter, evaluated.requests)

    generated = Capture(adapter, text)
    gen = GenerateConfig(model="x", data=str(root), out=str(tmp_path), k=1, answer_samples=1, diversity=False)
    (tmp_path / "images").mkdir()
    (tmp_path / "crops").mkdir()
    _window(task, [(0, sample)], generated, gen, tmp_path, 0)
    (generate_turn,) = _answer_turns(adapter, generated.requests)

    _same(eval_turn, generate_turn)
