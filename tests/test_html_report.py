"""validation/html_report.py on hand-built CoverageReports (no lake, no DuckDB): section
order, flags, one SVG per plot, nothing fetched, escaping, well-formed markup, empty states."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from html.parser import HTMLParser

import pandas as pd
import pytest

from robolake.coverage_rule import UnderSampled
from robolake.html_page import dataframe_table
from validation.coverage_model import CoverageReport, Histogram
from validation.html_report import render_html, svg_bar_chart, svg_histogram

SECTION_IDS = [
    "summary",
    "flags",
    "coverage",
    "instructions",
    "lengths",
    "actions",
    "cameras",
    "filtering",
    "notes",
]
NASTY = '<b>&"'  # must never reach the page unescaped
VOID_TAGS = {"meta", "br", "hr", "img", "input", "col", "wbr", "area", "base", "source"}


def histogram(counts: list[int], lo: float = 0.0, hi: float = 1.0) -> Histogram:
    step = (hi - lo) / max(len(counts), 1)
    return Histogram(edges=[lo + i * step for i in range(len(counts) + 1)], counts=counts)


def make_report() -> CoverageReport:
    """Two fields, a flagged lighting value holding NASTY, 7 plots (one empty histogram,
    one single-bin), nothing filtered or quarantined."""
    side = f"side {NASTY}"
    flag = UnderSampled(
        field="lighting",
        value=side,
        episodes=2,
        total=12,
        share=2 / 12,
        needed=3,
        recommendation=f"lighting={side}: 2 of 12 episodes (16.7%); collect ~3 more",
    )
    cube = pd.DataFrame(
        {
            "task": ["pick", "pick", "push", None, None],
            "lighting": ["overhead", side, "overhead", "overhead", None],
            "episodes": [6, 2, 4, 10, 12],
            "steps": [300, 90, 210, 510, 600],
        }
    )
    marginals = pd.DataFrame(
        {
            "field": ["task", "task", "lighting", "lighting"],
            "value": ["pick", "push", "overhead", side],
            "episodes": [8, 4, 10, 2],
            "steps": [390, 210, 510, 90],
            "share": [8 / 12, 4 / 12, 10 / 12, 2 / 12],
        }
    )
    gaps = pd.DataFrame(
        {
            "field_a": ["task"],
            "value_a": ["push"],
            "field_b": ["lighting"],
            "value_b": [side],
            "episodes": [0],
            "expected": [0.6667],
        }
    )
    return CoverageReport(
        dataset="tabletop",
        version="1.0.0",
        generated_at="2025-01-01T00:00:00Z",
        threshold=0.2,
        fields=["task", "lighting"],
        totals={
            "episodes": 12,
            "steps": 600,
            "tasks": 2,
            "instructions": 3,
            "quarantined": 0,
            "filtered_items": 0,
        },
        cube=cube,
        marginals=marginals,
        gaps=gaps,
        flags=[flag],
        instructions=pd.DataFrame(
            {
                "task": ["pick", "push"],
                "episodes": [8, 4],
                "distinct_instructions": [2, 1],
                "paraphrase_ratio": [0.25, 0.25],
                "near_duplicate_pairs": [1, 0],
            }
        ),
        near_duplicates=pd.DataFrame(
            {
                "task": ["pick"],
                "instruction_a": ["pick up the cube"],
                "instruction_b": [f"pick up the cube {NASTY}"],
                "similarity": [0.93],
            }
        ),
        episode_lengths=histogram([1, 4, 5, 2], 20, 80),
        action_histograms={
            "x": {"raw": histogram([3, 0, 7], -0.5, 0.5), "normalized": histogram([0, 0, 0], -1, 1)},
        },
        camera_histograms={
            f"front {NASTY}": {"brightness": histogram([2, 9, 1]), "contrast": Histogram([0.4, 0.4], [12])},
        },
        filtered_by_rule=pd.DataFrame(columns=["rule", "policy", "dimension", "items"]),
        quarantined_by_reason=pd.DataFrame(columns=["reason_code", "episodes"]),
        splits=pd.DataFrame({"split": ["train", "val"], "episodes": [10, 2], "steps": [500, 100]}),
        saturation=pd.DataFrame({"dimension": ["x", "gripper"], "normalized": [True, False],
                                 "bounds_q99 (used)": [0.02, 1.0], "mean_std": [0.003, 1.0], "min_max": [0.001, 1.0]}),
        notes=[f"camera check skipped: {NASTY}"],
    )


class StrictParser(HTMLParser):
    """Fails on a closing tag that does not match the open one; ends with nothing open."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in VOID_TAGS:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-3:]}"
        self.open.pop()


def assert_well_formed(page: str) -> None:
    parser = StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.open == []


def assert_self_contained(page: str) -> None:
    for forbidden in ("http://", "https://", "<script", "<link", "@import", "src=", "url("):
        assert forbidden not in page.lower(), forbidden


