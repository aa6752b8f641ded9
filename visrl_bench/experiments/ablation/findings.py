"""The committed table: the grid's cells -> leaderboard (CSV, Markdown, PNG) and the findings in words."""

from __future__ import annotations

import json
from pathlib import Path

from visrl_bench.experiments.ablation.spec import (
    CELL_FILE,
    FINDINGS,
    GRPO_FINDINGS,
    REFERENCE_ROW,
    ROW_BY_NAME,
    AblationConfig,
)


def write_leaderboard(cfg: AblationConfig) -> tuple[list[Path], str]:
    """OUT.csv / .md / .png of the grid; also the headline tables as plain Markdown for the terminal."""
    from visrl_bench.core.registry import TASKS
    from visrl_bench.report import leaderboard as lb
    from visrl_bench.report import render

    runs = [lb.load_run(cfg.cell_dir(r.name, b, s).resolve()) for r, b, s in cfg.cells()]
    metric = TASKS.load(cfg.task).headline_metrics[0]
    reference = REFERENCE_ROW if REFERENCE_ROW in cfg.rows else None
    entries = lb.build_entries(
        runs, [(cfg.task, metric), (cfg.task, "focus_iou")], reference, rows=cfg.rows, columns=list(cfg.bases)
    )
    out = Path(cfg.leaderboard)
    render.bundle_results(entries, out.parent / f"{out.name}_runs", (Path(cfg.out) / "cells").resolve())
    intro = (
        f"Every configuration x every base LMM on `{cfg.task}` (`{cfg.eval_split}` split), produced by "
        f"`visrl-bench ablate` ({len(cfg.seeds)} seed(s): {', '.join(map(str, cfg.seeds))}; "
        f"{cfg.rounds} RL round(s); per-stage settings in `{out.name}_runs/*/*/*/cell.json`"
        + f"; compute time of the cells, summed: {_cells_seconds(cfg):.0f} s"
        + ")."
    )
    descriptions = {r: ROW_BY_NAME[r].description for r in cfg.rows}
    by_metric = [[e for e in entries if e.metric == m] for m in (metric, "focus_iou")]
    table = "\n".join(line for sub in by_metric if sub for line in [*render.metric_table(sub), ""])
    return render.write(
        entries,
        out,
        title=cfg.title,
        reference=reference,
        intro=intro,
        descriptions=descriptions,
        extra_markdown=findings_markdown(cfg, entries, runs, metric)
        + "\n".join([*gold_check_markdown(cfg, runs), *compute_markdown(cfg, runs), ""]),
    ), table


def _cells_seconds(cfg: AblationConfig) -> float:
    """Stable across reruns (a rerun that skips every cell must not rewrite the table's timing)."""
    total = 0.0
    for r, b, s in cfg.cells():
        path = cfg.cell_dir(r.name, b, s) / CELL_FILE
        total += json.loads(path.read_text()).get("seconds", 0.0) if path.is_file() else 0.0
    return total


def verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return "reproduces"
    if hi < 0:
        return "the opposite holds"
    return "not detected (CI includes 0)"


def _gain(at: dict, other: str, column: str, metric: str) -> tuple[float, float, float, float] | None:
    """(the full method minus `other`, its paired CI, p) in one column, from the entry's stored difference
    (other minus the reference row); None where the cell has no such metric."""
    e = at.get((other, column, metric))
    if e is None or e.diff is None:
        return None
    return 0.0 - e.diff, 0.0 - e.diff_ci[1], 0.0 - e.diff_ci[0], e.diff_p  # 0.0 - x: no "-0.0"


