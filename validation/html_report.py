"""Render a CoverageReport (validation/coverage_model.py) as one self-contained HTML page.

The page reads offline and fetches nothing: the CSS is inline, the plots are inline SVG
drawn by the small helpers below, and there is no JavaScript. Inline <svg> in an HTML5
document needs no xmlns attribute (the parser puts it in the SVG namespace), so the page
holds no URL at all. Every data string goes through html.escape.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable, Sequence

import pandas as pd

from robolake.html_page import (
    CSS,
    cell_text,
    empty_note,
    escape_html,
    format_number,
    format_share,
    shorten,
    shortened_html,
    table_section,
)
from validation.contact_sheets import ContactSheet
from validation.coverage_model import MAX_VALUE_CHARS, MAX_VALUES, SHOWN_FLAGGED, CoverageReport, Histogram
from validation.quality_flags import Flags

BAR_COLOR = "#4a7fb5"
FLAG_COLOR = "#d9534f"
AXIS_COLOR = "#999"
HEAT_LOW, HEAT_HIGH = (222, 235, 247), (8, 81, 156)  # heatmap fill of one episode and of the largest cell
SHOWN_CHARS = 40  # a long value in the text is shortened to this, in full in its tooltip


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
        ("flag threshold", f"{format_share(report.threshold)} of an even share"),
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
    rule = (f"A value is under-sampled below {format_share(report.threshold)} of an even share of its "
            "field (1 / its number of values).")
    if not report.flags:
        return f'<p class="ok">Nothing under-sampled. {escape_html(rule)}</p>'
    items = "".join(f"<li>{escape_html(flag.recommendation)}</li>" for flag in report.flags)
    return f'<p>{len(report.flags)} finding(s), one per line. {escape_html(rule)}</p><ul class="flags">{items}</ul>'


def _coverage(report: CoverageReport) -> str:
    return (
        "<h3>Episodes per value</h3>"
        + _marginal_charts(report)
        + "<h3>Fields not crossed</h3>"
        + _uncrossed(report)
        + "<h3>Two fields crossed</h3>"
        + _heatmaps(report)
        + "<h3>Gaps between two fields</h3><p>Pairs of values with fewer episodes than the "
        "gap ratio of what independence of the two fields would give them.</p>"
        + table_section(report.gaps, "No gap: every pair of values is covered.", kept_in="coverage/gaps.parquet")
        + f'<p class="note">The full cube, episodes and steps for every combination of the '
        f"{len(report.fields)} crossed fields with every subtotal ({len(report.cube):,} rows; a NULL field is "
        "the subtotal over its values), is in coverage/cube.parquet, for SQL: <code>duckdb -c \"SELECT * FROM "
        "'coverage/cube.parquet'\"</code>.</p>"
    )


def _uncrossed(report: CoverageReport) -> str:
    """The crossing rule, and each field it leaves out summarized in one line."""
    rule = (f"A metadata field is crossed when it has at most {MAX_VALUES} distinct values, none longer than "
            f"{MAX_VALUE_CHARS} characters, a JSON object or list, or a file path or URL.")
    if report.uncrossed.empty:
        return f"<p>{escape_html(rule)} Every field is crossed.</p>"
    items = "".join(
        f"<li><b>{escape_html(row.field)}</b> ({escape_html(row.reason)}): "
        f"{escape_html(format_number(row.distinct_values))} distinct value(s); the most common, in "
        f"{escape_html(format_number(row.most_common_episodes))} of "
        f"{escape_html(format_number(report.totals['episodes']))} episodes: "
        f"<code>{shortened_html(cell_text(row.most_common, missing='(missing)'), SHOWN_CHARS)}</code></li>"
        for row in report.uncrossed.itertuples()
    )
    return f"<p>{escape_html(rule)} Left out, summarized instead:</p><ul>{items}</ul>"


def _heatmaps(report: CoverageReport) -> str:
    """One heatmap per pair of crossed fields that have two values or more, the field with
    more values on the rows; a legend; a note on the single-valued fields left out."""
    counts = report.marginals.groupby("field")["value"].count()
    drawn = [f for f in report.fields if counts.get(f, 0) > 1]
    single = [f for f in report.fields if f not in drawn]
    note = (f'<p class="note">Not drawn, having a single value: {escape_html(", ".join(single))}.</p>'
            if single else "")
    if len(drawn) < 2:
        return empty_note("Fewer than two fields have two values or more: nothing to cross.") + note
    charts = []
    for pair in itertools.combinations(drawn, 2):
        rows, columns = sorted(pair, key=lambda f: counts[f], reverse=True)
        charts.append(svg_heatmap(report.crossing(rows, columns), rows, columns))
    return _heatmap_legend(report.threshold) + f'<div class="charts">{"".join(charts)}</div>' + note


def _heatmap_legend(threshold: float) -> str:
    """What the heatmaps' fills and outlines mean, as colour swatches."""
    swatches = [
        (f"background:{_heat_color(0.0)}", "1 episode"),
        (f"background:{_heat_color(1.0)}", "the chart's largest cell"),
        (f"background:{_heat_color(0.0)};border:2px solid {FLAG_COLOR}",
         f"under-sampled: below {format_share(threshold)} of an even share of the chart's cells"),
        (f"background:#fff;border:2px dashed {FLAG_COLOR}", "empty: no episode"),
    ]
    keys = "".join(f'<span class="swatch" style="{style}"></span>{escape_html(text)}' for style, text in swatches)
    return f"<p>Episodes per pair of values of two fields, the count in each cell.{keys}</p>"


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
        + _meaning(report)
    )


