"""The loader against what real checkpoints ship: llava-hf/llava-1.5-7b-hf, Qwen/Qwen2-VL-7B-Instruct and
Qwen/Qwen2.5-VL-7B-Instruct's own config, generation config, processor configs, tokenizer config and chat
template (tests/real_checkpoints/, sources in its SOURCES.md), with random weights shrunk in width and depth
only. Every expected value here is written out by hand or computed by an independent formula."""

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from visrl_bench.core.boxes import Box, format_box, parse_box
from visrl_bench.core.rundir import read_records
from visrl_bench.eval.evaluate import EvalConfig, TaskSpec, evaluate
from visrl_bench.models import ChatRequest, GenerationSettings, generate_two_turns, load_model
from visrl_bench.reasoning import ANSWER_INSTRUCTION, BOX_INSTRUCTION, answer_step_messages, box_step_messages

REAL = Path(__file__).parent / "real_checkpoints"
CHECKPOINTS = {
    "llava": "llava-1.5-7b-hf",
    "qwen2_vl": "Qwen2-VL-7B-Instruct",
    "qwen2_5_vl": "Qwen2.5-VL-7B-Instruct",
}
ARCHS = tuple(CHECKPOINTS)


@pytest.fixture(scope="module")
def real_dirs(tmp_path_factory):
    from visrl_bench.models.shrink import build_shrunk

    root = tmp_path_factory.mktemp("real")
    return {arch: build_shrunk(REAL / name, root / name) for arch, name in CHECKPOINTS.items()}


@pytest.fixture(scope="module")
def real_adapters(real_dirs):
    return {arch: load_model(path) for arch, path in real_dirs.items()}


def _same_except(real: dict, ours: dict, changed: dict) -> None:
    assert set(ours) == set(real) | set(changed)
    for key in ours:
        if isinstance(changed.get(key), dict):
            _same_except(real.get(key, {}), ours[key], changed[key])
        elif key not in changed:
            assert ours[key] == real[key], key


def _real(arch: str, name: str) -> dict:
    return json.loads((REAL / CHECKPOINTS[arch] / name).read_text())


# --- the files as they are -----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_the_loader_reads_the_real_files_as_they_are(arch, real_dirs, real_adapters):
    from visrl_bench.models.shrink import VERBATIM

    for name in VERBATIM:  # nothing we ship was rewritten on the way
        if (REAL / CHECKPOINTS[arch] / name).is_file():
            assert (real_dirs[arch] / name).read_bytes() == (REAL / CHECKPOINTS[arch] / name).read_bytes()
    from visrl_bench.models.tiny import adapter_class

    real, ours = _real(arch, "config.json"), json.loads((real_dirs[arch] / "config.json").read_text())
    _same_except(
        real, ours, adapter_class(arch).shrink_rule
    )  # widths and depths only; layout, ids, rope as published
    assert (
        "text_config" not in ours if arch != "llava" else set(ours["text_config"]) > set(real["text_config"])
    )
    adapter = real_adapters[arch]
    assert adapter.arch == arch
    assert adapter.box_convention.value == {"llava": "square_norm", "qwen2_vl": "norm1000"}.get(
        arch, "resized_pixel"
    )
    assert adapter.tokenizer.padding_side == "left"


@pytest.mark.parametrize("arch", ARCHS)
def test_special_token_ids_agree_across_the_real_files(arch, real_adapters):
    adapter, cfg, gen = real_adapters[arch], _real(arch, "config.json"), _real(arch, "generation_config.json")
    tok = adapter.tokenizer
    if arch == "llava":
        assert tok.convert_tokens_to_ids("<image>") == cfg["image_token_index"] == 32000
        assert tok.pad_token_id == cfg["pad_token_id"] == gen["pad_token_id"] == 32001
        assert (tok.bos_token_id, tok.eos_token_id) == (gen["bos_token_id"], gen["eos_token_id"]) == (1, 2)
        assert tok("hi").input_ids[0] == 1  # add_bos_token: true, as the Llama tokenizer does
        assert adapter.processor.image_token == "<image>"
    else:
        ids = {
            t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>")
        }
        assert (
            ids
            == {
                "<|image_pad|>": cfg["image_token_id"],
                "<|vision_start|>": cfg["vision_start_token_id"],
                "<|vision_end|>": cfg["vision_end_token_id"],
            }
            == {"<|image_pad|>": 151655, "<|vision_start|>": 151652, "<|vision_end|>": 151653}
        )
        assert tok.eos_token_id == cfg["eos_token_id"] == 151645 and gen["eos_token_id"] == [151645, 151643]
        assert tok.pad_token_id == gen["pad_token_id"] == 151643
        assert adapter.processor.image_token_id == cfg["image_token_id"]
        # M-RoPE as published: sections for 128-wide heads, theta 1e6
        text = adapter.model.config.get_text_config()
        assert (
            text.rope_parameters["mrope_section"] == [16, 24, 24]
            and text.rope_parameters["rope_theta"] == 1e6
        )
        assert text.hidden_size // text.num_attention_heads == 2 * sum([16, 24, 24])


