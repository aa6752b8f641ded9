"""Model adapters: a local LMM checkpoint behind one small interface.

An adapter turns chat requests (messages with image placeholders + the images) into generated text, in
batches, and declares the box convention its model writes. Heavy imports (torch, transformers) happen only
inside `visrl_bench.models.hf` (one module per architecture), when a model is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from visrl_bench.core.boxes import BoxConvention
from visrl_bench.core.errors import Bounded, Bounds, DataError


@dataclass
class GenerationSettings(Bounded):
    """Decoding settings; greedy unless temperature > 0."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    num_return_sequences: int = 1
    seed: int = 0

    BOUNDS: ClassVar[Bounds] = {
        "max_new_tokens": (1, None),
        "temperature": (0, None),
        "top_p": (1e-9, 1),
        "top_k": (0, None),
        "num_return_sequences": (1, None),
        "seed": (0, None),
    }

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ChatRequest:
    """One generation: HF-style chat messages whose content items {"type": "image"} are filled, in order,
    by `images`."""

    messages: list[dict]
    images: list[Any] = field(default_factory=list)


@runtime_checkable
class LMMAdapter(Protocol):
    arch: str
    path: str
    box_convention: BoxConvention

    def generate(
        self, requests: list[ChatRequest], settings: GenerationSettings, batch_size: int = 1
    ) -> list[list[str]]:
        """K = settings.num_return_sequences texts per request, in request order."""
        ...

    def input_size(self, image: Any) -> tuple[int, int] | None:
        """(width, height) of the image as the model sees it, for the `resized_pixel` convention."""
        ...

    def describe(self) -> dict[str, Any]: ...


# (request index, the turn just answered (1-based), its reply) -> the next turn's request, or None: done
FollowUp = Callable[[int, int, str], "ChatRequest | None"]


def generate_turns(
    adapter: LMMAdapter,
    first: list[ChatRequest],
    follow_up: FollowUp,
    settings: Sequence[GenerationSettings],
    batch_size: int = 1,
    max_turns: int = 2,
) -> list[list[list[str]]]:
    """A dialogue per request, turn by turn: the model answers `first[i]`, then `follow_up(i, turn, reply)`
    builds the next turn (it repeats the dialogue so far and adds the reply, a new image, an instruction)
    until it returns None or `max_turns` turns were generated. Turn t decodes with `settings[t - 1]` (the
    last entry for the turns after). Returns, per request, the outputs of each of its turns: one text a turn,
    except that the last possible turn (`max_turns`) may sample K. Visual CoT is two turns (box, answer);
    multi-turn zoom asks for one more box per turn.

    An adapter may do this faster itself (`HFAdapter` continues each turn from the previous turn's KV
    cache); the turns are then the same, but come in batches. Otherwise every turn is prefilled afresh.
    """
    for turn, s in enumerate(settings[: max_turns - 1], start=1):
        if s.num_return_sequences != 1:
            raise ValueError(
                f"turn {turn} of {max_turns} may be followed by another: it must decode 1 sample"
            )
    own = getattr(adapter, "generate_turns", None)
    if own is not None:
        return own(first, follow_up, settings, batch_size, max_turns)
    turns: list[list[list[str]]] = [[] for _ in first]
    requests, live = list(first), list(range(len(first)))
    for turn in range(1, max_turns + 1):
        outputs = adapter.generate([requests[i] for i in live], _turn_settings(settings, turn), batch_size)
        for i, outs in zip(live, outputs, strict=True):
            turns[i].append(outs)
        if turn == max_turns:
            break
        nxt = {i: follow_up(i, turn, turns[i][-1][0]) for i in live}
        live = [i for i in live if nxt[i] is not None]
        for i in live:
            requests[i] = nxt[i]
    return turns


def _turn_settings(settings: Sequence[GenerationSettings], turn: int) -> GenerationSettings:
    return settings[min(turn, len(settings)) - 1]


def generate_two_turns(
    adapter: LMMAdapter,
    first: list[ChatRequest],
    follow_up: Callable[[int, str], ChatRequest],
    first_settings: GenerationSettings,
    settings: GenerationSettings,
    batch_size: int = 1,
) -> tuple[list[str], list[list[str]]]:
    """Visual CoT's two turns: one reply per `first` request, then K replies to the turn 2 that
    `follow_up(index, reply)` builds (`generate_turns` with two turns)."""
    turns = generate_turns(
        adapter, first, lambda i, turn, reply: follow_up(i, reply), [first_settings, settings], batch_size, 2
    )
    return [t[0][0] for t in turns], [t[1] for t in turns]


def read_arch(path: str | Path) -> str:
    """The adapter name for a checkpoint dir, read from its config.json."""
    p = Path(path)
    config = p / "config.json"
    if not p.is_dir():
        raise DataError(p, "model checkpoint directory not found")
    if not config.is_file():
        raise DataError(p, "no config.json: not a transformers checkpoint directory")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except json.JSONDecodeError as exc:
        raise DataError(config, f"malformed JSON: {exc.msg}", line=exc.lineno) from None
    from visrl_bench.core.registry import MODELS

    # an adapter is registered under its checkpoints' config.json `model_type`
    if model_type not in MODELS.names():
        raise DataError(
            config,
            f"unsupported architecture model_type={model_type!r}; supported: "
            f"{', '.join(MODELS.names())} (or pass --arch)",
        )
    return model_type


def load_model(path: str | Path, arch: str | None = None, **kwargs: Any) -> LMMAdapter:
    """Load a local checkpoint with the adapter for its architecture (`arch` overrides config.json)."""
    from visrl_bench.core.registry import MODELS

    name = arch or read_arch(path)
    if not Path(path, "config.json").is_file():
        read_arch(path)  # raises the clear error
    return MODELS.build(name, path, **kwargs)