def _meaning(report: CoverageReport) -> str:
    """Meaning clusters per task and instructions alike across tasks, or why they are off."""
    meaning = report.meaning
    status = f'<p class="meta">{escape_html(meaning.status)}</p>'
    if not meaning.enabled:
        return "<h3>By meaning</h3>" + status
    notes = "".join(f"<li>{escape_html(note)}</li>" for note in meaning.notes)
    return (
        "<h3>By meaning</h3>" + status
        + "<p>Wordings of one task grouped by meaning (sentence embeddings, all-MiniLM-L6-v2): a meaning "
        "taught with one wording (paraphrases_min 1) is worth paraphrasing; more than one meaning in a task "
        "is worth a look at its labels. The model tells objects apart better than verbs and directions.</p>"
        + table_section(meaning.per_task, "No instructions.")
        + "<h3>Instructions alike across tasks</h3><p>The same or near-identical wording names different "
        "tasks: a policy cannot tell those tasks apart from the instruction.</p>"
        + table_section(meaning.cross_task, "No instruction is shared across tasks.")
        + (f"<ul>{notes}</ul>" if notes else "")
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
        )
    )


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


def _quality(report: CoverageReport) -> str:
    """Each behaviour check's value distributions (its limit a red line), its flagged
    episodes worst first with contact sheets, then the command that drops them all."""
    quality = report.quality
    intro = ("<p>Behaviour metrics per episode (the silver episode_quality table; docs/quality.md) against the "
             "gate's thresholds (validation/gate.yaml, episode_quality; the gate reports them as warnings). "
             "Every flagged episode, with its values, is in coverage/episode_quality_flags.parquet.</p>")
    skipped = "; ".join(f"<b>{escape_html(c.name)}</b> ({escape_html(c.skipped)})" for c in quality.flags if c.skipped)
    skipped = f'<p class="note">Skipped: {skipped}.</p>' if skipped else ""
    checks = [check for check in quality.flags if not check.skipped]
    if not checks:
        return intro + (skipped or empty_note("No behaviour check ran."))
    charts = "".join(svg_histogram(quality.histograms[column], f"{column} (limit {format_number(limit)})",
                                   width=264, height=120, marker=limit)
                     for check in checks for column, limit in check.limits.items() if column in quality.histograms)
    blocks = "".join(_flagged_block(check, quality.contact_sheets, quality.view_commands.get(check.name))
                     for check in checks if len(check.flagged))
    clean = [check.name for check in checks if not len(check.flagged)]
    clean = f"<p>No episode flagged by {escape_html(', '.join(clean))}.</p>" if clean else ""
    command = (f'<h3>Drop every flagged episode</h3><pre class="command"><code>{escape_html(quality.drop_command)}'
               "</code></pre>" if quality.drop_command else '<p class="ok">No episode is flagged.</p>')
    return intro + f'<div class="charts">{charts}</div>' + blocks + clean + command + skipped


