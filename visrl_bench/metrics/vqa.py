"""TextVQA accuracy exactly as the TextVQA authors' evaluator computes it (M4C / EvalAI answer processor).

LLaVA-1.5's `eval_textvqa.py` and lmms-eval's `textvqa` both use this processor, applied to the prediction
AND to all ten human answers. VQA v2's `vqaEval.py` normalises differently (it only processes answers in
some cases and its rules changed in 2021): using it for TextVQA shifts scores by points. Quirks of the
reference implementation are kept on purpose and marked below; tests pin them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_CONTRACTION_PAIRS = """
aint ain't|arent aren't|cant can't|couldve could've|couldnt couldn't|couldn'tve couldn't've|
couldnt've couldn't've|didnt didn't|doesnt doesn't|dont don't|hadnt hadn't|hadnt've hadn't've|
hadn'tve hadn't've|hasnt hasn't|havent haven't|hed he'd|hed've he'd've|he'dve he'd've|hes he's|
howd how'd|howll how'll|hows how's|Id've I'd've|I'dve I'd've|Im I'm|Ive I've|isnt isn't|itd it'd|
itd've it'd've|it'dve it'd've|itll it'll|let's let's|maam ma'am|mightnt mightn't|mightnt've mightn't've|
mightn'tve mightn't've|mightve might've|mustnt mustn't|mustve must've|neednt needn't|notve not've|
oclock o'clock|oughtnt oughtn't|ow's'at 'ow's'at|'ows'at 'ow's'at|'ow'sat 'ow's'at|shant shan't|
shed've she'd've|she'dve she'd've|she's she's|shouldve should've|shouldnt shouldn't|
shouldnt've shouldn't've|shouldn'tve shouldn't've|somebody'd somebodyd|somebodyd've somebody'd've|
somebody'dve somebody'd've|somebodyll somebody'll|somebodys somebody's|someoned someone'd|
someoned've someone'd've|someone'dve someone'd've|someonell someone'll|someones someone's|
somethingd something'd|somethingd've something'd've|something'dve something'd've|
somethingll something'll|thats that's|thered there'd|thered've there'd've|there'dve there'd've|
therere there're|theres there's|theyd they'd|theyd've they'd've|they'dve they'd've|theyll they'll|
theyre they're|theyve they've|twas 'twas|wasnt wasn't|wed've we'd've|we'dve we'd've|weve we've|
werent weren't|whatll what'll|whatre what're|whats what's|whatve what've|whens when's|whered where'd|
wheres where's|whereve where've|whod who'd|whod've who'd've|who'dve who'd've|wholl who'll|whos who's|
whove who've|whyll why'll|whyre why're|whys why's|wont won't|wouldve would've|wouldnt wouldn't|
wouldnt've wouldn't've|wouldn'tve wouldn't've|yall y'all|yall'll y'all'll|y'allll y'all'll|
yall'd've y'all'd've|y'alld've y'all'd've|y'all'dve y'all'd've|youd you'd|youd've you'd've|
you'dve you'd've|youll you'll|youre you're|youve you've
"""
CONTRACTIONS: dict[str, str] = dict(
    pair.split() for pair in _CONTRACTION_PAIRS.replace("\n", "").split("|") if pair.strip()
)
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
# The reference writes `(?!<=\d)(\.)(?!\d)`: a typo for a look-behind that is a look-ahead which can never
# fail at a ".". Net effect: every "." not followed by a digit goes, so "1." loses its period too.
_PERIOD_STRIP = re.compile(r"\.(?!\d)")
# The reference passes re.UNICODE (= 32) positionally as `count`: only the first 32 periods are stripped.
_PERIOD_STRIP_COUNT = 32


def normalize_answer(text: str) -> str:
    """EvalAI's answer processor, as used by the TextVQA evaluator."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    # Punctuation next to a space is deleted, otherwise replaced by a space. (The reference also deletes
    # when digits are separated by commas, but commas are already gone at this point, so that never fires.)
    original = text
    for p in PUNCTUATION:
        if p + " " in original or " " + p in original:
            text = text.replace(p, "")
        else:
            text = text.replace(p, " ")
    text = _PERIOD_STRIP.sub("", text, count=_PERIOD_STRIP_COUNT)
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Soft accuracy in [0, 1]: mean over the leave-one-out subsets of the human answers of
    min(1, #matches / 3), after normalising the prediction and every answer."""
    if not answers:
        raise ValueError("a VQA question needs at least one human answer")
    pred = normalize_answer(prediction)
    gts = [normalize_answer(a) for a in answers]
    matches = sum(g == pred for g in gts)
    total = 0.0
    for g in gts:
        others = matches - (g == pred)
        total += min(1.0, others / 3)
    return total / len(gts)