# --- the real chat templates render our dialogues -------------------------------------------------------
Q, BOX, PROMPT = "What is on the sign?", "[0.10, 0.20, 0.50, 0.50]", "Answer with the option's letter."
LLAVA_ONE = f"USER: <image>\n{Q} {BOX_INSTRUCTION} ASSISTANT:"
QWEN_HEAD = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
QWEN_ONE = f"{QWEN_HEAD}{QWEN_IMAGE}{Q} {BOX_INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"
RENDERED = {
    "llava": (LLAVA_ONE, f"{LLAVA_ONE} {BOX} USER: <image>\n{ANSWER_INSTRUCTION} {PROMPT} ASSISTANT:"),
    "qwen": (
        QWEN_ONE,
        f"{QWEN_ONE}{BOX}<|im_end|>\n<|im_start|>user\n{QWEN_IMAGE}{ANSWER_INSTRUCTION} {PROMPT}<|im_end|>\n"
        "<|im_start|>assistant\n",
    ),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_the_real_chat_template_renders_the_one_and_two_image_dialogues(arch, real_adapters):
    adapter = real_adapters[arch]
    one, two = RENDERED["llava" if arch == "llava" else "qwen"]
    assert adapter.render(ChatRequest(box_step_messages(Q))) == one
    assert adapter.render(ChatRequest(answer_step_messages(Q, BOX, PROMPT))) == two
    # the answer turn repeats the box turn word for word: what lets it continue from the box turn's cache
    assert two.startswith(one)


# --- image tokens as the real processor settings imply --------------------------------------------------
def qwen_resize(h: int, w: int, factor: int = 28, min_pixels: int = 3136, max_pixels: int = 12845056):
    """Qwen2-VL's published resize rule, written from its description: sides rounded to multiples of
    patch x merge (28), the pixel count brought inside [min_pixels, max_pixels] keeping the aspect."""
    h_bar, w_bar = max(factor, round(h / factor) * factor), max(factor, round(w / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        h_bar, w_bar = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        h_bar, w_bar = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return h_bar, w_bar


SIZES = [(640, 480), (480, 640), (1000, 300), (37, 23), (5000, 3000)]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_image_token_counts_follow_the_real_processor_settings(arch, size, real_adapters):
    adapter = real_adapters[arch]
    image = Image.new("RGB", size, (90, 140, 30))
    request = ChatRequest(box_step_messages(Q), [image])
    inputs = adapter._encode([adapter.render(request)], [request])
    ids = inputs["input_ids"][0].tolist()
    if arch == "llava":
        # padded to a square, resized to the CLIP input (336) in 14-px patches, CLS dropped ("default")
        assert ids.count(32000) == (336 // 14) ** 2 == 576
        assert tuple(inputs["pixel_values"].shape) == (1, 3, 336, 336)
        assert adapter.input_size(image) is None
    else:
        h, w = qwen_resize(size[1], size[0])
        assert adapter.input_size(image) == (w, h)
        assert inputs["image_grid_thw"].tolist() == [[1, h // 14, w // 14]]
        assert ids.count(151655) == (h // 14) * (w // 14) // 4  # 2x2 patches merge into one token


# --- each architecture's box convention, on a non-square image -----------------------------------------
# a box on a 640 x 480 image, and how each architecture writes it
KNOWN = Box(64, 48, 320, 240)
WRITTEN = {
    "llava": "[0.10, 0.20, 0.50, 0.50]",  # padded to 640 x 640: y + 80
    "qwen2_vl": "[100, 100, 500, 500]",  # 0-1000 of each side
    "qwen2_5_vl": "[64, 48, 322, 238]",  # pixels of the 644 x 476 input the processor makes
}


@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_writes_and_reads_its_own_box_convention(arch, real_adapters):
    adapter = real_adapters[arch]
    image = Image.new("RGB", (640, 480))
    resized = adapter.input_size(image)
    assert format_box(KNOWN, adapter.box_convention, image.size, resized) == WRITTEN[arch]
    back = parse_box(f"The sign is at {WRITTEN[arch]}.", adapter.box_convention, image.size, resized).box
    assert back.as_list() == pytest.approx(KNOWN.as_list(), abs=1.1)
    if arch == "qwen2_vl":  # how Qwen2-VL itself writes a box, with the grounding tokens its tokenizer has
        native = "<|object_ref_start|>the sign<|object_ref_end|><|box_start|>(100,100),(500,500)<|box_end|>"
        assert parse_box(native, adapter.box_convention, image.size).box == KNOWN


# --- decoding: the checkpoint's sampling defaults do not leak into a run ---------------------------------
def test_the_checkpoints_sampling_defaults_are_set_aside_and_recorded(real_adapters):
    qwen2, qwen25 = real_adapters["qwen2_vl"], real_adapters["qwen2_5_vl"]
    assert qwen2.describe()["checkpoint_sampling_ignored"] == {
        "do_sample": True,
        "temperature": 0.01,
        "top_p": 0.001,
        "top_k": 1,
    }
    assert qwen25.describe()["checkpoint_sampling_ignored"] == {
        "do_sample": True,
        "temperature": 1e-06,
        "repetition_penalty": 1.05,
    }
    assert real_adapters["llava"].describe()["checkpoint_sampling_ignored"] == {}
    for adapter in (qwen2, qwen25):
        merged = adapter._run_generation_config  # what transformers fills unset knobs from, while generating
        assert merged.top_k is None and merged.repetition_penalty is None and merged.do_sample is None
        sampling = adapter._generation_config(GenerationSettings(temperature=0.7, num_return_sequences=4))
        knobs = (sampling.do_sample, sampling.temperature, sampling.top_p, sampling.top_k)
        assert knobs == (True, 0.7, 1.0, 50)
        greedy = adapter._generation_config(GenerationSettings())
        assert greedy.do_sample is False and greedy.repetition_penalty is None
        assert merged.eos_token_id == [151645, 151643]  # token ids are kept
        # the model keeps the checkpoint's own file: a model trained from it and saved ships it on
        assert adapter.model.generation_config.do_sample is True


# --- the whole visual-CoT path on the real files --------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_cot_eval_runs_on_the_real_files_and_reuses_the_box_turns_cache(
    arch, real_dirs, real_adapters, tmp_path
):
    from fixtures import make_vstar_folders

    adapter = real_adapters[arch]
    data = make_vstar_folders(tmp_path / "vstar")
    cfg = EvalConfig(
        model=str(real_dirs[arch]),
        tasks=[TaskSpec("vstar_bench", str(data))],
        mode="cot",
        batch_size=2,
        crop_min_side=16,
        generation=GenerationSettings(max_new_tokens=6),
    )
    before = dict(adapter.turn_two_batches)
    results = evaluate(cfg, tmp_path / "run", adapter=adapter, progress=False)
    assert results["results"]["vstar_bench"]["errors"] == 0
    assert adapter.turn_two_batches["from_turn_one_cache"] > before["from_turn_one_cache"]
    assert adapter.turn_two_batches["refilled"] == before["refilled"]
    records = read_records(tmp_path / "run" / "samples.jsonl")
    assert all(r["steps"][0]["output"] for r in records)  # the shrunk model writes decodable text

    # greedy text from the box turn's cache equals prefilling both turns afresh, with the real template
    class Plain:
        generate = adapter.generate

    images = [Image.new("RGB", (96 + 32 * i, 64), (40 * i, 90, 200)) for i in range(2)]
    first = [ChatRequest(box_step_messages(f"{Q} {i}"), [im]) for i, im in enumerate(images)]

    def follow_up(i: int, reply: str) -> ChatRequest:
        return ChatRequest(
            answer_step_messages(f"{Q} {i}", reply, PROMPT), [images[i], images[i].crop((0, 0, 56, 56))]
        )

    one, settings = GenerationSettings(max_new_tokens=6), GenerationSettings(max_new_tokens=4)
    assert generate_two_turns(adapter, first, follow_up, one, settings, 2) == generate_two_turns(
        Plain(), first, follow_up, one, settings, 2
    )