def findings_markdown(cfg: AblationConfig, entries, runs, metric: str) -> str:
    """The paper's claims, each judged by the paired CI of (full method - ablation) on the average column
    (or the single base) in the headline metric, with focus IoU's difference beside it, written out from
    the numbers; nothing here is tuned to agree."""
    from visrl_bench.report import leaderboard as lb

    column = lb.AVERAGE if len(cfg.bases) > 1 else next(iter(cfg.bases))
    at = {(e.row, e.column, e.metric): e for e in entries}
    columns = [column] + ([b for b in cfg.bases] if column == lb.AVERAGE else [])
    if REFERENCE_ROW not in cfg.rows:  # a table of other rows (e.g. the GRPO family alone)
        grpo = _grpo_lines(cfg, at, columns, metric)
        return "\n".join(["## The GRPO family", *grpo[1:]]) + "\n" if grpo else ""
    lines = ["## Which of the paper's findings reproduce here", ""]
    lines.append(
        f"Judged on {metric} ({'the average over base LMMs' if column == lb.AVERAGE else column}), "
        "by the paired "
        f'95% CI of `{REFERENCE_ROW}` minus the other row: "reproduces" only when the CI excludes 0.'
    )
    lines.append("")
    for claim, other, _direction in FINDINGS:
        if other not in cfg.rows:
            continue
        parts = [(col, g) for col in columns if (g := _gain(at, other, col, metric))]
        if not parts:
            continue
        _, (gain, lo, hi, p) = parts[0]
        per_base = "; ".join(f"{c}: {g:+.1f} [{a:+.1f}, {b:+.1f}]" for c, (g, a, b, _) in parts[1:])
        line = (
            f"- **{claim}** — {verdict(lo, hi)}: {REFERENCE_ROW} − {other} = {gain:+.1f} points "
            f"[{lo:+.1f}, {hi:+.1f}], p = {p:.3g}" + (f" ({per_base})" if per_base else "")
        )
        focus = [(c, g) for c in columns if (g := _gain(at, other, c, "focus_iou"))]
        if focus:  # where the model looks: the claim's other half (rows without boxes have no focus IoU)
            line += "; focus IoU: " + "; ".join(
                f"{c}: {g:+.1f} [{a:+.1f}, {b:+.1f}]" for c, (g, a, b, _) in focus
            )
        lines.append(line + ".")
    # the swapped-label control: must not beat SFT
    if (acc := _paired(at, "swapped_labels", "sft", column, metric)) is not None:
        d, lo, hi, p = acc
        ok = (
            "as it must, it does not beat SFT"
            if lo <= 0
            else "it BEATS SFT: part of the RL gain does not come from the reward's direction"
        )
        focus = ""
        if (f := _paired(at, "swapped_labels", "sft", column, "focus_iou")) is not None:
            focus = f"; focus IoU {f[0]:+.1f} [{f[1]:+.1f}, {f[2]:+.1f}]"
        lines.append(
            f"- **control** — swapped_labels − sft = {d:+.1f} [{lo:+.1f}, {hi:+.1f}], "
            f"p = {p:.3g}{focus}: {ok}."
        )
    lines += _grpo_lines(cfg, at, columns, metric)
    diag = []
    for r in runs:
        cell = _cell_info(r.path)
        if cell.get("row") != REFERENCE_ROW:
            continue
        for k, s in enumerate(cell.get("generate_stats", []), 1):
            g = s.get("gold_iou") or {}
            if g.get("chosen") is not None:
                mixed = s.get("mixed"), s.get("questions_seen")
                share = f", {100 * mixed[0] / mixed[1]:.0f}% of questions mixed" if all(mixed) else ""
                diag.append(
                    f"{cell['base']} seed {cell['seed']} round {k}: chosen {g['chosen']:.3f} vs rejected "
                    f"{g['rejected']:.3f} ({'signal' if s.get('focus_signal') else 'NO focus signal'}{share})"
                )
    if diag:
        lines += [
            "",
            "Why, from the generator's diagnostics (mean IoU of the box-step pairs' chosen and rejected "
            "boxes with the gold box, never used for selection): "
            + "; ".join(diag)
            + ". When chosen boxes are no "
            "closer to the target than rejected ones, the reward says nothing about where to look, and no "
            "variant of the method can learn focus from it.",
        ]
    return "\n".join(lines) + "\n"


def _paired(at: dict, a: str, b: str, column: str, metric: str) -> tuple[float, float, float, float] | None:
    """Row a − row b in `metric` on `column`, paired over the questions both answered: (difference, CI low,
    CI high, p), or None where either has no per-question scores there."""
    from visrl_bench.metrics.stats import paired_difference

    x, y = at.get((a, column, metric)), at.get((b, column, metric))
    if not (x and y and x.scores and y.scores):
        return None
    d, (lo, hi), p, _ = paired_difference(x.scores, y.scores)
    return d, lo, hi, p