def _flagged_block(check: Flags, sheets: dict[str, ContactSheet], view: str | None) -> str:
    """One check: how many episodes it flags and the SHOWN_FLAGGED worst, each with its values and contact
    sheet, and the `robolake view` command that opens them in Rerun."""
    flagged = check.flagged
    head = (f"<p><b>{escape_html(check.name)}</b>: {format_number(len(flagged))} of "
            f"{format_number(len(check.table))} episodes flagged ({escape_html(check.description)})</p>")
    if flagged.empty:
        return head
    cards = "".join(
        f'<figure class="sheet">{_contact_sheet(sheets.get(row.episode_id), row.episode_id)}'
        f"<figcaption>{escape_html(row.episode)}</figcaption></figure>"
        for row in flagged.head(SHOWN_FLAGGED).itertuples())
    more = len(flagged) - SHOWN_FLAGGED
    rest = f'<p class="note">and {format_number(more)} more</p>' if more > 0 else ""
    view = f'<pre class="command"><code>{escape_html(view)}</code></pre>' if view else ""
    return head + f'<div class="charts">{cards}</div>' + rest + view


def _contact_sheet(sheet: ContactSheet | None, episode_id: str) -> str:
    """An inline SVG holding the sheet's JPEG as a data: image (the page fetches nothing)."""
    if sheet is None:
        return '<span class="note">no frames</span>'
    data = base64.b64encode(sheet.jpeg).decode()
    return (f'<svg width="{sheet.width}" height="{sheet.height}" viewBox="0 0 {sheet.width} {sheet.height}" '
            f'role="img" aria-label="{escape_html(episode_id)} contact sheet"><image width="{sheet.width}" '
            f'height="{sheet.height}" href="data:image/jpeg;base64,{data}"/></svg>')


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
    ("quality", "Episode quality", _quality),
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


def svg_histogram(hist: Histogram, title: str, width: int = 360, height: int = 180,
                  marker: float | None = None) -> str:
    """Vertical bars, the y maximum labelled, a few bin edges under the x axis; each bar's
    range and count show as a tooltip; `marker` (a limit) a dashed line in the flag colour
    where it falls within the bins. No bins or only zeros draw an empty frame."""
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
    if marker is not None and hist.edges[0] <= marker <= hist.edges[-1] and hist.edges[-1] > hist.edges[0]:
        x = left + (marker - hist.edges[0]) / (hist.edges[-1] - hist.edges[0]) * plot_w
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{base}" stroke="{FLAG_COLOR}" '
                     f'stroke-width="1.5" stroke-dasharray="4 2"><title>limit {escape_html(format_number(marker))}'
                     "</title></line>")
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
            f"{escape_html(shorten(label, label_width // 7))}</text>"
            f'<rect x="{label_width}" y="{y + 2}" width="{length:.1f}" height="{row_height - 4}" '
            f'fill="{fill}"/>'
            f'<text x="{label_width + length + 4:.1f}" y="{text_y:.1f}">{escape_html(note)}</text></g>'
        )
    return "".join(parts) + "</svg>"


