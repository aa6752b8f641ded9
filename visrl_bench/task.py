"""What a benchmark plug-in is: samples streamed from the benchmark's real files, a prompt, per-sample
scoring and aggregation with confidence intervals.

A task module in tasks/ defines one class that satisfies `Task` (most subclass `BaseTask` for the shared
plumbing) and is registered in `visrl_bench.core.registry`. Tasks never parse boxes or options themselves:
they call `visrl_bench.core.boxes` and `visrl_bench.metrics.choice`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from visrl_bench.core.boxes import Box
from visrl_bench.core.errors import Bounded, Bounds, DataError, VisrlError, locate
from visrl_bench.metrics.choice import extract_letter
from visrl_bench.metrics.stats import add_metric, mean_ci_percent


def as_bool(value: Any) -> bool:
    """A task option given as a bool or as text ("true", "0", ...) from a config file or the CLI; anything
    else is refused (a typo must not silently read as false)."""
    text = str(value).strip().lower()
    if isinstance(value, bool | int | str) and text in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, bool | int | str) and text in {"0", "false", "no", "off"}:
        return False
    raise VisrlError(f"a task's true/false option takes true or false, got {value!r}")


@dataclass
class ImageSource:
    """Where a sample's image comes from, loaded only when a model needs it (never for scoring)."""

    origin: str  # file the image lives in or is referenced from, for error messages
    path: Path | None = None
    data: str | bytes | None = None  # base64 text or raw encoded bytes
    row: object | None = None  # the sample's row in `origin` (a record index), when it has no line
    loader: Callable[[], bytes] | None = None  # for images referenced from elsewhere in a streamed file
    line: int | None = None  # the sample's line in `origin` (text files: TSV, JSONL), 1-based

    @property
    def where(self) -> str:
        """The sample's place in `origin`, numbered as its other errors are: file:line or file (row N)."""
        return locate(self.origin, self.line, self.row)

    def load(self, reduce_to: tuple[int, int] | None = None):
        """The image, RGB. `reduce_to`: a JPEG may be decoded at 1/2, 1/4 or 1/8 of its size, never smaller
        than this (PIL's draft mode): a report's thumbnail of an 8K image without decoding all of it."""
        from PIL import Image, UnidentifiedImageError

        try:
            if self.path is not None:
                if not self.path.is_file():
                    raise DataError(self.path, f"image file not found (referenced by {self.where})")
                img = Image.open(self.path)
            else:
                raw = self.loader() if self.loader is not None else self.data
                if isinstance(raw, str):
                    try:
                        raw = base64.b64decode(raw, validate=True)
                    except (binascii.Error, ValueError) as exc:
                        raise DataError(
                            self.origin, f"bad base64 image: {exc}", line=self.line, row=self.row
                        ) from None
                if not raw:
                    raise DataError(self.origin, "empty image", line=self.line, row=self.row)
                img = Image.open(io.BytesIO(raw))
            if reduce_to is not None and img.format == "JPEG":
                img.draft("RGB", reduce_to)
            img.load()
            return img if img.mode == "RGB" else img.convert("RGB")  # convert would copy an RGB image
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            if self.path is not None:
                raise DataError(self.path, f"unreadable image: {exc} (referenced by {self.where})") from None
            raise DataError(self.origin, f"unreadable image: {exc}", line=self.line, row=self.row) from None


def checked(
    read: Callable[..., Any], *args: Any, path: str | Path, line: int | None = None, row: object = None
):
    """(read(*args), None), or (None, the error text naming file and line/row) when `read` finds one
    sample's data bad (a ValueError): that sample becomes an error record; the others are still run."""
    try:
        return read(*args), None
    except ValueError as exc:
        return None, str(DataError(path, str(exc), line=line, row=row))


