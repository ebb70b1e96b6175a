"""`robolake view` and `robolake evaluate --record`: Rerun recordings read back with Rerun's own
reader (rerun.chunk.RrdReader, rerun-sdk 0.41): the entity paths, one frame per gold step per
camera with gold's exact JPEG/PNG bytes, the action and state values equal to gold's, the
step and time timelines, the quality annotations at the steps of planted faults (a frozen
action run, a frozen camera, an action spike the filter drops), the CLI's one-line errors,
and a failed closed-loop rollout's recording with its actions and the policy's entropies,
linked from eval.html."""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest
from rerun.chunk import RrdReader

from cli.main import main
from exports import rerun_view
from robolake import episode_events
from robolake import episode_quality as eq
from robolake.errors import RobolakeError
from robolake.lake import Lake
from robolake.rerun_recording import entity
from robolake.sample import write_robomimic_dataset
from tests.helpers import CAMERAS, robomimic_spec, run_convert
from training.eval_report import _failed
from training.rollout import run_rollouts
from training.sim_env import RandomPolicy, TabletopEnv

NAME, VERSION = "synthetic_tabletop", "1.0.0"
FAULTY, CLEAN = "tabletop_000/data/demo_1", "tabletop_000/data/demo_2"
FROZEN_FROM, FROZEN_TO, SPIKE = 10, 22, 30  # planted in FAULTY: actions and wrist frames frozen 10..21, a spike at 30
NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("view_raw")
    write_robomimic_dataset(str(raw), episodes=4, steps=40, seed=3, per_file=4, cameras=CAMERAS)
    with h5py.File(raw / "tabletop_000.hdf5", "a") as h5:
        demo = h5["data/demo_1"]
        actions = demo["actions"][()]
        actions[FROZEN_FROM:FROZEN_TO] = actions[FROZEN_FROM]  # 12 identical actions
        actions[SPIKE, 0] += 0.5  # one step far off and back: the jump filter drops it
        demo["actions"][...] = actions
        wrist = demo["obs/wrist_image"]
        wrist[FROZEN_FROM:FROZEN_TO] = wrist[FROZEN_FROM]  # the wrist camera frozen for 12 frames
    root = tmp_path_factory.mktemp("view") / "lake"
    run_convert(robomimic_spec(raw), root)
    return root


def read_recording(path: Path) -> dict[str, list[dict]]:
    """Every row of the recording by entity path, with Rerun's own reader."""
    [store] = RrdReader(path).recordings()
    assert store.application_id == "robolake"
    rows = defaultdict(list)
    for chunk in RrdReader(path).stream(store=store).to_chunks():
        rows[chunk.entity_path] += chunk.to_record_batch().to_pylist()
    return rows


def gold_episode(lake: Path, episode_id: str) -> dict:
    """The episode as gold stores it (frames as their encoded bytes)."""
    target = Lake(str(lake)).resolve(NAME)
    for split in target.layout()["splits"]:
        for episode in target.episodes(split):
            if episode["episode_metadata"]["episode_id"].numpy().decode() == episode_id:
                steps = list(episode["steps"].as_numpy_iterator())
                return {"frames": {camera: [bytes(s["observation"][camera]) for s in steps] for camera in CAMERAS},
                        "action_raw": np.stack([s["action_raw"] for s in steps]),
                        "action": np.stack([s["action"] for s in steps]),
                        "state": np.stack([s["observation"]["state"] for s in steps])}
    raise AssertionError(f"{episode_id} not in gold")


def silver_steps(lake: Path, episode_id: str) -> tuple[list[int], list[float]]:
    from robolake.lake_views import connect

    con = connect(Lake(str(lake)), NAME, VERSION)
    rows = con.execute("SELECT step_index, timestamp FROM steps WHERE episode_id = ? ORDER BY step_index",
                       [episode_id]).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]


