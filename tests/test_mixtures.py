"""`robolake mix`: a versioned mixture of gold versions, with per-member sampling
weights, aligned action and state spaces, statistics of the mixture's own train split
(equal to those of the concatenated data) and lineage to every member."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cli.main import main
from pipelines.build import convert
from pipelines.derive import complete
from pipelines.lake_source import copies_by_weight
from robolake.coverage_rule import marginals
from robolake.errors import RobolakeError
from robolake.lake import Lake
from robolake.sample.hdf5_writer import write_robomimic_dataset
from robolake.spec import parse_spec
from robolake.statistics import ALPHA
from robolake.storage import read_json
from tests.helpers import (
    CAMERAS, assert_quantiles_match_numpy, load_split, robomimic_spec, run_convert, shared_data,
)
from robolake import lake_views

NO_FILTERS = {"zscore": None, "jump": None}
BETA_ACTIONS = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "grip"]  # another name for the gripper
STATE_DIM = 9  # eef position (3), quaternion (4), gripper fingers (2)


@pytest.fixture(scope="module")
def members(robomimic_raw, tmp_path_factory) -> Path:
    """A lake with two members: alpha (the robomimic fixture, 10 episodes) and beta (16
    episodes of another seed, its gripper dimension named `grip`)."""
    lake = tmp_path_factory.mktemp("mix_lake")
    run_convert(robomimic_spec(robomimic_raw, name="alpha", filters=NO_FILTERS), lake)
    raw = tmp_path_factory.mktemp("beta_raw")
    write_robomimic_dataset(str(raw), episodes=16, steps=24, seed=11, per_file=4, cameras=CAMERAS)
    beta = robomimic_spec(raw, name="beta", action={"keys": ["actions"], "names": BETA_ACTIONS})
    run_convert(beta, lake)
    return lake


def mixture(lake: Path, name: str, members: list[dict], **fields) -> dict:
    """A mixture spec as `robolake mix` completes it."""
    return complete({"name": name, "version": "1.0.0", "source": {"members": members}, **fields}, Lake(str(lake)))


def build(lake: Path, data: dict):
    return convert(parse_spec(data), Lake(str(lake)), [])


def steps(lake: Path, dataset: str, version: str = "1.0.0") -> dict[str, dict]:
    """Curated steps of a version by episode id: split, raw actions and state, in step order."""
    con = lake_views.connect(Lake(str(lake)), dataset, version)
    rows = con.execute("SELECT episode_id, split, list(action_raw ORDER BY step_index), "
                       "list(state ORDER BY step_index) FROM steps GROUP BY episode_id, split").fetchall()
    return {e: {"split": s, "action": np.array(a, np.float32), "state": np.array(st, np.float32)}
            for e, s, a, st in rows}


@pytest.fixture(scope="module")
def weighted(members):
    """alpha at weight 2 (every train episode twice), beta at 0.5 without its dim-lit
    episodes, its gripper mapped from `grip`, its dyaw padded with 0, its state cut to
    the eef position (and so zero-padded)."""
    data = mixture(members, "weighted", [
        {"dataset": "alpha", "weight": 2.0},
        {"dataset": "beta", "weight": 0.5, "where": "lighting <> 'dim'", "action": {"gripper": "grip", "dyaw": 0.0},
         "state": [0, 1, 2]},
    ])
    return build(members, data)


def test_episode_counts_follow_the_weights(members, weighted):
    alpha, beta, mix = steps(members, "alpha"), steps(members, "beta"), steps(members, "weighted")
    beta_kept = {e for e in beta if e in _ids(members, "beta", "lighting <> 'dim'")}
    assert 0 < len(beta_kept) < len(beta)
    alpha_train = [e for e, v in alpha.items() if v["split"] == "train"]
    beta_train = [e for e in beta_kept if beta[e]["split"] == "train"]
    by_member = {"alpha": {}, "beta": {}}
    for episode_id, value in mix.items():
        member, _, rest = episode_id.partition("/")
        by_member[member].setdefault(value["split"], []).append(rest)
    # weight 2: each train episode twice, the copy `#2` in the original's split
    assert sorted(by_member["alpha"]["train"]) == sorted(alpha_train + [f"{e}#2" for e in alpha_train])
    # held-out splits take every kept episode once, whatever the weight
    for split in ("val", "test"):
        assert sorted(by_member["alpha"].get(split, [])) == sorted(e for e, v in alpha.items() if v["split"] == split)
        assert sorted(by_member["beta"].get(split, [])) == sorted(e for e in beta_kept if beta[e]["split"] == split)
    # weight 0.5: 0.5 n of the kept train episodes (rounded half up), none repeated
    chosen = by_member["beta"]["train"]
    assert len(chosen) == math.floor(0.5 * len(beta_train) + 0.5) and set(chosen) <= set(beta_train)
    listed = {m["dataset"]: m for m in weighted.manifest["members"]}
    assert listed["alpha"]["episodes_by_split"]["train"] == 2 * len(alpha_train)
    assert listed["beta"]["kept"] == len(beta_kept) and listed["beta"]["episodes"] == len(beta)


def test_views_keep_the_member_dataset_beside_the_build_dataset(members, weighted):
    """A mixture's episodes carry their member's name as metadata field `dataset`, which
    the views also add (the build's). One SQL over the whole lake reads both, the member's
    as `metadata_dataset`, and the coverage rule counts episodes by member."""
    con = lake_views.connect(Lake(str(members)))
    rows = con.execute("SELECT dataset, metadata_dataset, count(*) FROM episodes GROUP BY ALL").fetchall()
    counted = {(dataset, member): n for dataset, member, n in rows}
    mix = steps(members, "weighted")
    for member in ("alpha", "beta"):
        assert counted[("weighted", member)] == sum(e.startswith(f"{member}/") for e in mix)
        assert counted[(member, None)] == len(steps(members, member))
    by_member = marginals(lake_views.connect(Lake(str(members)), "weighted", "1.0.0"), ["dataset"])
    assert dict(zip(by_member["value"], by_member["episodes"])) == {
        member: counted[("weighted", member)] for member in ("alpha", "beta")}


def _ids(lake: Path, dataset: str, where: str) -> set[str]:
    con = lake_views.connect(Lake(str(lake)), dataset, "1.0.0")
    return {row[0] for row in con.execute(f"SELECT episode_id FROM episodes WHERE {where}").fetchall()}


def test_actions_and_state_are_mapped_and_padded(members, weighted):
    alpha, beta, mix = steps(members, "alpha"), steps(members, "beta"), steps(members, "weighted")
    for episode_id, value in mix.items():
        member, _, rest = episode_id.partition("/")
        original = (alpha if member == "alpha" else beta)[rest.split("#")[0]]
        if member == "alpha":
            np.testing.assert_array_equal(value["action"], original["action"])
            np.testing.assert_array_equal(value["state"], original["state"])
        else:
            expected = original["action"].copy()
            expected[:, 5] = 0.0  # dyaw padded
            np.testing.assert_array_equal(value["action"], expected)  # grip -> gripper keeps its column
            np.testing.assert_array_equal(value["state"][:, :3], original["state"][:, :3])
            assert not value["state"][:, 3:].any()
        assert value["state"].shape[1] == STATE_DIM


def test_statistics_equal_those_of_the_concatenated_train_data(members, weighted):
    """Statistics recomputed on the mixture equal numpy's over the members' own curated
    train steps, concatenated with the weights' copies: mean and std exactly (parallel
    merge), quantiles within the sketch's bound of np.quantile."""
    alpha, beta, mix = steps(members, "alpha"), steps(members, "beta"), steps(members, "weighted")
    parts, states = [], []
    for episode_id, value in mix.items():
        if value["split"] != "train":
            continue
        member, _, rest = episode_id.partition("/")
        original = (alpha if member == "alpha" else beta)[rest.split("#")[0]]
        action = original["action"].copy()
        state = original["state"].copy()
        if member == "beta":
            action[:, 5] = 0.0
            state[:, 3:] = 0.0
        parts.append(action)
        states.append(state)
    actions, state = np.concatenate(parts).astype(np.float64), np.concatenate(states).astype(np.float64)
    stats = read_json(f"{weighted.gold_dir}/dataset_statistics.json")
    assert stats["num_transitions"] == len(actions)
    np.testing.assert_allclose(stats["action"]["mean"], actions.mean(axis=0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats["action"]["std"], actions.std(axis=0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats["action"]["min"], actions.min(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["max"], actions.max(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["proprio"]["mean"], state.mean(axis=0), rtol=1e-6, atol=1e-9)
    assert_quantiles_match_numpy(stats["action"], actions)
    assert_quantiles_match_numpy(stats["proprio"], state)
    # the members' own statistics, averaged, would be wrong: they weigh the members 1:1
    members_q99 = [read_json(f"{Lake(str(members)).gold(m, '1.0.0')}/dataset_statistics.json")["action"]["q99"]
                   for m in ("alpha", "beta")]
    assert not np.allclose(np.mean(members_q99, axis=0)[:5], stats["action"]["q99"][:5], rtol=ALPHA)


def test_gold_normalizes_with_the_mixture_statistics(members, weighted):
    stats = read_json(f"{weighted.gold_dir}/dataset_statistics.json")
    q01, q99 = np.array(stats["action"]["q01"]), np.array(stats["action"]["q99"])
    mask = np.array(stats["action"]["mask"])
    episode = load_split(weighted.gold_dir, "train")[0]
    for step in episode["steps"]:  # bounds_q99, the default
        expected = np.clip(2 * (step["action_raw"] - q01) / (q99 - q01) - 1, -1, 1)
        np.testing.assert_allclose(step["action"], np.where(mask, expected, step["action_raw"]), atol=1e-5)


def test_lineage_reaches_every_member_and_its_raw_files(members, weighted, robomimic_raw, capsys):
    provenance = read_json(f"{weighted.gold_dir}/provenance.json")
    assert [m["dataset"] for m in provenance["members"]] == ["alpha", "beta"]
    shards = {Path(i["path"]).parent.parent.name for i in provenance["inputs"]}
    assert shards == {"alpha", "beta"}  # the members' gold shards are the inputs
    assert main(["lineage", weighted.gold_dir, "--verify"]) == 0
    out = capsys.readouterr().out
    assert "<- dataset alpha 1.0.0" in out and "<- dataset beta 1.0.0" in out
    for path in robomimic_raw.glob("*.hdf5"):
        assert str(path) in out
    assert out.strip().endswith("gold and raw files unchanged")


def test_copies_by_weight_rounds_to_the_rate():
    ids = [f"episode_{i}" for i in range(10)]
    for weight, total in ((0.5, 5), (0.25, 3), (1.0, 10), (1.26, 13), (2.0, 20), (0.04, 0)):
        copies = copies_by_weight(ids, weight)
        assert sum(copies.values()) == total
        assert set(copies.values()) <= {math.floor(weight), math.floor(weight) + 1}
    assert copies_by_weight(ids, 0.5) == copies_by_weight(list(reversed(ids)), 0.5)  # stable, not order-bound


def test_mix_command_fills_in_from_members_and_refuses_an_existing_version(members, tmp_path, capsys):
    spec = tmp_path / "mix.yaml"
    spec.write_text(yaml.safe_dump({"name": "cli_mix", "version": "1.0.0", "source": {"members": [
        {"dataset": "alpha", "weight": 1.0}, {"dataset": "beta:1.0.0", "action": {"gripper": "grip"}}]}}))
    assert main(["mix", str(spec), "--lake", str(members)]) == 0
    out = capsys.readouterr().out
    assert "alpha:1.0.0 weight 1.0: 10 of 10 episodes kept" in out and "beta:1.0.0 weight 1.0: 16 of 16" in out
    manifest = read_json(f"{Lake(str(members)).gold('cli_mix', '1.0.0')}/manifest.json")
    assert manifest["counts"]["episodes_written"] == 26
    spec_used = manifest["spec"]
    assert spec_used["source"]["members"][0]["dataset"] == "alpha:1.0.0"  # pinned
    assert spec_used["splits"]["by"] == "keep" and [c["name"] for c in spec_used["cameras"]] == ["front", "wrist"]
    assert {"color", "lighting", "env", "dataset"} <= set(spec_used["metadata"])
    assert main(["mix", str(spec), "--lake", str(members)]) == 2
    assert "already" in capsys.readouterr().err


@pytest.mark.parametrize("second, message", [
    ({"dataset": "beta"}, "source.members.1.action: beta:1.0.0 has no action dimension 'gripper' for 'gripper'"),
    ({"dataset": "beta", "action": {"gripper": "grip"}, "cameras": {"front": "top"}},
     "source.members.1.cameras: beta:1.0.0 has no camera 'top' for 'front'"),
    ({"dataset": "alpha:1.0.0", "weight": 2}, "members must be distinct versions"),
    ({"dataset": "beta", "action": {"gripper": "grip"}, "where": "lighting = "},
     "source.members.1.where: 'lighting = ' is not one SQL expression: Parser Error"),
    ({"dataset": "beta", "action": {"gripper": "grip"}, "where": "task = 'fly'"},
     "keeps none of beta:1.0.0's 16 episodes"),
    ({"dataset": "gamma"}, "gamma: no published version"),
])
def test_bad_members_give_one_clear_error(members, second, message):
    with pytest.raises(RobolakeError) as caught:
        build(members, mixture(members, "bad", [{"dataset": "alpha"}, second]))
    assert message in str(caught.value)


def test_bridge_and_a_tabletop_dataset_mix_with_cameras_mapped(members, tmp_path):
    """The real Bridge debug RLDS (4 cameras of 64x64, 7-d state) mixed with alpha (front
    and wrist, 9-d state): Bridge's primary and wrist views become front and wrist at
    alpha's sizes, its state is zero-padded to 9."""
    folder = shared_data("rlds_octo_bridge_debug") / "bridge_dataset" / "1.0.0"
    bridge = yaml.safe_load((Path(__file__).resolve().parents[1] / "datasets" / "bridge_debug.yaml").read_text())
    bridge["source"]["paths"] = [str(folder)]
    bridge["filters"] = NO_FILTERS
    run_convert(bridge, members)
    outcome = build(members, mixture(members, "bridge_mix", [
        {"dataset": "alpha", "weight": 1.0},
        {"dataset": "bridge_debug", "weight": 0.5, "cameras": {"front": "primary"}},
    ], splits={"by": "episode_hash", "fractions": {"train": 0.8, "val": 0.2}}))
    bridge_splits = [v["split"] for v in steps(members, "bridge_debug").values()]
    assert outcome.manifest["members"][1]["kept"] == len(bridge_splits) == 50
    episodes = [e for split in ("train", "val") for e in load_split(outcome.gold_dir, split)]
    from_bridge = [e for e in episodes if e["episode_metadata"]["dataset"] == "bridge_debug"]
    held_out = len(bridge_splits) - bridge_splits.count("train")
    assert len(from_bridge) == math.floor(0.5 * bridge_splits.count("train") + 0.5) + held_out
    step = from_bridge[0]["steps"][0]
    assert step["observation"]["front"].shape == (64, 64, 3) and step["observation"]["wrist"].shape == (32, 32, 3)
    assert step["observation"]["state"].shape == (STATE_DIM,) and not step["observation"]["state"][7:].any()
    # metadata fields are the union of the members'; a member without one has ''
    assert from_bridge[0]["episode_metadata"]["source_split"] in ("train", "val")
    from_alpha = next(e for e in episodes if e["episode_metadata"]["dataset"] == "alpha")
    assert from_alpha["episode_metadata"]["source_split"] == "" and from_alpha["episode_metadata"]["color"]


def test_a_metadata_feature_no_member_has_is_one_error(members):
    data = mixture(members, "typo", [{"dataset": "alpha"}], metadata={"light": {"feature": "episode_metadata/lightng"}})
    with pytest.raises(RobolakeError, match="metadata.light.feature: no member has 'episode_metadata/lightng'"):
        build(members, data)


def test_copies_stay_with_their_original_under_a_resplit(members):
    data = mixture(members, "resplit_copies", [{"dataset": "alpha", "weight": 3.0}],
                   splits={"by": "episode_hash", "fractions": {"train": 0.5, "val": 0.5}})
    build(members, data)
    mix = steps(members, "resplit_copies")
    copies = [e for e in mix if "#" in e]
    assert len(copies) == 2 * sum(1 for e in mix if "#" not in e and f"{e}#2" in mix) > 0
    for episode_id in copies:
        assert mix[episode_id]["split"] == mix[episode_id.split("#")[0]]["split"]
    assert {v["split"] for v in mix.values()} == {"train", "val"}


def test_kept_cameras_carry_the_members_pixel_summaries_without_decoding(members, tmp_path, monkeypatch):
    """Frames the mixture keeps byte for byte are never decoded: their pixel moments,
    brightness and contrast are the member's silver episodes rows."""
    from pipelines.rlds_source import RldsSource

    def no_decoding(*args):
        raise AssertionError("a kept camera was decoded")

    monkeypatch.setattr(RldsSource, "_frames", staticmethod(no_decoding))
    lake = tmp_path / "lake"
    shutil.copytree(members, lake)
    build(lake, mixture(lake, "kept", [{"dataset": "alpha"}, {"dataset": "beta", "action": {"gripper": "grip"}}]))
    columns = [f"camera_{c}_{k}" for c in ("front", "wrist") for k in ("mean", "std", "brightness", "contrast")]

    def rows(dataset: str) -> dict[str, tuple]:
        con = lake_views.connect(Lake(str(lake)), dataset, "1.0.0")
        return {r[0]: r[1:] for r in con.execute(f"SELECT episode_id, {', '.join(columns)} FROM episodes").fetchall()}

    mixed = rows("kept")
    for member in ("alpha", "beta"):
        for episode_id, values in rows(member).items():
            assert mixed[f"{member}/{episode_id}"] == values
