"""meta/modality.json for NVIDIA GR00T (`robolake lerobot --modality`).

GR00T N1 reads LeRobot datasets with a meta/modality.json that names sub-ranges of the
concatenated `observation.state` and `action` vectors, maps its video keys to the
dataset's and names the language annotation (Isaac-GR00T's
getting_started/LeRobot_compatible_data_schema.md):

- action: one entry per action name of the gold spec, one dimension each;
- state: one entry per part the spec concatenates into the state (HDF5 datasets, RLDS
  step features, rosbag topics), named by its last path segment, with the widths the
  conversion recorded in the manifest (`state_layout`); one entry `state` over the whole
  vector where there is none (a lake mixture, a version converted before it was recorded);
- video: one entry per camera, named by the camera;
- annotation: `human.task_description`, the LeRobot task (`task_index`)."""

from __future__ import annotations

import re

from robolake.lake import GoldVersion

TASK_ANNOTATION = "human.task_description"


def modality_document(gold: GoldVersion, features: dict, cameras: list[str]) -> dict:
    """modality.json for an export of `gold` with info.json's `features`."""
    state_dim = features["observation.state"]["shape"][0]
    return {
        "state": _ranges(state_parts(gold, state_dim)),
        "action": _ranges([(name, 1) for name in features["action"]["names"]]),
        "video": {camera: {"original_key": f"observation.images.{camera}"} for camera in cameras},
        "annotation": {TASK_ANNOTATION: {"original_key": "task_index"}},
    }


def _ranges(parts: list[tuple[str, int]]) -> dict[str, dict[str, int]]:
    """Consecutive {"start", "end"} ranges of (name, width) parts."""
    ranges, start = {}, 0
    for name, width in parts:
        ranges[name] = {"start": start, "end": start + width}
        start += width
    return ranges


def state_parts(gold: GoldVersion, state_dim: int) -> list[tuple[str, int]]:
    """(name, width) of each part of the state vector, from the manifest's `state_layout`
    (recorded at conversion); [("state", state_dim)] where it has none."""
    layout = gold.manifest.get("state_layout")
    if not layout:
        return [("state", state_dim)]
    names = _unique([_part_name(part["name"]) for part in layout])
    return [(name, part["end"] - part["start"]) for name, part in zip(names, layout)]


def _part_name(text: str) -> str:
    """`obs/robot0_eef_pos` -> robot0_eef_pos, `/arm/joint_states` -> joint_states,
    `steps/observation/state[0:6]` -> state_0_6."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", text.rstrip("/").rsplit("/", 1)[-1]).strip("_") or "state"


def _unique(names: list[str]) -> list[str]:
    """The names, a repeated one suffixed with its position."""
    return [name if names.count(name) == 1 else f"{name}_{i}" for i, name in enumerate(names)]