@dataclass
class Sample:
    id: str  # the benchmark's native id (TextVQA question_id, RefCOCO sent_id, HR-Bench index, ...)
    question: str
    answer: Any  # gold: a letter, a list of human answers, a Box
    category: str | None = None
    image_size: tuple[int, int] | None = None  # (width, height) of the original image, when known
    gold_boxes: list[Box] = field(default_factory=list)
    aliases: tuple[str, ...] = ()  # other ids users may key predictions by
    meta: dict[str, Any] = field(default_factory=dict)
    image: ImageSource | None = None
    # bad gold data found while reading (file and line in the text): the sample is not run or scored but
    # becomes a counted error record, so one broken annotation neither stops a run nor gets a score
    error: str | None = None

    def load_image(self):
        if self.image is None:
            raise DataError("<sample>", f"sample {self.id} has no image")
        return self.image.load()

    def open_for(self, adapter) -> tuple[Any, tuple[int, int] | None]:
        """(image, the size `adapter` resizes it to) for a sample about to be asked; a VisrlError naming the
        file for a sample read with an error, an image that does not load, or one the model's processor
        refuses (Qwen's resize refuses an image past 200:1). Eval and `generate` both open samples here."""
        if self.error:
            raise VisrlError(self.error)
        try:
            image = self.load_image()
            return image, adapter.input_size(image)
        except VisrlError:
            raise
        except Exception as exc:
            raise VisrlError(self.input_rejected(exc)) from None

    def input_rejected(self, exc: Exception) -> str:
        """The error record's text when a processor or model refuses this sample's input."""
        where = f" (image of sample {self.id} from {self.image.where})" if self.image is not None else ""
        return f"model input rejected{where}: {type(exc).__name__}: {exc}"


@runtime_checkable
class Task(Protocol):
    name: str
    version: str
    description: str

    def samples(self) -> Iterator[Sample]: ...

    def prompt(self, sample: Sample) -> str: ...

    def score(self, sample: Sample, prediction: str | None, row: dict | None = None) -> dict: ...

    def aggregate(self, records: Sequence[dict]) -> dict: ...

    def gold_boxes(self, sample: Sample) -> list[Box]: ...

    def oracle_prediction(self, sample: Sample) -> str: ...


@dataclass
class TaskData(Bounded):
    """The task-data part of a config that trains on a task's questions (SFT, GRPO, the pair generator):
    which task, where its data lies, which split, the task's options, how many questions, the crop rule.

    A training split must be named, and be one the task offers for training (`BaseTask.train_splits`);
    its evaluation splits (`test`, `val`, the default split, a benchmark without splits) are refused
    unless `train_on_eval_split=true` says so, and that option is recorded with the rest of the config."""

    task: str = "zoomworld"
    data: str = ""
    split: str | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None  # the first N questions of `split`
    crop_min_side: int | None = None  # None: the task's own rule, as in eval
    train_on_eval_split: bool = False

    BOUNDS: ClassVar[Bounds] = {"limit": (1, None), "crop_min_side": (1, None)}
    TRAINING_SPLITS: ClassVar[tuple[str, ...]] = ("split",)  # the fields naming splits trained on

    def __post_init__(self) -> None:
        super().__post_init__()  # the next config in the MRO (at the latest Bounded: the ranges)
        check_task_options(self.task_options)
        for name in self.TRAINING_SPLITS:
            for split in _as_splits(getattr(self, name)):
                check_training_split(self.task, split, self.train_on_eval_split, f"option {name}")


# what the harness itself passes a task (`TASKS.build(name, data, split, seed=...)`): not task options
RESERVED_TASK_OPTIONS = ("data", "split", "seed")


def check_task_options(options: dict[str, Any], option: str = "task_options") -> None:
    """Refuse a task option that names what the harness sets itself, in one line (it would otherwise
    reach the task twice: a TypeError deep in a run)."""
    clash = sorted(set(options) & set(RESERVED_TASK_OPTIONS))
    if clash:
        raise VisrlError(
            f"option {option}: {', '.join(clash)} {'is' if len(clash) == 1 else 'are'} not task options "
            "(give the data, split and seed as the command's own options)"
        )


def _as_splits(value: Any) -> list[str | None]:
    return list(value) if isinstance(value, list | tuple) else [value]


def check_training_split(task: str, split: str | None, allowed: bool, option: str = "option split") -> None:
    """Refuse to train on `task`'s evaluation data unless `allowed` (see `TaskData`)."""
    from visrl_bench.core.registry import TASKS

    if task not in TASKS:
        return  # an unknown task is named with suggestions where the task is built
    entry = TASKS.entry(task)
    task_class = entry.load()
    train = tuple(getattr(task_class, "train_splits", ()))
    offered = f"{task} trains on: {', '.join(train)}" if train else f"{task} has no training split"
    if not split and not allowed:
        raise VisrlError(
            f"{option}: a training recipe reads a named split, never the task's default (its evaluation "
            f"split); {offered}"
        )
    if split and split not in train and not allowed:
        raise VisrlError(
            f"{option}={split}: not a training split of {task} ({offered}); training on evaluation data "
            "needs train_on_eval_split=true, which is recorded in the run's config"
        )


