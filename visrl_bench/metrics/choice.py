"""Multiple-choice answers: option order control and robust letter extraction."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from visrl_bench.core.boxes import scan_window
from visrl_bench.core.seeding import seeded_random

LETTERS = string.ascii_uppercase


def option_order(sample_id: str, n_options: int, seed: int | None) -> list[int]:
    """A permutation of range(n_options) determined by (seed, sample id); identity when seed is None.

    Keyed by the sample id rather than by position, so the order does not change when a run is resumed,
    sharded or filtered.
    """
    order = list(range(n_options))
    if seed is None:
        return order
    seeded_random(seed, sample_id).shuffle(order)
    return order


def rotate(order: Sequence[int], k: int) -> list[int]:
    """The k-th circular shift of an option order (for circular evaluation)."""
    k %= max(len(order), 1)
    return list(order[k:]) + list(order[:k])


def format_options(options: Sequence[str], style: str = "{letter}. {text}") -> str:
    return "\n".join(style.format(letter=LETTERS[i], text=t) for i, t in enumerate(options))


@dataclass(frozen=True)
class LetterChoice:
    letter: str | None
    method: str  # how it was found; "none" when nothing matched


_ARTICLE_NEXT = re.compile(r"\s+[a-z]")


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def extract_letter(response: object, options: Sequence[str]) -> LetterChoice:
    """Find the chosen option letter in free text.

    Handles "B", "(B)", "B.", "B) blue", "The answer is B", "Answer: (B)", and the option text alone.
    Returns letter=None rather than guessing when the text names no option or several.
    """
    if not isinstance(response, str):
        return LetterChoice(None, "none")
    valid = LETTERS[: len(options)]
    if not valid:
        return LetterChoice(None, "none")
    # whitespace runs collapsed (none of the patterns below tells a newline from spaces, and a long run of
    # them made the "answer is" pattern backtrack quadratically), and only a bounded head of a runaway
    # generation read, as the box parser does
    text, _ = scan_window(response.strip())
    cls = f"[{valid}]"

    m = re.fullmatch(rf"\(?\s*({cls})\s*[).:\]]?", text)
    if m:
        return LetterChoice(m.group(1), "bare")
    m = re.match(rf"\(?({cls})[).:\]](?:\s|$)", text)
    if m:
        return LetterChoice(m.group(1), "leading")
    m = re.search(
        rf"\b(?:answer|option|choice)\b(?:\s+(?:is|would be|should be))?\s*[:：]?\s*\(?(?-i:({cls}))\b",
        text,
        re.IGNORECASE,
    )
    if m:
        return LetterChoice(m.group(1), "phrase")
    paren = set(re.findall(rf"\(({cls})\)", text))
    if len(paren) == 1:
        return LetterChoice(paren.pop(), "parenthesised")

    norm_text = _norm(text)
    norm_opts = [_norm(o) for o in options]
    exact = [i for i, o in enumerate(norm_opts) if o and o == norm_text]
    if len(exact) == 1:
        return LetterChoice(valid[exact[0]], "option_text")
    contained = [i for i, o in enumerate(norm_opts) if o and re.search(rf"\b{re.escape(o)}\b", norm_text)]
    # an option contained in another ("red" in "dark red") does not count when the longer one matched
    contained = [i for i in contained if not any(j != i and norm_opts[i] in norm_opts[j] for j in contained)]
    if len(contained) == 1:
        return LetterChoice(valid[contained[0]], "option_text")

    # Last resort: one standalone capital letter, e.g. "I think B". "A" followed by a lower-case word is an
    # article ("A red car"), not a choice.
    # (matched at its offset, not on a slice of the rest: slicing made a long run of letters quadratic)
    standalone = {
        m.group(1)
        for m in re.finditer(rf"(?<![\w'])({cls})(?![\w'])", text)
        if not (m.group(1) == "A" and _ARTICLE_NEXT.match(text, m.end()))
    }
    if len(standalone) == 1:
        return LetterChoice(standalone.pop(), "standalone")
    return LetterChoice(None, "none")
