"""validation/html_report.py on hand-built CoverageReports (no lake, no DuckDB): section
order, one line per flag, one SVG per plot, heatmaps of the crossings, the fields left out of
them, nothing fetched, escaping, well-formed markup, empty states."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from html.parser import HTMLParser

import pandas as pd
import pytest

from robolake.coverage_rule import UnderSampled
from robolake.html_page import dataframe_table
from validation.coverage_model import CoverageReport, EpisodeQuality, Histogram
from validation.instruction_meaning import InstructionMeaning
from validation.html_report import render_html, svg_bar_chart, svg_heatmap, svg_histogram

SECTION_IDS = [
    "summary",
    "flags",
    "coverage",
    "instructions",
    "lengths",
    "actions",
    "cameras",
    "filtering",
    "quality",
]
NASTY = '<b>&"'  # must never reach the page unescaped
ENV = '{"env_name": "Tabletop", "env_kwargs": {"control_freq": 10, "note": "' + NASTY + '"}}'
VOID_TAGS = {"meta", "br", "hr", "img", "input", "col", "wbr", "area", "base", "source"}


def histogram(counts: list[int], lo: float = 0.0, hi: float = 1.0) -> Histogram:
    step = (hi - lo) / max(len(counts), 1)
    return Histogram(edges=[lo + i * step for i in range(len(counts) + 1)], counts=counts)


def make_report() -> CoverageReport:
    """Two crossed fields, a flagged lighting value holding NASTY, an empty pair (push x side),
    a JSON field left out of the crossings, 8 plots (one heatmap, one empty histogram, one
    single-bin), nothing filtered or quarantined."""
    side = f"side {NASTY}"
    flag = UnderSampled(
        field="lighting",
        value=side,
        label=f"lighting={side}",
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
        threshold=0.8,
        fields=["task", "lighting"],
        uncrossed=pd.DataFrame(
            {
                "field": ["env"],
                "reason": ["JSON values"],
                "distinct_values": [1],
                "most_common": [ENV],
                "most_common_episodes": [12],
            }
        ),
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
        meaning=InstructionMeaning(False, "off: sentence_transformers is not installed; pip install 'robolake[meaning]'"),
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
        quality=EpisodeQuality(flags=[], histograms={}, contact_sheets={}, drop_command=None, view_commands={}),
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


def section(page: str, key: str) -> str:
    return page.split(f'<section id="{key}">')[1].split("</section>")[0]


def test_sections_in_order_and_one_line_per_flag():
    report = make_report()
    page = render_html(report)
    assert re.findall(r'<section id="([^"]+)"', page) == SECTION_IDS
    assert page.count("<h2>") == len(SECTION_IDS)
    flags = section(page, "flags")
    assert re.findall(r"<li>(.*?)</li>", flags) == [html.escape(report.flags[0].recommendation)]
    assert flags.count("2 of 12 episodes") == 1  # the fact is said once
    assert "80% of an even share" in flags
    assert "Nothing under-sampled" not in page
    assert "No action was filtered." in page and "No episode was quarantined." in page


def test_one_svg_per_plot():
    page = render_html(make_report())
    # 2 marginal bar charts + 1 heatmap + episode lengths + 2 per action dimension + 2 per camera
    assert page.count("<svg") == page.count("</svg>") == 8
    assert section(page, "coverage").count("<svg") == 3
    assert "no data" in page  # the all-zero normalized histogram


def test_flagged_value_is_highlighted():
    page = render_html(make_report())
    lighting_chart = re.search(r'<svg[^>]*aria-label="lighting".*?</svg>', page).group(0)
    assert lighting_chart.count('fill="#d9534f"') == 1
    assert "2 (16.7%)" in lighting_chart  # count and share beside the bar


def test_crossing_reads_every_pair_off_the_cube():
    crossing = make_report().crossing("task", "lighting")
    side = f"side {NASTY}"
    assert crossing[["value_a", "value_b", "episodes"]].values.tolist() == [
        ["pick", "overhead", 6], ["pick", side, 2], ["push", "overhead", 4], ["push", side, 0]]
    assert crossing["share"].sum() == pytest.approx(1.0)
    # 0.8 of an even share of 4 pairs is 20%: pick x side (2 of 12) is under it; the empty pair is a gap
    assert crossing["under_sampled"].tolist() == [False, True, False, False]


def test_heatmap_marks_under_sampled_and_empty_cells():
    coverage = section(render_html(make_report()), "coverage")
    heatmap = re.search(r'<svg[^>]*aria-label="task × lighting".*?</svg>', coverage).group(0)
    cells = re.findall(r"<g><title>([^<]*)</title>(<rect[^>]*/>)", heatmap)
    assert len(cells) == 4
    marks = {tip.split(":")[0]: ("dashed" if "stroke-dasharray" in rect else "outlined" if "#d9534f" in rect else "")
             for tip, rect in cells}
    side = html.escape(f"side {NASTY}")
    assert marks == {"task=pick, lighting=overhead": "", f"task=pick, lighting={side}": "outlined",
                     "task=push, lighting=overhead": "", f"task=push, lighting={side}": "dashed"}
    assert cells[1][0].endswith("under-sampled") and cells[3][0].endswith("empty")
    assert ">task</text>" in heatmap and ">lighting</text>" in heatmap  # both axes labelled
    assert "<table" not in coverage.split("<h3>Gaps")[0]  # no cube table


def test_heatmap_fills_darker_for_more_episodes_and_shortens_labels():
    long_value = "a very long lighting description that goes on"
    table = pd.DataFrame({"value_a": ["x", "x", "y", "y"], "value_b": ["dim", long_value] * 2,
                          "episodes": [1, 5, 9, 3], "share": [1 / 18, 5 / 18, 9 / 18, 3 / 18],
                          "under_sampled": [False] * 4})
    svg = svg_heatmap(table, "task", "lighting")
    fills = re.findall(r'<rect[^>]*fill="#([0-9a-f]{6})"', svg)
    brightness = [sum(int(fill[i:i + 2], 16) for i in (0, 2, 4)) for fill in fills]
    assert len(brightness) == 4
    assert brightness[0] > brightness[3] > brightness[1] > brightness[2]  # 1 < 3 < 5 < 9 episodes
    assert f"<title>{long_value}</title>a very long…</text>" in svg
    assert_well_formed(svg)


def test_fields_left_out_of_crossings_are_summarized():
    coverage = section(render_html(make_report()), "coverage")
    left_out = coverage.split("<h3>Fields not crossed</h3>")[1].split("<h3>")[0]
    assert "at most 50 distinct values, none longer than 40 characters" in left_out
    assert "<b>env</b> (JSON values): 1 distinct value(s); the most common, in 12 of 12 episodes" in left_out
    assert f'<span title="{html.escape(ENV)}">{html.escape(ENV[:39])}…</span>' in left_out


def test_cube_is_left_to_parquet_and_gaps_are_capped():
    report = make_report()
    tasks = [f"t{i}" for i in range(250)]
    cube_rows = pd.DataFrame({"task": tasks, "lighting": None, "episodes": 1, "steps": 50})
    gap_rows = pd.DataFrame({"field_a": "task", "value_a": tasks, "field_b": "lighting", "value_b": "dim",
                             "episodes": 0, "expected": 1.5})
    coverage = section(render_html(replace(report, cube=cube_rows, gaps=gap_rows)), "coverage")
    assert "t249" not in coverage and "t0" in coverage  # gaps table: the first 200 rows
    assert "250 rows, 50 left out; coverage/gaps.parquet has them all" in coverage
    assert "the 2 crossed fields with every subtotal (250 rows" in coverage
    assert "coverage/cube.parquet" in coverage


def test_saturation_table_beside_action_histograms():
    actions = section(render_html(make_report()), "actions")
    assert actions.index("<table") < actions.index("<svg")
    assert "bounds_q99 (used)" in actions and "<td>gripper</td>" in actions


def test_empty_report_and_no_flags():
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
        uncrossed=report.uncrossed.iloc[0:0],
    )
    page = render_html(empty)
    assert re.findall(r'<section id="([^"]+)"', page) == SECTION_IDS
    assert "Nothing under-sampled" in page
    assert "Every field is crossed." in page and "nothing to cross" in page
    assert page.count("<svg") == 1  # the (empty) episode-length histogram
    assert_self_contained(page)
    assert_well_formed(page)


def test_single_valued_fields_are_not_drawn():
    report = make_report()
    one_scene = pd.DataFrame({"field": ["scene"], "value": ["wood"], "episodes": [12], "steps": [600], "share": [1.0]})
    page = render_html(replace(report, fields=[*report.fields, "scene"],
                               marginals=pd.concat([report.marginals, one_scene], ignore_index=True),
                               cube=report.cube.assign(scene="wood")))
    assert re.findall(r'aria-label="([^"]+ × [^"]+)"', page) == ["task × lighting"]
    assert "Not drawn, having a single value: scene." in page


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
    assert '<td class="num">1.23e+06</td>' in dataframe_table(df, max_rows=3)