class BaseTask:
    """Shared plumbing; subclasses set the class attributes and implement samples/prompt/score."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = ""
    description: ClassVar[str] = ""
    prompt_template: ClassVar[str] = ""
    headline_metrics: ClassVar[tuple[str, ...]] = ()
    metric_notes: ClassVar[dict[str, str]] = {}  # what each metric means where names could mislead
    reward_metric: ClassVar[str | None] = (
        None  # per-sample score `generate` rewards (None: the first headline)
    )
    has_gold_boxes: ClassVar[bool] = False  # samples carry gold focus boxes (focus IoU, the gt_box mode)
    default_crop_min_side: ClassVar[int] = 224  # Visual-CoT's minimum crop; a task may know better
    splits: ClassVar[tuple[str, ...]] = ()
    default_split: ClassVar[str | None] = None
    # the splits a training recipe may read without `train_on_eval_split` (the rest are evaluation data)
    train_splits: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def info(cls, **registry_kwargs: Any) -> tuple[str, str, str]:
        """(name, version, description) without touching data, for `visrl-bench list`."""
        return cls.name, cls.version, cls.description

    def __init__(self, data: str | Path, split: str | None = None, *, seed: int = 0, **config: Any):
        """`config` holds the subclass's own options, recorded in every results.json."""
        self.data = Path(data)
        if not self.data.exists():
            raise DataError(self.data, f"{self.name} data not found")
        self.split = split or self.default_split
        if not self.splits and split is not None:
            raise DataError(self.data, f"{self.name} has no splits; drop --split {split!r}")
        if self.splits and self.split not in self.splits:
            raise DataError(
                self.data, f"{self.name} has no split {self.split!r}; choose one of {', '.join(self.splits)}"
            )
        self.seed = seed
        self.options = config

    # --- provenance -------------------------------------------------------------------------------------
    @property
    def prompt_sha256(self) -> str:
        return hashlib.sha256(self.prompt_template.encode()).hexdigest()

    def config(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "version": self.version,
            "data": str(self.data),
            "split": self.split,
            "seed": self.seed,
            **self.options,
        }

    # --- defaults ---------------------------------------------------------------------------------------
    def count(self) -> int | None:
        """Number of samples when it is cheap to know (for progress ETAs); None otherwise."""
        return None

    def gold_boxes(self, sample: Sample) -> list[Box]:
        return list(sample.gold_boxes)

    def record(
        self, sample: Sample, prediction: str | None, scores: dict[str, float], **details: Any
    ) -> dict:
        """A per-sample record: small, JSON-serialisable, enough to re-aggregate without the data."""
        return {
            "id": sample.id,
            "category": sample.category,
            "missing": prediction is None,
            "prediction": prediction,
            "scores": scores,
            **details,
        }

    def mean_metrics(
        self, records: Sequence[dict], names: Iterable[str] | None = None, by_category: bool = True
    ) -> dict:
        """Mean of per-sample scores with CIs, overall and per category (`<category>/<metric>`)."""
        names = list(names or self.headline_metrics)
        out: dict[str, Any] = {}
        for name in names:
            value, ci = mean_ci_percent([r["scores"][name] for r in records], seed=self.seed)
            add_metric(out, name, value, ci)
        if by_category:
            groups: dict[str, list[dict]] = defaultdict(list)
            for r in records:
                if r.get("category") is not None:
                    groups[r["category"]].append(r)
            for cat in sorted(groups):
                for name in names:
                    value, ci = mean_ci_percent([r["scores"][name] for r in groups[cat]], seed=self.seed)
                    add_metric(out, f"{cat}/{name}", value, ci)
                out[f"{cat}/n"] = len(groups[cat])
        return out

    def choice_record(
        self, sample: Sample, prediction: str | None, options: Sequence[str], gold_letter: str, **details: Any
    ) -> dict:
        choice = extract_letter(prediction, options) if prediction is not None else None
        letter = choice.letter if choice else None
        return self.record(
            sample,
            prediction,
            {"accuracy": float(letter == gold_letter)},
            parsed_letter=letter,
            parse_method=choice.method if choice else "missing",
            gold=gold_letter,
            **details,
        )

    def write_outputs(self, records: Sequence[dict], out_dir: Path) -> list[Path]:
        """Hook for benchmark-specific files (e.g. an EvalAI submission); none by default."""
        return []


def task_reward(task, sample: Sample, answer: str | None, row: dict | None = None) -> float:
    """The reward RL takes from a task: its `reward_metric` (else its headline metric) on one answer, as
    `score` computes it; the same number `generate` ranks trajectories by and GRPO trains on."""
    key = getattr(task, "reward_metric", None) or task.headline_metrics[0]
    return float(task.score(sample, answer, row)["scores"][key])
