"""Which tokens the preference collator scores: exactly the replies each DPO variant compares. Step-DPO's
box pair scores the box, its answer pair the answer; the trajectory pair (trajectory-DPO) scores the box
INSIDE the dialogue and the final answer, and nothing of the prompt, the images or the template."""

import pytest
from conftest import TINY_ARCHS
from PIL import Image

from visrl_bench.reasoning import answer_step_messages, box_step_messages
from visrl_bench.train.collate import Completion, StepPreferencePair, VisionBatcher

IMAGE, CROP = Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("RGB", (32, 32), (30, 200, 30))
Q, PROMPT = "What is the color of the square?", "Answer with one word."
CHOSEN_BOX, REJECTED_BOX = "[0.10, 0.20, 0.50, 0.60]", "[0.70, 0.10, 0.90, 0.30]"


def _pair(step: str) -> StepPreferencePair:
    if step == "box":
        m = box_step_messages(Q)
        return StepPreferencePair(
            step, Completion(m, [IMAGE], CHOSEN_BOX), Completion(m, [IMAGE], REJECTED_BOX)
        )
    if step == "answer":
        m = answer_step_messages(Q, CHOSEN_BOX, PROMPT)
        return StepPreferencePair(
            step, Completion(m, [IMAGE, CROP], "red"), Completion(m, [IMAGE, CROP], "blue")
        )
    chosen = Completion(answer_step_messages(Q, CHOSEN_BOX, PROMPT), [IMAGE, CROP], "red", (CHOSEN_BOX,))
    rejected = Completion(
        answer_step_messages(Q, REJECTED_BOX, PROMPT), [IMAGE, CROP], "blue", (REJECTED_BOX,)
    )
    return StepPreferencePair(step, chosen, rejected)


SCORED = {  # chosen row, rejected row: the text of the scored tokens, in order
    "box": ([CHOSEN_BOX], [REJECTED_BOX]),
    "answer": (["red"], ["blue"]),
    "trajectory": ([CHOSEN_BOX, "red"], [REJECTED_BOX, "blue"]),
}


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("step", SCORED)
def test_the_collator_scores_exactly_the_compared_replies(arch, step, tiny_adapters):
    adapter = tiny_adapters[arch]
    batcher = VisionBatcher.for_adapter(adapter)
    batch = batcher.preference([_pair(step)])
    tok = adapter.tokenizer
    for row, expected in zip((0, 1), SCORED[step], strict=True):
        ids, mask = batch["input_ids"][row].tolist(), batch["completion_mask"][row].tolist()
        # the scored tokens form contiguous runs: one per reply, each ending with the reply's end
        runs, current = [], []
        for token, scored in zip(ids, mask, strict=True):
            if scored:
                current.append(token)
            elif current:
                runs.append(current)
                current = []
        if current:
            runs.append(current)
        texts = [tok.decode(run, skip_special_tokens=True).strip() for run in runs]
        assert texts == expected, (step, texts)
        assert tok.decode(runs[-1]).endswith(batcher.eos)  # the final reply's end is learned too
        image_id = getattr(adapter.processor, "image_token_id", None)
        assert not any(s and t == image_id for t, s in zip(ids, mask, strict=True))  # no image token scored
