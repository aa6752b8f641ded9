"""`visrl-bench show`: see where a model looked. A static report (HTML and JPEG thumbnails, no server, no
network, opens from disk) of one run or of two runs over the same questions, and training curves.

Per sample: the image with the gold box(es), the model's box(es) and the crop region drawn in the original
image's pixels from the run's own records (a box-convention bug shows as a visibly misplaced box), the
crop itself, every turn's prompt and raw output, the parsed box with its repairs, the prediction, the gold
answer and the score. Two runs are paired question by question; `flipped` keeps the questions whose
outcome differs, where a method's effect is visible. Pages hold `page_size` samples each; thumbnails are
at most THUMB pixels on their longest side. A JPEG is decoded at the smallest scale (1/2, 1/4, 1/8) the
thumbnail and its crops need (a crop is upscaled at most 2x), so an HR-Bench 8K image is decoded whole
only for a crop side under CROP_THUMB / 2 pixels; images are never embedded at full size.
"""

from __future__ import annotations

import html
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from visrl_bench.core.boxes import Box
from visrl_bench.core.errors import VisrlError
from visrl_bench.report.draw import (
    BOX,
    CROP,
    GOLD,
    JPEG_QUALITY,
    annotate,
    crop_thumbnail,
    open_reduced,
    write_contact_sheet,
)
from visrl_bench.report.runs import (
    Run,
    correct,
    focus_boxes,
    keep_samples,
    name_runs,
    original_size,
    record_box,
    sample_of,
    select,
)

PAGE_SIZE = 50


# --- the report ------------------------------------------------------------------------------------------
def write_report(
    paths: list[str | Path],
    out: str | Path,
    filter: str | None = None,
    category: str | None = None,
    limit: int | None = None,
    contact_sheet: str | Path | None = None,
    page_size: int = PAGE_SIZE,
    progress: bool = True,
) -> dict[str, Any]:
    """Write OUT/index.html and its pages; returns {samples, pages, files, bytes, seconds}."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    if not 1 <= len(paths) <= 2:
        raise VisrlError("show takes one run, or two runs over the same questions")
    check_outputs(out, contact_sheet)
    runs = [Run.load(p) for p in paths]
    name_runs(runs)
    keys = select(runs, filter, category, limit)
    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    if contact_sheet and not keys:
        raise VisrlError("no samples selected for the contact sheet")
    keep_samples(runs[0], keys)  # the selected samples only (an HR-Bench sample holds its image's text)
    for stale in [*out.glob("page-*.html"), *(out / "img").glob("*.jpg")]:  # an earlier report's
        stale.unlink()
    # images are the cost (decoding, resizing); Pillow releases the GIL for both, so threads use the cores
    sheets: list[list] = [[] for _ in keys]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        jobs = pool.map(
            lambda n: _card(runs, keys[n], n, out, sheets[n] if contact_sheet else None), range(len(keys))
        )
        cards = list(
            tqdm(jobs, total=len(keys), desc="show", unit="sample", disable=not progress, dynamic_ncols=True)
        )
    sheet = [cell for cells in sheets for cell in cells]
    pages = [cards[i : i + page_size] for i in range(0, len(cards), page_size)] or [[]]
    names = [f"page-{i + 1:04d}.html" for i in range(len(pages))]
    title = " vs ".join(html.escape(r.name) for r in runs)
    what = _selection_text(filter, category, limit, len(keys))
    for i, (name, page) in enumerate(zip(names, pages, strict=True)):
        nav = _nav(names, i)
        body = (
            f"<h1>{title}</h1><p>{what} — page {i + 1} of {len(pages)} · <a href='index.html'>summary</a></p>"
        )
        (out / name).write_text(_html(title, body + nav + "".join(page) + nav), encoding="utf-8")
    links = []
    for i, name in enumerate(names):
        first, last = i * page_size + 1, min((i + 1) * page_size, len(keys))
        span = f"samples {first}–{last}" if keys else "no samples"
        links.append(f"<li><a href='{name}'>page {i + 1}</a> ({span})</li>")
    index = f"<h1>{title}</h1>{_summary(runs, keys)}<p>{what}</p><ul>{''.join(links)}</ul>{_legend()}"
    (out / "index.html").write_text(_html(title, index), encoding="utf-8")
    if contact_sheet:
        write_contact_sheet(sheet, contact_sheet)
    files = [p for p in out.rglob("*") if p.is_file()]
    return {
        "samples": len(keys),
        "bad_records": sum("class='card bad'" in card for card in cards),
        "pages": len(pages),
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "seconds": round(time.perf_counter() - started, 2),
        "index": str(out / "index.html"),
    }


def check_outputs(out: str | Path, contact_sheet: str | Path | None) -> None:
    """--out must be a folder (or nothing yet) and --contact-sheet a file path whose folders can exist."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VisrlError(f"--out {out}: a file is there; the report is a folder (index.html, pages, img/)")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise VisrlError(f"--out {out}: {parent} is a file, not a folder")
    if contact_sheet is None:
        return
    sheet = Path(contact_sheet)
    if sheet.is_dir():
        raise VisrlError(f"--contact-sheet {sheet}: a folder; give the PNG's file name")
    for parent in sheet.parents:
        if parent.exists() and not parent.is_dir():
            raise VisrlError(f"--contact-sheet {sheet}: {parent} is a file, not a folder")


