"""Dataset spec validation: good specs load, bad ones name the field and what is allowed."""

from pathlib import Path

import pytest
import yaml

from cli.main import main
from robolake.errors import RobolakeError, SpecError
from robolake.spec import DEFAULT_ACTION_NAMES, load_spec, parse_spec
from tests.helpers import ROBOMIMIC_SPEC, merged, robomimic_spec

REPO = Path(__file__).resolve().parents[1]


def test_shipped_specs_load():
    for path in sorted((REPO / "datasets").glob("*.yaml")):
        spec = load_spec(str(path))
        assert spec.name and spec.version


def test_defaults_follow_rlds_practice():
    spec = parse_spec(robomimic_spec(Path("raw"), cameras=[{"name": "front"}]))
    assert spec.action.names == DEFAULT_ACTION_NAMES
    camera = spec.cameras[0]
    assert (camera.size, camera.encoding, camera.jpeg_quality) == ((256, 256), "jpeg", 95)
    assert spec.splits.fractions == {"train": 0.8, "val": 0.1, "test": 0.1}


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"cameras": [{"name": "front", "encoding": "webp"}]}, "cameras.0.encoding: Input should be 'jpeg' or 'png'"),
        ({"cameras": [{"name": "front", "jpeg_quality": 101}]}, "cameras.0.jpeg_quality"),
        ({"source": {"format": "csv"}}, "source.format: must be one of 'hdf5', 'rosbag', 'rlds', 'lake', 'lerobot', got 'csv'"),
        ({"source": {"layout": "lerobot"}}, "source.layout: Input should be 'robomimic', 'robosuite', 'aloha' or 'generic'"),
        ({"splits": {"fractions": {"train": 0.8, "val": 0.3}}}, "fractions must be >= 0 and sum to 1"),
        ({"splits": {"by": "task"}}, "by: task needs held_out_tasks"),
        ({"instruction": {"value": "x", "episode_attr": "y"}}, "instruction: Value error, give exactly one of"),
        ({"control_rate_hz": 0}, "control_rate_hz: Input should be greater than 0"),
        ({"version": "v1"}, "version: versions are MAJOR.MINOR.PATCH strings"),
        ({"colour": "red"}, "colour: unknown field (allowed: name, version, description, source"),
        ({"cameras": [{"name": "front", "fps": 30}]}, "cameras.0.fps: unknown field (allowed: name, key, size"),
        ({"episode_length": {"min_steps": 10, "max_steps": 5}}, "max_steps must be >= min_steps"),
        ({"splits": {"by": "keep"}, "source": {"paths": ["raw/*.hdf5"]}},
         "splits.by: keep takes the source's splits, and hdf5 sources have none"),
    ],
)
def test_bad_spec_names_field_and_allowed_values(override, expected):
    with pytest.raises(SpecError) as error:
        parse_spec(merged(ROBOMIMIC_SPEC, **override), origin="datasets/bad.yaml")
    message = str(error.value)
    assert message.startswith("datasets/bad.yaml: invalid dataset spec: ")
    assert expected in message


LAKE_SPEC = {
    "name": "mixture", "version": "1.0.0", "control_rate_hz": 10,
    "source": {"format": "lake", "members": [{"dataset": "alpha:1.0.0"}, {"dataset": "beta:1.0.0", "weight": 2}]},
    "cameras": [{"name": "front"}], "instruction": {"feature": "steps/language_instruction"},
    "metadata": {"dataset": {"file_attr": "dataset"}}, "splits": {"by": "keep"},
}


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"source": {"members": [{"dataset": "alpha"}]}}, "source.members.0.dataset: String should match pattern"),
        ({"source": {"members": [{"dataset": "alpha:1.0.0", "weight": 0}]}}, "weight: Input should be greater than 0"),
        ({"source": {"members": [{"dataset": "a:1.0.0", "action": {"grip": "gripper"}}]}},
         "source.members.0.action: ['grip'] are not action names"),
        ({"source": {"members": [{"dataset": "a:1.0.0", "cameras": {"top": "front"}}]}},
         "source.members.0.cameras: ['top'] are not camera names ['front']"),
        ({"source": {"members": [{"dataset": "a:1.0.0", "retask": [{"where": "true"}]}]}},
         "retask.0: Value error, give instruction, task or both"),
        ({"action": {"keys": ["steps/action"]}}, "action.keys: a lake source maps each member in source.members"),
        ({"instruction": {"feature": "steps/task"}}, "instruction.feature: a lake source has steps/language_instruction"),
        ({"metadata": {"lighting": {"episode_attr": "lighting"}}}, "metadata.lighting: episode_attr is not available"),
    ],
)
def test_bad_lake_spec_names_field(override, expected):
    with pytest.raises(SpecError) as error:
        parse_spec(merged(LAKE_SPEC, **override), origin="mix.yaml")
    assert expected in str(error.value)


def test_lake_spec_names_its_members_and_resolves_them_in_the_lake(tmp_path):
    spec = parse_spec(merged(LAKE_SPEC, source={**LAKE_SPEC["source"], "lake": str(tmp_path)}))
    assert [(m.name, m.version, m.weight) for m in spec.source.members] == [("alpha", "1.0.0", 1.0), ("beta", "1.0.0", 2.0)]
    with pytest.raises(RobolakeError, match=f"alpha:1.0.0: not published in {tmp_path}"):
        spec.source.paths


def test_missing_required_field(tmp_path):
    spec = merged(ROBOMIMIC_SPEC)
    del spec["instruction"]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match="instruction: required field is missing"):
        load_spec(str(path))


def test_cli_reports_bad_spec_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(merged(ROBOMIMIC_SPEC, cameras=[{"name": "Front Cam"}])))
    assert main(["convert", str(path), "--lake", str(tmp_path / "lake")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "cameras.0.name" in err[0] and "Traceback" not in err[0]


def test_cli_reports_missing_sources(tmp_path, capsys):
    spec = merged(ROBOMIMIC_SPEC)
    spec["source"]["paths"] = [str(tmp_path / "nowhere" / "*.hdf5")]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["convert", str(path), "--lake", str(tmp_path / "lake")]) == 2
    assert "source.paths: no input matches" in capsys.readouterr().err


def test_cli_reports_unknown_runner_in_one_line(robomimic_raw, tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(robomimic_spec(robomimic_raw)))
    assert main(["convert", str(path), "--lake", str(tmp_path / "lake"), "--runner=NoSuchRunner"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Unexpected pipeline runner: NoSuchRunner" in err[0]
    assert not (tmp_path / "lake/gold").exists()


def test_set_overrides_nested_fields_and_list_items(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(robomimic_spec(Path("raw"))))
    spec = load_spec(str(path), ["splits.fractions.train=0.7", "splits.fractions.val=0.2", "splits.fractions.test=0.1",
                                 "cameras.1.size=[48, 48]",
                                 "name=renamed", "output.steps_per_shard=7"])
    assert spec.splits.fractions == {"train": 0.7, "val": 0.2, "test": 0.1}
    assert spec.cameras[1].size == (48, 48) and spec.name == "renamed" and spec.output.steps_per_shard == 7


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("splits.fractions.train", "expected KEY=VALUE"),
        ("name.first=x", "'first'"),
        ("colour=red", "colour: unknown field"),
        ("splits.fractions.train=0.9", "fractions must be >= 0 and sum to 1"),
    ],
)
def test_bad_set_override_is_one_clear_error(tmp_path, capsys, assignment, expected):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(robomimic_spec(Path("raw"))))
    assert main(["convert", str(path), "--set", assignment]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