@pytest.fixture(scope="module")
def recording(lake, tmp_path_factory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("out") / "two.rrd"
    code = main(["view", f"{NAME}:{VERSION}", "--episode", FAULTY, "--episode", CLEAN, "--lake", str(lake),
                 "-o", str(out)])
    assert code == 0 and out.is_file()
    return read_recording(out)


def test_entity_paths(recording):
    for episode_id in (FAULTY, CLEAN):
        root = entity("episodes", episode_id)
        expected = {f"{root}/cameras/{camera}" for camera in CAMERAS}
        expected |= {f"{root}/{group}/{name}" for group in ("action", "action_normalized") for name in NAMES}
        expected |= {f"{root}/{name}" for name in ("instruction", "metadata", "quality", "quality/events")}
        assert expected <= set(recording)
        # state: one entity per dimension, named from the manifest's state layout (robomimic's obs keys)
        state = sorted(path.removeprefix(f"{root}/state/") for path in recording if path.startswith(f"{root}/state/"))
        assert state and all("/" in name and name.split("/")[0] in ("robot0_eef_pos", "robot0_eef_quat",
                                                                     "robot0_gripper_qpos") for name in state)
        assert "robot0_eef_pos/2" in state


def test_frames_actions_and_state_equal_gold(lake, recording):
    for episode_id in (FAULTY, CLEAN):
        gold, root = gold_episode(lake, episode_id), entity("episodes", episode_id)
        steps, stamps = silver_steps(lake, episode_id)
        length = len(gold["action"])
        assert len(steps) == length
        for camera in CAMERAS:
            rows = recording[f"{root}/cameras/{camera}"]
            assert len(rows) == length  # one frame per gold step
            assert [bytes(row["EncodedImage:blob"][0]) for row in rows] == gold["frames"][camera]  # not re-encoded
            media = {"front": "image/jpeg", "wrist": "image/png"}[camera]  # the spec's encodings
            assert {row["EncodedImage:media_type"][0] for row in rows} == {media}
            assert [row["step"] for row in rows] == steps
            seconds = [row["time"].total_seconds() for row in rows]
            np.testing.assert_allclose(seconds, np.asarray(stamps) - stamps[0], atol=1e-6)
        for group, column in (("action", "action_raw"), ("action_normalized", "action")):
            for d, name in enumerate(NAMES):
                values = [row["Scalars:scalars"][0] for row in recording[f"{root}/{group}/{name}"]]
                np.testing.assert_array_equal(np.asarray(values, np.float32), gold[column][:, d])
        values = [row["Scalars:scalars"][0] for row in recording[f"{root}/state/robot0_eef_pos/1"]]
        np.testing.assert_array_equal(np.asarray(values, np.float32), gold["state"][:, 1])


def events(recording, episode_id: str) -> list[tuple[int, str, str]]:
    return [(row["step"], row["TextLog:level"][0], row["TextLog:text"][0])
            for row in recording[f"{entity('episodes', episode_id)}/quality/events"]]


def test_annotations_at_the_planted_faults(recording):
    found = events(recording, FAULTY)
    assert (FROZEN_FROM, "WARN", "frozen actions: 12 identical actions (1.2 s) from here") in found
    assert (FROZEN_FROM, "WARN", "camera wrist: 12 byte-identical frames (1.2 s) from here") in found
    [(level, dropped)] = [(level, text) for step, level, text in found if step == SPIKE]
    assert level == "WARN" and dropped.startswith("outlier filter (jump): dx = ") and dropped.endswith("step dropped")
    assert not [e for e in events(recording, CLEAN) if "frozen actions" in e[2] or "byte-identical" in e[2]]
    quality = recording[f"{entity('episodes', FAULTY)}/quality"][0]["TextDocument:text"][0]
    assert "| frozen_action_steps | 12 |" in quality and "camera_wrist_freeze_steps" in quality


def test_metadata_and_instruction_documents(recording):
    root = entity("episodes", FAULTY)
    metadata = recording[f"{root}/metadata"][0]["TextDocument:text"][0]
    assert f"| episode_id | {FAULTY} |" in metadata and "| split |" in metadata
    assert recording[f"{root}/instruction"][0]["TextDocument:text"][0].strip()


def test_spike_annotations_follow_the_metric():
    rng = np.random.default_rng(0)
    t = np.arange(60)
    actions = rng.normal(0, 0.001, (60, 7))
    actions[:, 0] += 0.02 * np.sin(t / 6) + 0.02
    actions[40, 2] += 0.5
    layout = eq.ActionLayout.from_names(NAMES)
    positions = episode_events.spike_positions(actions, layout)
    assert len(positions) == eq.spike_metrics(actions, layout)["spike_steps"] == 1
    assert positions[0][:2] == (40, 2)  # the planted step and dz: its neighbours stand out only half as much


def episode_roots(recording: dict) -> set[str]:
    """The /episodes/<id> entities of a recording (an id's `/` is escaped)."""
    return {match.group(0) for path in recording if (match := re.match(r"/episodes/(\\.|[^/\\])+", path))}


def test_where_and_limit_choose_episodes(lake, tmp_path):
    out = tmp_path / "frozen.rrd"
    assert main(["view", NAME, "--where", "frozen_action_steps >= 12", "--lake", str(lake), "-o", str(out)]) == 0
    assert episode_roots(read_recording(out)) == {entity("episodes", FAULTY)}
    # the first two by id that meet the condition; the file is its own, so it is replaced
    assert main(["view", NAME, "--where", "frozen_action_steps < 12", "--limit", "2", "--lake", str(lake),
                 "-o", str(out)]) == 0
    assert episode_roots(read_recording(out)) == {entity("episodes", f"tabletop_000/data/demo_{k}") for k in (2, 3)}


@pytest.mark.parametrize("args, message", [
    (["--episode", "tabletop_000/data/demo_9"],
     "robolake view: error: --episode 'tabletop_000/data/demo_9': no such episode in synthetic_tabletop:1.0.0 "
     "(4 episodes; did you mean 'tabletop_000/data/demo_4'?)"),
    (["--where", "idle_share > 2"],
     "robolake view: error: synthetic_tabletop:1.0.0: no episode meets (idle_share > 2)"),
    (["--where", "no_such_column > 1"], "robolake view: error: --where 'no_such_column > 1': Binder Error"),
])
def test_bad_choice_is_one_error_line(lake, tmp_path, capsys, args, message):
    out = tmp_path / "x.rrd"
    assert main(["view", NAME, *args, "--lake", str(lake), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err and not out.exists()


def test_output_must_be_an_rrd_outside_the_lake_and_not_someone_elses(lake, tmp_path, capsys):
    other = tmp_path / "notes.rrd"
    other.write_text("mine")
    for out, message in ((tmp_path / "x.txt", "a Rerun recording is a local file named *.rrd"),
                         (lake / "x.rrd", "is inside the lake"),
                         (other, "is not a Rerun recording that robolake wrote")):
        assert main(["view", NAME, "--limit", "1", "--lake", str(lake), "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
    assert other.read_text() == "mine"


def test_spawn_says_why_no_viewer_opens(monkeypatch, tmp_path):
    path = str(tmp_path / "x.rrd")
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(RobolakeError, match="no Rerun viewer here"):
        rerun_view.spawn_viewer(path)
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: "/usr/bin/rerun")
    monkeypatch.setattr(rerun_view.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(RobolakeError, match="no display"):
        rerun_view.spawn_viewer(path)


class EntropyPolicy(RandomPolicy):
    """A random policy that reports an entropy per action, as RuntimePolicyAdapter does."""

    def act(self, observation):
        action = super().act(observation)
        self.last_entropy = float(abs(action[0]))
        return action


def test_failed_rollouts_recorded_with_entropies_and_linked(tmp_path):
    folder = tmp_path / "eval" / "rollouts"
    env = TabletopEnv(cameras={"front": (48, 64), "wrist": (24, 32)})
    report = run_rollouts(EntropyPolicy(seed=0), env, episodes=2, seed=2, max_steps=12, failures_dir=folder,
                          show_progress=False, record_failures=True)
    env.close()
    failed = [r for r in report.records if not r.success]
    assert failed
    for record in failed:
        saved = np.load(record.saved_to)
        rows = read_recording(Path(record.recording))
        assert len(rows["/rollout/cameras/front"]) == record.length + 1
        actions = [[row["Scalars:scalars"][0] for row in rows[f"/rollout/action/{name}"]] for name in NAMES]
        np.testing.assert_array_equal(np.asarray(actions).T, saved["actions"])
        entropy = [row["Scalars:scalars"][0] for row in rows["/rollout/entropy"]]
        np.testing.assert_allclose(entropy, np.abs(saved["actions"][:, 0]))
        assert [row["step"] for row in rows["/rollout/entropy"]] == list(range(record.length))
    html = _failed(report.records, tmp_path / "eval")
    name = Path(failed[0].recording).name
    assert f'href="rollouts/{name}"' in html and f"<code>rerun rollouts/{name}</code>" in html