def _card(runs: list[Run], key: tuple[str, str], n: int, out: Path, sheet: list | None) -> str:
    """One sample's card; a record that cannot be drawn (a hand-edited box of 1e308 or of text, an image
    size of 0) becomes a card that says so, never a crash of the whole report."""
    try:
        return _drawn_card(runs, key, n, out, sheet)
    except (TypeError, ValueError, OverflowError, ZeroDivisionError, KeyError, IndexError) as exc:
        task_name, sample_id = key
        title = f"{html.escape(task_name)} / {html.escape(sample_id)}"
        reason = html.escape(f"{type(exc).__name__}: {exc}"[:300])
        body = f"<h2 id='s{n}'>{title}</h2><p><b>bad record</b>: {reason}</p>"
        return f"<section class='card bad'>{body}</section>"


def _drawn_card(runs: list[Run], key: tuple[str, str], n: int, out: Path, sheet: list | None) -> str:
    task_name, sample_id = key
    sample = sample_of(runs[0], key)
    columns = []
    for r, run in enumerate(runs):
        record = run.records[key]
        score = run.score(key)
        columns.append(_column(run, record, sample, score, n, r, out, sheet if r == 0 else None))
    gold = html.escape(_text(sample.answer)) if sample is not None else "?"
    question = html.escape(
        sample.question if sample is not None else runs[0].records[key].get("question", "")
    )
    head = (
        f"<h2 id='s{n}'>{html.escape(task_name)} / {html.escape(sample_id)}</h2>"
        f"<p class='q'>{question}</p><p>gold answer: <b>{gold}</b>"
        + (
            f" · category {html.escape(str(runs[0].records[key].get('category')))}"
            if runs[0].records[key].get("category")
            else ""
        )
        + "</p>"
    )
    return f"<section class='card'>{head}<div class='cols'>{''.join(columns)}</div></section>"


def _column(run: Run, record: dict, sample, score, n: int, r: int, out: Path, sheet: list | None) -> str:
    steps = focus_boxes(record)
    boxes = [record_box(b.get("box")) for b in steps]
    crops = [record_box(b.get("crop")) for b in steps]
    gold = list(sample.gold_boxes) if sample is not None else []
    images = ""
    if sample is not None and not sample.error:
        try:
            size = original_size(record, sample)
            image, scale = open_reduced(sample, size, [c for c in crops if c is not None])
            thumb = annotate(image, scale, gold, boxes, crops)
            name = f"img/{n:05d}-{r}.jpg"
            thumb.save(out / name, quality=JPEG_QUALITY, subsampling=0)  # full-resolution colour: thin lines
            images = (
                f"<img src='{name}' alt='image with boxes' width='{thumb.width}' height='{thumb.height}'>"
            )
            for t, region in enumerate(crops):
                if region is not None and size and not _inside(region, size):
                    images += (
                        f"<p class='err'>crop {t + 1} lies outside the image: {_e(region.as_list())}</p>"
                    )
                elif region is not None:
                    crop = crop_thumbnail(image, scale, region)
                    cname = f"img/{n:05d}-{r}-crop{t + 1}.jpg"
                    crop.save(out / cname, quality=JPEG_QUALITY)
                    images += f"<img class='crop' src='{cname}' alt='crop {t + 1}'>"
            if sheet is not None:
                sheet.append((thumb, f"{sample.id}", correct(score)))
        except (VisrlError, OSError) as exc:  # the page says so; the report goes on
            images = f"<p class='err'>image not shown: {html.escape(str(exc))}</p>"
    verdict = {True: "right", False: "wrong", None: "no score"}[correct(score)]
    turns = "".join(_turn(step) for step in record.get("steps", []))
    parsed = "".join(_parsed(t, b) for t, b in enumerate(steps, start=1))
    error = f"<p class='err'>error: {_e(record['error'])}</p>" if record.get("error") else ""
    head = f"{_e(run.name)} — <span class='{verdict.replace(' ', '-')}'>{verdict}</span> (score {_e(score)})"
    prediction = f"<p>prediction: <b>{_e(record.get('prediction'))}</b></p>"
    body = f"{images}{error}<ul>{parsed}</ul>{prediction}<table>{turns}</table>"
    return f"<div class='col'><h3>{head}</h3>{body}</div>"


