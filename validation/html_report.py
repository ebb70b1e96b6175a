"""Render a CoverageReport (validation/coverage_model.py) as one self-contained HTML page.

The page reads offline and fetches nothing: the CSS is inline, the plots are inline SVG
drawn by the small helpers below, and there is no JavaScript. Inline <svg> in an HTML5
document needs no xmlns attribute (the parser puts it in the SVG namespace), so the page
holds no URL at all. Every data string goes through html.escape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from robolake.html_page import CSS, cell_text, empty_note, escape_html, format_number, format_share, table_section
from validation.coverage_model import CoverageReport, Histogram

BAR_COLOR = "#4a7fb5"
FLAG_COLOR = "#d9534f"
AXIS_COLOR = "#999"


def render_html(report: CoverageReport) -> str:
    """The whole report as one HTML document, its sections in SECTIONS order."""
    title = f"Coverage of {report.dataset} {report.version}"
    nav = "".join(f'<a href="#{key}">{escape_html(heading)}</a>' for key, heading, _ in SECTIONS)
    body = "".join(
        f'<section id="{key}"><h2>{escape_html(heading)}</h2>{render(report)}</section>'
        for key, heading, render in SECTIONS
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape_html(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{escape_html(title)}</h1><p class="meta">robolake report, generated '
        f"{escape_html(report.generated_at)}</p></header><nav>{nav}</nav><main>{body}</main>"
        "</body></html>\n"
    )


# --- sections ---------------------------------------------------------------------------


def _summary(report: CoverageReport) -> str:
    about = [
        ("dataset", report.dataset),
        ("version", report.version),
        ("generated at", report.generated_at),
        ("fields crossed", ", ".join(report.fields)),
        ("flag threshold", f"{format_share(report.threshold)} of episodes"),
    ]
    facts = "".join(f"<dt>{escape_html(key)}</dt><dd>{escape_html(value)}</dd>" for key, value in about)
    totals = "".join(
        f'<div class="stat"><b>{escape_html(format_number(value))}</b><span>{escape_html(key.replace("_", " "))}</span></div>'
        for key, value in report.totals.items()
    )
    return (
        f'<dl>{facts}</dl><div class="totals">{totals}</div><h3>Splits</h3>'
        + table_section(report.splits, "No split holds any episode.")
    )


def _flags(report: CoverageReport) -> str:
    threshold = format_share(report.threshold)
    if not report.flags:
        return (
            f'<p class="ok">Nothing under-sampled: no value or combination has fewer than '
            f"{escape_html(threshold)} of the episodes.</p>"
        )
    items = "".join(
        f"<li><strong>{escape_html(flag.recommendation)}</strong><br>"
        f'<span class="detail">{escape_html(flag.field)} = {escape_html(flag.value)}: {escape_html(format_number(flag.episodes))} '
        f"of {escape_html(format_number(flag.total))} episodes ({escape_html(format_share(flag.share))}); "
        f"about {escape_html(format_number(flag.needed))} more to reach {escape_html(threshold)}</span></li>"
        for flag in report.flags
    )
    return (
        f"<p>{len(report.flags)} value(s) or combination(s) below {escape_html(threshold)} "
        f'of the episodes:</p><ul class="flags">{items}</ul>'
    )


def _coverage(report: CoverageReport) -> str:
    return (
        "<h3>Episodes per value</h3>"
        + _marginal_charts(report)
        + "<h3>Gaps between two fields</h3><p>Pairs of values with fewer episodes than the "
        "threshold share of what independence of the two fields would give them.</p>"
        + table_section(report.gaps, "No gap: every pair of values is covered.")
        + '<h3>Cube</h3><p>Episodes and steps per combination of fields; "(all)" is a '
        "subtotal over every value of that field.</p>"
        + table_section(report.cube, "The cube is empty.", missing="(all)", kept_in="coverage.parquet")
    )


def _marginal_charts(report: CoverageReport) -> str:
    """One bar chart per field (the crossed fields first), flagged values in red."""
    marginals = report.marginals
    if marginals.empty:
        return empty_note("No metadata values.")
    charts = []
    for name in dict.fromkeys([*report.fields, *marginals["field"]]):
        rows = marginals[marginals["field"] == name]
        flagged = {flag.value for flag in report.flags if flag.field == name}
        labels = [cell_text(value, missing="(missing)") for value in rows["value"]]
        annotations = [
            f"{format_number(episodes)} ({format_share(share)})" for episodes, share in zip(rows["episodes"], rows["share"])
        ]
        charts.append(svg_bar_chart(labels, rows["episodes"].tolist(), flagged, str(name), annotations))
    return (
        f'<p>Episodes per value, with its share; <span style="color:{FLAG_COLOR}">red</span> '
        f'bars are under-sampled.</p><div class="charts">{"".join(charts)}</div>'
    )


def _instructions(report: CoverageReport) -> str:
    return (
        "<h3>Per task</h3><p>paraphrase_ratio = distinct instructions / episodes.</p>"
        + table_section(report.instructions, "No instructions.")
        + "<h3>Near-duplicate pairs</h3><p>Different instructions of one task that are "
        "almost the same text.</p>"
        + table_section(report.near_duplicates, "No near-duplicate instructions.")
    )


def _lengths(report: CoverageReport) -> str:
    return svg_histogram(report.episode_lengths, "Episode length (steps)")


def _actions(report: CoverageReport) -> str:
    return (
        "<h3>Values at the normalization bound</h3><p>Share of each dimension's train values that a "
        "normalization mode maps onto +-1 (clipped); the gate fails a normalized continuous dimension "
        "above its limit. Bimodal or constant dimensions (a gripper) sit at the bound by construction.</p>"
        + table_section(report.saturation, "This version's statistics do not record saturation.")
        + _histogram_grid(
        report.action_histograms,
        "Train split, curated steps: raw values and after normalization.",
        "No action histograms.",
    ))


def _cameras(report: CoverageReport) -> str:
    return _histogram_grid(
        report.camera_histograms,
        "Per-episode mean brightness and contrast, in [0, 1].",
        "No camera histograms.",
    )


def _filtering(report: CoverageReport) -> str:
    return (
        "<h3>Filtered actions by rule</h3>"
        + table_section(report.filtered_by_rule, "No action was filtered.")
        + "<h3>Quarantined episodes by reason</h3>"
        + table_section(report.quarantined_by_reason, "No episode was quarantined.")
    )


def _notes(report: CoverageReport) -> str:
    if not report.notes:
        return empty_note("No notes.")
    return "<ul>" + "".join(f"<li>{escape_html(note)}</li>" for note in report.notes) + "</ul>"


# (id, heading, renderer) in page order
SECTIONS: list[tuple[str, str, Callable[[CoverageReport], str]]] = [
    ("summary", "Summary", _summary),
    ("flags", "Under-sampled", _flags),
    ("coverage", "Coverage", _coverage),
    ("instructions", "Instructions", _instructions),
    ("lengths", "Episode lengths", _lengths),
    ("actions", "Actions", _actions),
    ("cameras", "Cameras", _cameras),
    ("filtering", "Filtering and quarantine", _filtering),
    ("notes", "Notes", _notes),
]


def _histogram_grid(groups: dict[str, dict[str, Histogram]], intro: str, empty: str) -> str:
    """One row per name (action dimension, camera), its histograms side by side."""
    if not groups:
        return empty_note(empty)
    rows = "".join(
        f'<h3>{escape_html(name)}</h3><div class="charts">'
        + "".join(svg_histogram(hist, f"{name} {kind}") for kind, hist in hists.items())
        + "</div>"
        for name, hists in groups.items()
    )
    return f"<p>{escape_html(intro)}</p>{rows}"


# --- SVG ----------------------------------------------------------------------------------


def svg_histogram(hist: Histogram, title: str, width: int = 360, height: int = 180) -> str:
    """Vertical bars, the y maximum labelled, a few bin edges under the x axis; each bar's
    range and count show as a tooltip. No bins or only zeros draw an empty frame."""
    if hist.counts and len(hist.edges) != len(hist.counts) + 1:
        raise ValueError(f"{title}: {len(hist.edges)} edges for {len(hist.counts)} bins")
    left, right, top, bottom = 44, 12, 24, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    base = top + plot_h
    parts = [_svg_open(width, height, title), _svg_axes(left, top, plot_w, plot_h)]
    peak = max(hist.counts, default=0)
    if peak <= 0:
        parts.append(_svg_no_data(left + plot_w / 2, top + plot_h / 2))
        return "".join(parts) + "</svg>"
    step = plot_w / len(hist.counts)
    gap = min(1.0, step * 0.1)
    for i, count in enumerate(hist.counts):
        if count <= 0:
            continue
        bar_h = count / peak * plot_h
        tip = f"{format_number(hist.edges[i])} to {format_number(hist.edges[i + 1])}: {format_number(count)}"
        parts.append(
            f'<rect x="{left + i * step + gap / 2:.1f}" y="{base - bar_h:.1f}" width="{step - gap:.1f}" '
            f'height="{bar_h:.1f}" fill="{BAR_COLOR}"><title>{escape_html(tip)}</title></rect>'
        )
    parts.append(f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{escape_html(format_number(peak))}</text>')
    parts.append(f'<text x="{left - 4}" y="{base}" text-anchor="end">0</text>')
    last = len(hist.edges) - 1
    for i in _tick_indices(len(hist.edges)):
        x = left + i * step
        anchor = "start" if i == 0 else "end" if i == last else "middle"
        parts.append(
            f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" stroke="{AXIS_COLOR}"/>'
            f'<text x="{x:.1f}" y="{base + 15}" text-anchor="{anchor}">{escape_html(format_number(hist.edges[i]))}</text>'
        )
    return "".join(parts) + "</svg>"


def svg_bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    highlight: set[str],
    title: str,
    annotations: Sequence[str] | None = None,
    width: int = 480,
    row_height: int = 18,
    label_width: int = 140,
) -> str:
    """Horizontal bars, one row per label, the largest value spanning the bar area; labels
    in `highlight` drawn in the flag colour. Each bar is followed by its annotation (by
    default the value); long labels are shortened, in full in the tooltip."""
    notes = [format_number(value) for value in values] if annotations is None else list(annotations)
    top, note_width = 24, 110
    bar_area = width - label_width - note_width
    height = top + max(len(labels), 1) * row_height + 6
    parts = [_svg_open(width, height, title)]
    if not labels:
        parts.append(_svg_no_data(width / 2, top + row_height / 2))
    peak = max(values, default=0)
    for row, (label, value, note) in enumerate(zip(labels, values, notes, strict=True)):
        y = top + row * row_height
        text_y = y + row_height * 0.7
        length = value / peak * bar_area if peak > 0 else 0.0
        flagged = label in highlight
        fill = FLAG_COLOR if flagged else BAR_COLOR
        weight = ' font-weight="bold"' if flagged else ""
        parts.append(
            f"<g><title>{escape_html(label)}: {escape_html(note)}</title>"
            f'<text x="{label_width - 6}" y="{text_y:.1f}" text-anchor="end"{weight}>'
            f"{escape_html(_shorten(label, label_width // 7))}</text>"
            f'<rect x="{label_width}" y="{y + 2}" width="{length:.1f}" height="{row_height - 4}" '
            f'fill="{fill}"/>'
            f'<text x="{label_width + length + 4:.1f}" y="{text_y:.1f}">{escape_html(note)}</text></g>'
        )
    return "".join(parts) + "</svg>"


def _svg_open(width: int, height: int, title: str) -> str:
    """The <svg> start tag and the centred title."""
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape_html(title)}"><text x="{width / 2:.1f}" y="15" text-anchor="middle" '
        f'font-weight="bold">{escape_html(title)}</text>'
    )


def _svg_axes(left: float, top: float, plot_w: float, plot_h: float) -> str:
    base = top + plot_h
    return (
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="{AXIS_COLOR}"/>'
        f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="{AXIS_COLOR}"/>'
    )


def _svg_no_data(x: float, y: float) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="middle" font-style="italic">no data</text>'


def _tick_indices(n_edges: int, most: int = 5) -> list[int]:
    """At most `most` evenly spread edge indices, the first and last included."""
    if n_edges <= most:
        return list(range(n_edges))
    return sorted({round(k * (n_edges - 1) / (most - 1)) for k in range(most)})


def _shorten(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"