def test_sections_in_order_and_flag_recommendation():
    report = make_report()
    page = render_html(report)
    assert re.findall(r'<section id="([^"]+)"', page) == SECTION_IDS
    assert page.count("<h2>") == len(SECTION_IDS)
    flags = page.split('<section id="flags">')[1].split("</section>")[0]
    assert f"<strong>{html.escape(report.flags[0].recommendation)}</strong>" in flags
    assert "Nothing under-sampled" not in page
    assert "No action was filtered." in page and "No episode was quarantined." in page


def test_one_svg_per_plot():
    page = render_html(make_report())
    # 2 marginal bar charts + episode lengths + 2 per action dimension + 2 per camera
    assert page.count("<svg") == page.count("</svg>") == 7
    coverage = page.split('<section id="coverage">')[1].split("</section>")[0]
    assert coverage.count("<svg") == 2
    assert "no data" in page  # the all-zero normalized histogram


def test_flagged_value_is_highlighted():
    page = render_html(make_report())
    lighting_chart = re.search(r'<svg[^>]*aria-label="lighting".*?</svg>', page).group(0)
    assert lighting_chart.count('fill="#d9534f"') == 1
    assert "2 (16.7%)" in lighting_chart  # count and share beside the bar


def test_self_contained_escaped_and_well_formed():
    page = render_html(make_report())
    assert_self_contained(page)
    assert NASTY not in page
    assert html.escape(NASTY) in page
    assert_well_formed(page)


def test_cube_shows_all_and_is_capped():
    report = make_report()
    tasks = [f"t{i}" for i in range(250)]
    cube_rows = pd.DataFrame({"task": tasks, "lighting": None, "episodes": 1, "steps": 50})
    page = render_html(replace(report, cube=cube_rows))
    cube = page.split("<h3>Cube</h3>")[1].split("</section>")[0]
    assert cube.count("<tr>") == 200 + 1  # the header row
    assert "(all)" in cube
    assert "250 rows, 50 left out; coverage.parquet has them all" in cube
    assert "(all)" not in page.split("<h3>Cube</h3>")[0]  # only the cube asks for it


def test_empty_cube_and_no_flags():
    report = make_report()
    empty = replace(
        report,
        cube=report.cube.iloc[0:0],
        marginals=report.marginals.iloc[0:0],
        gaps=report.gaps.iloc[0:0],
        flags=[],
        instructions=report.instructions.iloc[0:0],
        near_duplicates=report.near_duplicates.iloc[0:0],
        episode_lengths=Histogram([], []),
        action_histograms={},
        camera_histograms={},
        splits=pd.DataFrame(),
        notes=[],
    )
    page = render_html(empty)
    assert re.findall(r'<section id="([^"]+)"', page) == SECTION_IDS
    assert "Nothing under-sampled" in page
    assert "The cube is empty." in page and "No notes." in page
    assert page.count("<svg") == 1  # the (empty) episode-length histogram
    assert_self_contained(page)
    assert_well_formed(page)


@pytest.mark.parametrize(
    "hist",
    [Histogram([], []), Histogram([0.0], []), Histogram([0, 1, 2], [0, 0]), Histogram([3.0, 3.0], [5])],
    ids=["no-bins", "one-edge", "all-zero", "single-bin"],
)
def test_histogram_edge_cases(hist):
    svg = svg_histogram(hist, "h")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "nan" not in svg and "inf" not in svg
    assert ("<rect" in svg) == any(hist.counts)
    assert_well_formed(svg)


def test_histogram_labels():
    svg = svg_histogram(Histogram([i * 0.125 for i in range(9)], [1, 2, 3, 40, 5, 6, 7, 8]), "t")
    labels = re.findall(r'text-anchor="(?:start|middle|end)">([^<]+)</text>', svg)
    assert "40" in labels  # y max
    assert {"0", "0.25", "0.5", "0.75", "1"} <= set(labels)  # 5 of the 9 edges
    assert "0.125" not in labels


def test_histogram_rejects_mismatched_edges():
    with pytest.raises(ValueError, match="2 edges for 2 bins"):
        svg_histogram(Histogram([0, 1], [1, 2]), "bad")


def test_bar_chart_zero_and_empty():
    zeros = svg_bar_chart(["a", "b"], [0, 0], set(), "zeros")
    assert zeros.count("<rect") == 2 and 'width="0.0"' in zeros
    assert "no data" in svg_bar_chart([], [], set(), "none")
    with pytest.raises(ValueError):
        svg_bar_chart(["a"], [1, 2], set(), "mismatch")


def test_dataframe_table_missing_escape_and_cap():
    df = pd.DataFrame({"name": [NASTY, None, "c"], "x": [1.5, float("nan"), 1234567.0]})
    table = dataframe_table(df, max_rows=2)
    assert table.count("<tr>") == 3  # header + 2 rows
    assert html.escape(NASTY) in table and NASTY not in table
    assert "<td></td>" in table and '<td class="num"></td>' in table
    assert "(all)" in dataframe_table(df, max_rows=3, missing="(all)")
    assert '<td class="num">1.23e+06</td>' in dataframe_table(df, max_rows=3)