def _grpo_lines(cfg: AblationConfig, at: dict, columns: list[str], metric: str) -> list[str]:
    """The GRPO family's comparisons, per base: which side wins on the headline metric and on focus IoU
    (paired CIs), and whether the permuted-reward control stays at or below SFT."""
    lines = []
    for claim, a, b in GRPO_FINDINGS:
        if a not in cfg.rows or b not in cfg.rows:
            continue
        control = a == "grpo_permuted_rewards"
        parts = []
        for col in columns:
            if (acc := _paired(at, a, b, col, metric)) is None:
                continue
            d, lo, hi, p = acc
            if control:
                said = "not above sft" if lo <= 0 else "ABOVE sft: the gain does not need the reward"
            else:
                said = f"{a} wins" if lo > 0 else f"{b} wins" if hi < 0 else "no difference detected"
            text = f"{col}: {metric} {d:+.1f} [{lo:+.1f}, {hi:+.1f}], p = {p:.3g} ({said})"
            if (f := _paired(at, a, b, col, "focus_iou")) is not None:
                won = f"{a} wins" if f[1] > 0 else f"{b} wins" if f[2] < 0 else "no difference detected"
                text += f"; focus IoU {f[0]:+.1f} [{f[1]:+.1f}, {f[2]:+.1f}]" + (
                    "" if control else f" ({won})"
                )
            parts.append(text)
        if parts:
            lines.append(f"- **{claim}** — {a} − {b}: " + "; ".join(parts) + ".")
    if lines:
        lines[:0] = [
            "",
            "The GRPO family (each row minus the other, paired over the same questions, per base):",
            "",
        ]
    return lines


def gold_check_markdown(cfg: AblationConfig, runs) -> list[str]:
    """Each cell's final model answering from the gold crop (seeds averaged): training on the box step
    shares the language model with the answer step, and must not cost it the ability to read."""
    acc: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        cell = _cell_info(r.path)
        if cell.get("gold_crop_accuracy") is not None:
            acc.setdefault((cell["row"], cell["base"]), []).append(cell["gold_crop_accuracy"])
    if not acc:
        return []
    bases = list(cfg.bases)
    lines = [
        "",
        "Gold-crop accuracy (%) of each cell's final model (`gt_box`, the same questions; mean over seeds):",
        "",
        "| configuration | " + " | ".join(bases) + " |",
        "|---|" + "---|" * len(bases),
    ]
    for row in cfg.rows:
        values = [acc.get((row, b)) for b in bases]
        if any(values):
            cells = [f"{sum(v) / len(v):.1f}" if v else "-" for v in values]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def _last_num_tokens(log_csv: Path) -> float:
    """TRL's running count of the tokens its trainer processed (`num_tokens`), at the last logged step."""
    import csv

    if not log_csv.is_file():
        return 0.0
    with log_csv.open(newline="") as f:
        values = [r["num_tokens"] for r in csv.DictReader(f) if r.get("num_tokens")]
    return float(values[-1]) if values else 0.0


def _cell_info(cell_dir: Path) -> dict:
    """A cell's cell.json ({} while the cell has not finished)."""
    return json.loads((cell_dir / CELL_FILE).read_text()) if (cell_dir / CELL_FILE).is_file() else {}