def _inside(region: Box, size: tuple[int, int]) -> bool:
    """Whether the region overlaps the image at all (a hand-edited record may put it anywhere)."""
    return region.x1 < size[0] and region.y1 < size[1] and region.x2 > 0 and region.y2 > 0


def _e(value: Any) -> str:
    """Record text as HTML: escaped, whatever the model wrote."""
    return html.escape(_text(value))


def _turn(step: dict) -> str:
    prompt = f"<div class='prompt'>{_e(step.get('prompt'))}</div>"
    return f"<tr><th>{_e(step.get('step'))}</th><td>{prompt}<pre>{_e(step.get('output'))}</pre></td></tr>"


def _parsed(turn: int, box: dict) -> str:
    repairs = ", ".join(box.get("repairs") or []) or "none"
    text = f"box {turn}: {_e(box.get('box')) or '(none)'} · repairs {_e(repairs)}"
    if box.get("parse_error"):
        text += f" · not parsed: {_e(box['parse_error'])}"
    if isinstance(box.get("iou"), int | float):
        text += f" · IoU with gold {box['iou']:.2f}"
    return f"<li>{text}</li>"


def _text(value: Any) -> str:
    if isinstance(value, Box):
        return "[" + ", ".join(f"{v:.1f}" for v in value.as_list()) + "]"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return "" if value is None else str(value)


def _summary(runs: list[Run], keys: list) -> str:
    from visrl_bench.metrics.stats import paired_difference

    rows = "".join(
        f"<tr><td>{html.escape(run.name)}</td><td>{html.escape(t)}</td><td>{html.escape(m)}</td><td>{v:.2f}</td>"
        f"<td>{'' if not ci else f'[{ci[0]:.2f}, {ci[1]:.2f}]'}</td></tr>"
        for run in runs
        for t, m, v, ci in run.headline()
    )
    text = (
        f"<table><tr><th>run</th><th>task</th><th>metric</th><th>value</th><th>95% CI</th></tr>{rows}</table>"
    )
    if len(runs) == 2:
        a, b = runs
        both = [k for k in a.records if k in b.records and a.score(k) is not None and b.score(k) is not None]
        if both:
            mean, (lo, hi), p, count = paired_difference(
                {f"{k[0]}/{k[1]}": b.score(k) for k in both}, {f"{k[0]}/{k[1]}": a.score(k) for k in both}
            )
            flips = {(x, y): 0 for x in (True, False) for y in (True, False)}
            for k in both:
                flips[(correct(a.score(k)), correct(b.score(k)))] += 1
            text += (
                f"<p>{html.escape(b.name)} − {html.escape(a.name)}, paired over {count} questions: "
                f"{mean:+.2f} points [{lo:+.2f}, {hi:+.2f}] (sign-flip p = {p:.3g}); "
                f"wrong → right {flips[(False, True)]}, right → wrong {flips[(True, False)]}</p>"
            )
    return text


def _selection_text(filter, category, limit, n) -> str:
    parts = [f"{n} samples"]
    if filter:
        parts.append(f"filter {filter}")
    if category:
        parts.append(f"category {category}")
    if limit is not None:
        parts.append(f"at most {limit}")
    return html.escape(", ".join(parts))


def _nav(names: list[str], i: int) -> str:
    prev = f"<a href='{names[i - 1]}'>← previous</a>" if i > 0 else ""
    nxt = f"<a href='{names[i + 1]}'>next →</a>" if i + 1 < len(names) else ""
    return f"<nav>{prev} {nxt}</nav>"


def _legend() -> str:
    def swatch(colour, label):
        return f"<span style='border:3px solid rgb{colour};padding:0 6px;margin-right:8px'>{label}</span>"

    labels = ((GOLD, "gold box"), (BOX, "model box (numbered per turn)"), (CROP, "crop region"))
    return "<p>" + "".join(swatch(colour, label) for colour, label in labels) + "</p>"


STYLE = """
body{font-family:sans-serif;margin:1.5em;max-width:1400px}
.card{border-top:1px solid #ccc;padding:.5em 0}.cols{display:flex;gap:2em;flex-wrap:wrap}
.col{flex:1;min-width:420px}img{margin:2px;border:1px solid #ddd;vertical-align:top}
pre{white-space:pre-wrap;background:#f6f6f6;padding:4px;margin:2px 0}.prompt{color:#555;font-size:90%}
th{text-align:left;vertical-align:top;padding-right:8px}.right{color:#080}.wrong{color:#b00}
.err{color:#b00}table{border-collapse:collapse}td{padding:2px 6px}nav{margin:1em 0}
"""


def _html(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>{STYLE}</style></head><body>{body}</body></html>\n"
    )
