"""`robolake edit drop|retask|rename|resplit`: new versions derived from a published one,
which stays as it was; episode ids, values and frames carry over."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cli.main import main
from pipelines.episode import EpisodeRef
from pipelines.splits import assign_split
from robolake import lake_views
from robolake.hashing import sha256_file
from robolake.lake import Lake
from robolake.spec import SplitPolicy
from robolake.storage import read_json
from tests.helpers import load_split, robomimic_spec, run_convert


@pytest.fixture(scope="module")
def lake(robomimic_raw, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("edit_lake")
    run_convert(robomimic_spec(robomimic_raw, filters={"zscore": None, "jump": None}), root)
    return root


def edit(lake: Path, *args: str) -> int:
    return main(["edit", *args, "--lake", str(lake)])


def episodes(lake: Path, version: str, dataset: str = "synthetic_tabletop") -> dict[str, dict]:
    con = lake_views.connect(Lake(str(lake)), dataset, version)
    cursor = con.execute("SELECT * FROM episodes")
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, row)) for row in cursor.fetchall()]
    return {row["episode_id"]: row for row in rows}


def gold_files(lake: Path, version: str) -> dict[str, str]:
    folder = Path(Lake(str(lake)).gold("synthetic_tabletop", version))
    return {p.name: sha256_file(str(p)) for p in sorted(folder.iterdir())}


def all_episodes(gold_dir: str) -> list[dict]:
    return [e for split in tfds.builder_from_directory(gold_dir).info.splits for e in load_split(gold_dir, split)]


@pytest.fixture(scope="module")
def dropped(lake) -> tuple[dict, str]:
    """`edit drop` of the dim or red episodes; the source's gold file hashes before it, and what it printed."""
    before = gold_files(lake, "1.0.0")
    with pytest.MonkeyPatch.context() as patch:
        printed = []
        patch.setattr("builtins.print", lambda *args, **kwargs: printed.append(" ".join(map(str, args))))
        assert edit(lake, "drop", "synthetic_tabletop:1.0.0", "--where", "lighting = 'dim' OR color = 'red'") == 0
    return before, "\n".join(printed)


def test_drop_by_query_writes_a_new_version_and_leaves_the_source(lake, dropped):
    before, printed = dropped
    assert "synthetic_tabletop 1.1.0:" in printed  # the next minor version
    assert gold_files(lake, "1.0.0") == before
    source, edited = episodes(lake, "1.0.0"), episodes(lake, "1.1.0")
    removed = {e for e, row in source.items() if row["lighting"] == "dim" or row["color"] == "red"}
    assert removed and set(edited) == set(source) - removed  # ids kept
    for episode_id, row in edited.items():
        assert (row["split"], row["language_instruction"], row["task"]) == \
               (source[episode_id]["split"], source[episode_id]["language_instruction"], source[episode_id]["task"])
    manifest = read_json(f"{Lake(str(lake)).gold('synthetic_tabletop', '1.1.0')}/manifest.json")
    assert manifest["members"][0]["kept"] == len(edited) and manifest["members"][0]["episodes"] == len(source)


def test_edited_steps_and_frames_match_the_source(lake, dropped):
    gold = Lake(str(lake)).gold
    source = {e["episode_metadata"]["episode_id"]: e for e in all_episodes(gold("synthetic_tabletop", "1.0.0"))}
    for episode in all_episodes(gold("synthetic_tabletop", "1.1.0")):
        original = source[episode["episode_metadata"]["episode_id"]]
        assert len(episode["steps"]) == len(original["steps"])
        for step, before in zip(episode["steps"], original["steps"]):
            np.testing.assert_array_equal(step["action_raw"], before["action_raw"])
            np.testing.assert_array_equal(step["observation"]["state"], before["observation"]["state"])
            for camera in ("front", "wrist"):  # JPEG and PNG, kept byte for byte
                np.testing.assert_array_equal(step["observation"][camera], before["observation"][camera])