def cell_compute(cell_dir: Path, cell: dict, out: Path) -> dict[str, float | None] | None:
    """What one RL cell cost: box and answer rollouts sampled, pairs trained on, tokens its trainer processed
    (TRL's `num_tokens`, over every round and pass) and seconds spent sampling and training; None for a
    value whose record cannot be found. A DPO round's samples may come from the lane's shared store
    (generated once for several rows): their sampling seconds are counted in every row that learns from
    them. GRPO samples inside its training loop. `out`: the grid's folder (cell.json names samples in it)."""
    from visrl_bench.datagen.pairs import STATS_FILE

    work = cell_dir / "work"
    if cell.get("trainer") == "grpo" and cell.get("grpo"):
        g = cell["grpo"]
        return {
            "boxes": g.get("sampled_boxes"),
            "answers": g.get("answer_rollouts"),
            "pairs": 0,
            "tokens": _last_num_tokens(work / "grpo" / "log.csv"),
            "sampling_s": 0.0,
            "training_s": g.get("seconds"),
            "grpo": 1.0,
        }
    stats = cell.get("generate_stats") or []
    if not stats:
        return None
    cost: dict[str, float | None] = dict.fromkeys(("boxes", "answers", "pairs", "tokens", "training_s"), 0.0)
    cost |= {"sampling_s": 0.0, "grpo": 0.0}

    def add(key: str, value: float | None) -> None:
        cost[key] = None if value is None or cost[key] is None else cost[key] + value

    for k, round_stats in enumerate(stats, 1):
        train = work / f"round_{k}" / "train"
        summary = {}
        if (train / "train_summary.json").is_file():  # a round without pairs trained nothing
            summary = json.loads((train / "train_summary.json").read_text())
            add("pairs", summary.get("pairs", 0))
            add("training_s", summary.get("seconds", 0.0))
            add("tokens", _last_num_tokens(train / "log.csv"))
        # the round's pairs folder: the samples themselves (filter off) or a filtered view of them; cells
        # written before cell.json named it: the folder the round trained on
        named = round_stats.get("samples")
        pairs = out / named if named else Path(p) if (p := summary.get("config", {}).get("pairs")) else None
        sampling = pairs.parent / "sampling.json" if pairs else None
        if sampling is None or not sampling.is_file():
            add("boxes", None)
            add("answers", None)
            add("sampling_s", None)
            continue
        setting = json.loads(sampling.read_text())
        boxes = round_stats.get("questions_seen", 0) * setting.get("k", 0)
        add("boxes", boxes)
        add("answers", boxes * setting.get("answer_samples", 1))
        drawn = pairs / STATS_FILE
        if drawn.is_file() and (src := json.loads(drawn.read_text()).get("derived_from")):
            drawn = Path(src) / STATS_FILE
        add("sampling_s", json.loads(drawn.read_text()).get("seconds_this_run") if drawn.is_file() else None)
    return cost


def compute_markdown(cfg: AblationConfig, runs) -> list[str]:
    """The RL rows' cost side by side (means over seeds): what a family's result was bought with."""
    cost: dict[tuple[str, str], list[dict[str, float | None]]] = {}
    for r in runs:
        cell = _cell_info(r.path)
        if cell.get("trainer") and (c := cell_compute(r.path, cell, Path(cfg.out))) is not None:
            cost.setdefault((cell["row"], cell["base"]), []).append({**c, "cell_s": cell.get("seconds")})
    if not cost:
        return []
    lines = [
        "",
        "Compute of each RL configuration (mean over seeds; ? where a record is missing): box and answer "
        "rollouts sampled, preference pairs trained on, tokens the trainer processed (TRL's `num_tokens`, "
        "every round and pass), and seconds spent sampling (a DPO round's samples, counted in every row "
        "that learns from them; GRPO samples inside training), training, and in the whole cell (which "
        "includes shared work it happened to do first for its lane, such as samples other rows reuse):",
        "",
        "| configuration | base | boxes sampled | answers sampled | pairs | tokens trained | sampling s "
        "| training s | cell s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def mean(seeds: list[dict], key: str, form: str) -> str:
        values = [c[key] for c in seeds]
        return "?" if any(v is None for v in values) else format(sum(values) / len(values), form)

    for row in cfg.rows:
        for base in cfg.bases:
            seeds = cost.get((row, base))
            if not seeds:
                continue
            grpo = seeds[0]["grpo"]
            lines.append(
                f"| {row} | {base} | {mean(seeds, 'boxes', ',.0f')} | {mean(seeds, 'answers', ',.0f')} | "
                + ("-" if grpo else mean(seeds, "pairs", ",.0f"))
                + f" | {mean(seeds, 'tokens', ',.0f')} | "
                + ("in training" if grpo else mean(seeds, "sampling_s", ".0f"))
                + f" | {mean(seeds, 'training_s', '.0f')} | {mean(seeds, 'cell_s', '.0f')} |"
            )
    return lines
