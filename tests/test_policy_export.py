"""TorchScript export of a bundle's merged policy: parity with PyTorch on 100 observations, the int8
variant and its measured change, and the export driving the runtime."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.helpers import POLICY_CAMERAS as CAMERAS, frames, save_tiny_bundle
from training.export import ExportedPolicy, ParityError, check_parity, export_policy, quantization_change, run

pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:torch.quantize_per_tensor:UserWarning",  # torch's own notice when dynamic quantization packs weights
    ),
    pytest.mark.usefixtures("one_torch_thread"),
]




@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "bundle"
    save_tiny_bundle(folder, lora=True)  # exported with its adapters merged
    return folder


def test_float_export_matches_pytorch_on_100_observations(bundle, tmp_path):
    out = export_policy(bundle, tmp_path / "policy.pt")
    parity = check_parity(bundle, out, observations=100)
    assert parity.observations == 100 and parity.max_abs_action_diff <= 1e-5
    assert parity.token_agreement == 1.0 and parity.max_abs_entropy_diff <= 1e-5

    exported = ExportedPolicy.load(out)
    assert exported.cameras == CAMERAS and not exported.int8
    result = exported.policy().act(frames(2), ["open the drawer", "pick up the red block"])
    assert result.actions.shape == (2, 7) and np.isfinite(result.actions).all()
    assert np.linalg.norm(result.actions[:, :3], axis=1).max() <= 0.05 + 1e-12

    other = tmp_path / "other"
    save_tiny_bundle(other, seed=1)  # different weights: the check must notice
    with pytest.raises(ParityError, match="max abs action difference"):
        check_parity(other, out, observations=10)


def test_int8_export_runs_and_reports_a_finite_change(bundle, tmp_path, capsys):
    assert run([str(bundle), str(tmp_path / "int8.pt"), "--int8", "--observations", "20"]) == 0
    assert "int8 vs float: token agreement" in capsys.readouterr().out
    exported = ExportedPolicy.load(tmp_path / "int8.pt")
    assert exported.int8
    change = quantization_change(bundle, tmp_path / "int8.pt", observations=100)
    figures = [change.max_abs_action_diff, change.mean_abs_action_diff, change.max_abs_entropy_diff,
               change.mean_entropy_change, change.token_agreement]
    assert all(math.isfinite(figure) for figure in figures)
    assert 0.0 <= change.token_agreement <= 1.0 and change.max_abs_action_diff <= 2.0