def test_statistics_of_an_edit_are_those_of_its_own_train_split(lake, dropped):
    con = lake_views.connect(Lake(str(lake)), "synthetic_tabletop", "1.1.0")
    actions = np.array([row[0] for row in con.execute("SELECT action_raw FROM steps WHERE split = 'train'").fetchall()])
    stats = read_json(f"{Lake(str(lake)).gold('synthetic_tabletop', '1.1.0')}/dataset_statistics.json")
    np.testing.assert_allclose(stats["action"]["mean"], actions.mean(axis=0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats["action"]["std"], actions.std(axis=0), rtol=1e-6, atol=1e-9)
    before = read_json(f"{Lake(str(lake)).gold('synthetic_tabletop', '1.0.0')}/dataset_statistics.json")
    assert stats["num_transitions"] < before["num_transitions"]


def test_retask_changes_instruction_and_task_of_the_selected_episodes(lake):
    assert edit(lake, "retask", "synthetic_tabletop:1.0.0", "--version", "2.0.0", "--where", "task = 'pick'",
                "--instruction", "pick up the object", "--task", "pick_object") == 0
    source, edited = episodes(lake, "1.0.0"), episodes(lake, "2.0.0")
    assert set(source) == set(edited)
    picked = {e for e, row in source.items() if row["task"] == "pick"}
    assert picked
    for episode_id, row in edited.items():
        if episode_id in picked:
            assert (row["task"], row["language_instruction"]) == ("pick_object", "pick up the object")
        else:
            assert (row["task"], row["language_instruction"]) == (source[episode_id]["task"],
                                                                  source[episode_id]["language_instruction"])
    gold = Lake(str(lake)).gold("synthetic_tabletop", "2.0.0")
    for episode in all_episodes(gold):
        if episode["episode_metadata"]["episode_id"] in picked:
            assert {s["language_instruction"].decode() for s in episode["steps"]} == {"pick up the object"}


def test_rename_copies_under_a_new_name(lake):
    assert edit(lake, "rename", "synthetic_tabletop:1.0.0", "tabletop_v2") == 0
    assert set(episodes(lake, "1.0.0", "tabletop_v2")) == set(episodes(lake, "1.0.0"))
    provenance = read_json(f"{Lake(str(lake)).gold('tabletop_v2', '1.0.0')}/provenance.json")
    assert provenance["members"][0]["dataset"] == "synthetic_tabletop"


def test_resplit_by_fractions_and_by_held_out_task(lake):
    assert edit(lake, "resplit", "synthetic_tabletop:1.0.0", "--version", "3.0.0",
                "--fractions", "train=0.5,val=0.5") == 0
    edited = episodes(lake, "3.0.0")
    policy = SplitPolicy(fractions={"train": 0.5, "val": 0.5})
    for episode_id, row in edited.items():
        ref = EpisodeRef(episode_id, "", "", "", 1, "", {"task": row["task"]})
        assert row["split"] == assign_split(ref, policy)
    assert {row["split"] for row in edited.values()} == {"train", "val"}
    assert edit(lake, "resplit", "synthetic_tabletop:1.0.0", "--version", "3.1.0", "--held-out", "test=pick") == 0
    for row in episodes(lake, "3.1.0").values():
        assert row["split"] == ("test" if row["task"] == "pick" else "train")


def test_bad_edits_give_one_clear_error(lake, capsys):
    assert edit(lake, "drop", "synthetic_tabletop:1.0.0", "--version", "9.0.0", "--where", "no_such_column = 1") == 2
    assert "no_such_column" in capsys.readouterr().err
    assert edit(lake, "drop", "synthetic_tabletop:1.0.0", "--version", "9.0.0", "--where", "true") == 2
    assert "keeps none of synthetic_tabletop:1.0.0's 10 episodes" in capsys.readouterr().err
    assert edit(lake, "retask", "synthetic_tabletop:1.0.0", "--where", "true") == 2
    assert "give --instruction, --task or both" in capsys.readouterr().err
    assert edit(lake, "drop", "synthetic_tabletop:7.0.0", "--where", "true") == 2
    assert "synthetic_tabletop:7.0.0: not published" in capsys.readouterr().err
    assert Lake(str(lake)).current("synthetic_tabletop", "9.0.0") is None