def svg_heatmap(table: pd.DataFrame, row_field: str, column_field: str,
                cell_width: int = 44, cell_height: int = 20) -> str:
    """A grid of episode counts, one row per value of `row_field` and one column per value of
    `column_field` (a CoverageReport.crossing table), darker for more episodes; under-sampled
    cells outlined in the flag colour, empty ones dashed. Long value labels are shortened, in
    full in their tooltip; the field names label the axes."""
    rows = {value: i for i, value in enumerate(dict.fromkeys(table["value_a"]))}
    columns = {value: i for i, value in enumerate(dict.fromkeys(table["value_b"]))}
    row_chars, column_chars = 16, 12  # labels are shortened to these; 6 px a character
    row_label = min(max(map(len, rows), default=0), row_chars) * 6
    column_label = min(max(map(len, columns), default=0), column_chars) * 6 * 0.71  # at 45 degrees
    left, top, bottom = 28 + row_label, 24, round(34 + column_label)  # axis and labels; title; labels and axis
    grid_w, grid_h = len(columns) * cell_width, len(rows) * cell_height
    title = f"{row_field} × {column_field}"
    width, height = max(left + grid_w + 12, len(title) * 7 + 20), top + grid_h + bottom
    parts = [_svg_open(width, height, title)]
    peak = max(table["episodes"].max(), 1) if len(table) else 1
    for cell in table.itertuples():
        x, y = left + columns[cell.value_b] * cell_width, top + rows[cell.value_a] * cell_height
        parts.append(_heatmap_cell(cell, x, y, cell_width, cell_height, peak, f"{row_field}={cell.value_a}, "
                                   f"{column_field}={cell.value_b}"))
    for i, value in enumerate(rows):
        parts.append(_svg_label(value, left - 4, top + (i + 0.7) * cell_height, row_chars, "end"))
    base = top + grid_h
    for i, value in enumerate(columns):
        x = left + (i + 0.5) * cell_width
        rotated = f' transform="rotate(-45 {x:.1f} {base + 10})"'
        parts.append(_svg_label(value, x, base + 10, column_chars, "end", rotated))
    middle = top + grid_h / 2
    parts.append(f'<text x="12" y="{middle:.1f}" text-anchor="middle" font-weight="bold" '
                 f'transform="rotate(-90 12 {middle:.1f})">{escape_html(row_field)}</text>'
                 f'<text x="{left + grid_w / 2:.1f}" y="{height - 6}" text-anchor="middle" font-weight="bold">'
                 f"{escape_html(column_field)}</text>")
    return "".join(parts) + "</svg>"


def _heatmap_cell(cell, x: float, y: float, width: int, height: int, peak: int, pair: str) -> str:
    """One heatmap cell of a crossing table row: its fill by count (an empty one white,
    dashed), the count, and the pair with its count and share as the tooltip."""
    tip = f"{pair}: {format_number(cell.episodes)} episodes ({format_share(cell.share)})"
    if cell.episodes == 0:
        fill, ink, tip = "#fff", FLAG_COLOR, f"{tip}, empty"
        stroke = f' stroke="{FLAG_COLOR}" stroke-width="2" stroke-dasharray="4 2"'
    else:
        t = (cell.episodes - 1) / max(peak - 1, 1)
        fill, ink = _heat_color(t), "#fff" if t > 0.5 else "#222"
        stroke = f' stroke="{FLAG_COLOR}" stroke-width="2"' if cell.under_sampled else ' stroke="#fff"'
        tip += ", under-sampled" if cell.under_sampled else ""
    weight = ' font-weight="bold"' if cell.under_sampled or cell.episodes == 0 else ""
    return (
        f"<g><title>{escape_html(tip)}</title>"
        f'<rect x="{x + 1}" y="{y + 1}" width="{width - 2}" height="{height - 2}" fill="{fill}"{stroke}/>'
        f'<text x="{x + width / 2:.1f}" y="{y + height * 0.7:.1f}" text-anchor="middle" style="fill:{ink}"{weight}>'
        f"{escape_html(format_number(cell.episodes))}</text></g>"
    )


def _heat_color(t: float) -> str:
    """The heatmap colour at `t` in [0, 1], from HEAT_LOW to HEAT_HIGH."""
    return "#" + "".join(f"{round(lo + (hi - lo) * t):02x}" for lo, hi in zip(HEAT_LOW, HEAT_HIGH))


def _svg_label(text: str, x: float, y: float, chars: int, anchor: str, extra: str = "") -> str:
    """An SVG text shortened to `chars` characters, the full text as its tooltip."""
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}><title>{escape_html(text)}</title>'
            f"{escape_html(shorten(text, chars))}</text>")


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

