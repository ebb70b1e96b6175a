"""A learning check in closed loop: a tiny compact VLA (state token, action chunks, as the
demo's recipe) trained for a few hundred steps on a handful of the sample's demonstrations
succeeds on those scenes more often than random actions and the mean action on the same
seeds. Each rate is reported with its 95% Wilson interval (here: learned 2/6, 10-70%; random
and mean action 0/6, 0-39%). Small on purpose, and rolled out on the scenes it trained on: it
checks that the pipeline's data teaches a policy, not the demo's success target."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main
from pipelines.build import convert
from robolake.lake import Lake
from robolake.normalization import load_statistics
from robolake.sample import write_sample
from robolake.spec import load_spec
from tests.helpers import config_file
from training.rollout import run_rollouts
from training.runtime import Policy
from training.sim_env import ConstantPolicy, RandomPolicy, RuntimePolicyAdapter, TabletopEnv

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

SPEC = Path(__file__).resolve().parents[1] / "datasets" / "sample_tabletop.yaml"
CAMERAS = {"front": (60, 80), "wrist": (60, 80)}
EPISODES = 6
MODEL = {"image_size": 32, "patch_size": 8, "vision_hidden": 32, "vision_layers": 1, "vision_heads": 2,
         "lm_hidden": 64, "lm_layers": 2, "lm_heads": 2, "lm_intermediate": 128,
         "state_dim": 9, "action_horizon": 8, "action_decoding": "parallel", "patch_embedding": "conv",
         "label_sigma_bins": 3.0}


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("closed_loop")
    write_sample(str(root / "raw"), episodes=EPISODES, seed=0, bag_fraction=0.0, faults=False, cameras=CAMERAS)
    spec = load_spec(str(SPEC), [f"source.paths=['{root}/raw/hdf5/*.hdf5']", "cameras.0.size=[32, 32]",
                                 "cameras.1.size=[32, 32]", "splits.fractions={train: 1.0}"])
    outcome = convert(spec, Lake(str(root / "lake")), [])
    config = config_file(root, steps=600, lr=2e-3, warmup_steps=20, val_every=600, batch_size=16, effective_batch=16,
                         model=MODEL, data={"image_size": 32, "shuffle_buffer": 256, "crop_scale": 1.0})
    assert main(["train", "--dataset", "sample_tabletop", "--config", config, "--lake", str(root / "lake"),
                 "--run-dir", str(root / "run")]) == 0
    mean_action = load_statistics(outcome.gold_dir)["action"]["mean"]
    policies = {"learned": RuntimePolicyAdapter(Policy.from_checkpoint(root / "run" / "last")),
                "random": RandomPolicy(seed=0), "mean action": ConstantPolicy(mean_action)}
    summaries = {}
    for name, policy in policies.items():
        env = TabletopEnv(cameras=CAMERAS)  # scenes (0, k): the demonstrations' own
        summaries[name] = run_rollouts(policy, env, EPISODES, seed=0, max_steps=70, show_progress=False).summary()
    return summaries


def test_a_tiny_training_run_beats_random_and_mean_action_policies(rollouts):
    report = "; ".join(f"{name} {s['successes']}/{s['episodes']} (95% CI {s['success_ci'][0]:.0%}-"
                       f"{s['success_ci'][1]:.0%})" for name, s in rollouts.items())
    print(report)
    learned = rollouts["learned"]["successes"]
    assert learned > rollouts["random"]["successes"] and learned > rollouts["mean action"]["successes"], report
