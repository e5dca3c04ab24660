"""Inline SVG charts for the evaluation report (report.html): no image files, no scripts.

Each function returns an `<svg>` element as `Markup`, every piece of text in it
escaped, sized by a viewBox so it scales down on a narrow window and stays
sharp when zoomed. The colours come from `model_colours`, so a model has one
colour in every chart and in the legend.
"""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup, escape

# The baseline in a neutral slate, the models compared against it in colours that stay
# apart for the common colour-vision deficiencies (blue, orange, green, purple, pink).
BASELINE_COLOUR = "#94a3b8"
COLOURS = ["#2563eb", "#ea580c", "#059669", "#9333ea", "#db2777", "#0891b2", "#65a30d", "#b45309"]
# Segments of the pairwise bar, left to right. "inconsistent" prompts are ties too (the verdict followed the
# position when the order was swapped, adhere.eval.judge.combine), drawn apart from the consistent ties.
PAIRWISE_COLOURS = {
    "wins": "#16a34a",
    "ties": "#cbd5e1",
    "inconsistent": "#fbbf24",
    "losses": "#dc2626",
    "unparseable": "#e2e8f0",
}
WIDTH = 1040  # viewBox width: the text column of a panel at 1,366 px; scaled down on narrower windows
CHAR_PX = 6.6  # average width of a 12 px system-font character, to size the label column
MAX_LABEL_CHARS = 46  # IFEval's longest instruction id, detectable_format:number_highlighted_sections, is 45


def model_colours(models: list[str], baseline: str | None) -> dict[str, str]:
    """One colour per model, in display order; the baseline is slate."""
    colours, others = {}, iter(COLOURS * (len(models) // len(COLOURS) + 1))
    for name in models:
        colours[name] = BASELINE_COLOUR if name == baseline else next(others)
    return colours


def _svg(height: float, body: list[str], label: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height:.0f}" width="100%" style="max-width:{WIDTH}px" '
        f'role="img" aria-label="{escape(label)}">' + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, *, anchor: str = "start", cls: str = "", size: int = 12) -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{klass}>{escape(text)}</text>'


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"


def breakdown_chart(rows: dict[str, dict[str, Any]], models: list[str], colours: dict[str, str], title: str) -> Markup:
    """Horizontal bars, one group per row and one bar per model; values are fractions shown as percentages.

    `rows` is a suite's `breakdown.rows`: {"max_words(n=120)": {"base": {"value": 0.5, "n": 47}, ...}}.
    """
    bar, gap, top = 11, 12, 28
    label_w = min(MAX_LABEL_CHARS, max((len(r) for r in rows), default=8)) * CHAR_PX + 16
    x0, x1 = label_w, WIDTH - 64  # 64 px on the right for the value label of a full bar
    group = len(models) * (bar + 2) - 2 + gap
    height = top + group * len(rows) + 4
    body = []
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = x0 + tick * (x1 - x0)
        body.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 4}" class="grid"/>')
        body.append(_text(x, top - 12, f"{tick:.0%}", anchor="middle", cls="axis", size=11))
    for i, (name, row) in enumerate(rows.items()):
        y = top + i * group
        body.append(f"<g><title>{escape(name)}</title>")
        body.append(_text(x0 - 10, y + (group - gap) / 2 + 4, _short(name), anchor="end"))
        body.append("</g>")
        for j, model in enumerate(models):
            by = y + j * (bar + 2)
            cell = row.get(model) or {}
            value = cell.get("value")
            if value is None:
                body.append(_text(x0 + 4, by + bar - 1, f"{model}: n/a", cls="axis", size=10))
                continue
            w = max(0.0, min(1.0, float(value))) * (x1 - x0)
            tip = f"{model}: {value:.1%} (n={cell.get('n', '?')})"
            body.append(
                f'<rect x="{x0:.1f}" y="{by:.1f}" width="{max(w, 1.5):.1f}" height="{bar}" rx="2" '
                f'fill="{colours.get(model, COLOURS[0])}" data-model="{escape(model)}">'
                f"<title>{escape(tip)}</title></rect>"
            )
            body.append(_text(x0 + w + 5, by + bar - 1.5, f"{value:.0%}", cls="value", size=10))
    return _svg(height, body, title)


def _nice_step(span: float, target: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 25, 50, 100, ... that cuts `span` into at most `target` pieces."""
    for power in range(9):
        for mantissa in (1, 2, 2.5, 5):
            step = mantissa * 10**power
            if step == int(step) and span / step <= target:
                return int(step)
    return 10**9


def histogram(lengths: dict[str, list[int]], limit: int | None) -> tuple[int, dict[str, list[int]]]:
    """(bin width, counts per model): shared bins [k*width, (k+1)*width) from 0 past max(lengths, limit).

    About 24 bins: max_new_tokens 512 gives 25-token bins, and the responses cut at 512 share the last one.
    """
    longest = max([max(v) for v in lengths.values() if v] + [limit or 0, 1])
    width = _nice_step(longest, 24)
    bins = longest // width + 1
    counts = {m: [0] * bins for m in lengths}
    for m, values in lengths.items():
        for x in values:
            counts[m][min(max(x, 0) // width, bins - 1)] += 1
    return width, counts


def length_histogram(responses: dict[str, dict[str, Any]], models: list[str], colours: dict[str, str],
                     limit: int | None) -> Markup:
    """Overlaid histograms of response length in tokens, one outlined area per model, with the max_new_tokens line.

    `responses` is a suite's `responses`: {"base": {"lengths": [120, 98, 512], ...}, ...}.
    """
    lengths = {m: [int(x) for x in responses[m].get("lengths") or []] for m in models if m in responses}
    width, counts = histogram(lengths, limit)
    bins = len(next(iter(counts.values()), [0]))
    peak = max([max(c) for c in counts.values()] + [1])
    x0, x1, top, bottom, height = 48, WIDTH - 16, 14, 190, 224
    sx = (x1 - x0) / (bins * width)
    y_step = _nice_step(peak, 5)
    y_max = math.ceil(peak / y_step) * y_step
    sy = (bottom - top) / y_max
    body = []
    for tick in range(0, y_max + 1, y_step):
        y = bottom - tick * sy
        body.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" class="grid"/>')
        body.append(_text(x0 - 6, y + 4, str(tick), anchor="end", cls="axis", size=11))
    x_step = _nice_step(bins * width, 8)
    for tick in range(0, bins * width + 1, x_step):
        body.append(_text(x0 + tick * sx, bottom + 16, str(tick), anchor="middle", cls="axis", size=11))
    body.append(_text((x0 + x1) / 2, bottom + 32, "tokens per response", anchor="middle", cls="axis", size=11))
    for m, c in counts.items():
        points = [f"{x0:.1f},{bottom:.1f}"]
        for i, n in enumerate(c):
            y = bottom - n * sy
            points += [f"{x0 + i * width * sx:.1f},{y:.1f}", f"{x0 + (i + 1) * width * sx:.1f},{y:.1f}"]
        points.append(f"{x0 + bins * width * sx:.1f},{bottom:.1f}")
        colour = colours.get(m, COLOURS[0])
        tip = f"{m}: {len(lengths[m])} responses, {width}-token bins"
        body.append(
            f'<polygon points="{" ".join(points)}" fill="{colour}" fill-opacity="0.22" stroke="{colour}" '
            f'stroke-width="1.8" data-model="{escape(m)}"><title>{escape(tip)}</title></polygon>'
        )
    if limit:
        x = x0 + limit * sx
        body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" class="limit"/>')
        body.append(_text(x - 4, top + 10, f"max_new_tokens {limit}", anchor="end", cls="axis", size=11))
    body.append(f'<line x1="{x0}" y1="{bottom}" x2="{x1}" y2="{bottom}" class="baseline"/>')
    return _svg(height, body, "Response length in tokens per model")


def pairwise_parts(pairwise: dict[str, Any]) -> list[tuple[str, int]]:
    """The segments of the pairwise bar in order, the inconsistent prompts taken out of the ties they count in."""
    counts = {key: int(pairwise.get(key) or 0) for key in PAIRWISE_COLOURS}
    counts["ties"] = max(0, counts["ties"] - counts["inconsistent"])
    return list(counts.items())


def pairwise_bar(pairwise: dict[str, Any]) -> Markup:
    """One stacked bar of the judge's pairwise verdicts: wins, consistent ties, inconsistent ties, losses, unparseable.

    `pairwise` is {"wins", "losses", "ties", "inconsistent", "unparseable"}, the inconsistent counted within ties.
    """
    parts = pairwise_parts(pairwise)
    total = sum(n for _, n in parts) or 1
    x, body, height = 0.0, [], 34
    for key, n in parts:
        if n == 0:
            continue
        w = n / total * WIDTH
        tip = f"{key}: {n} of {total}"
        body.append(
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" fill="{PAIRWISE_COLOURS[key]}" '
            f'data-part="{key}"><title>{escape(tip)}</title></rect>'
        )
        if w > 28:  # room for a two-digit count at 12 px
            dark = key in ("ties", "unparseable", "inconsistent")
            body.append(_text(x + w / 2, 22, str(n), anchor="middle", cls="seg-dark" if dark else "seg", size=13))
        x += w
    return _svg(height, body, "Pairwise verdicts of the judge")
