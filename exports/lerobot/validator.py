"""`validate_export(root)`: a LeRobot v3.0 folder checked against what LeRobotDataset reads
(robolake/lerobot_layout.py): info.json keys and features, tasks, episode rows, video files (frames,
stream info) and timestamps, split ranges, data rows and index columns, stats shapes, and
GR00T's meta/modality.json where there is one."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robolake.lerobot_layout import (CODEBASE_VERSION, EPISODE_COLUMNS, INDEX_FEATURES, INFO_KEYS, VIDEO_COLUMNS,
                                     arrow_type, data_file, episode_files, video_file, video_keys)
from robolake.lerobot_video import video_frames, video_info

STAT_KEYS = ("min", "max", "mean", "std", "count")


class _Stop(Exception):
    """Problems that leave nothing further to check; `args` are the problems."""


def validate_export(root: str) -> list[str]:
    """Problems with the LeRobot v3.0 dataset folder `root`; [] when it is consistent."""
    problems: list[str] = []
    try:
        info = _read_info(root)
        problems += _check_info(info)
        tasks = _read_tasks(root)
        problems += _check_tasks(tasks, info)
        episodes = _read_episodes(root, info)
        problems += _check_episodes(root, info, episodes, tasks)
        problems += _check_video_files(root, info, episodes)
        problems += _check_splits(info)
        problems += _check_data(root, info, episodes, tasks)
        problems += _check_stats(info, _read_stats(root))
        problems += _check_modality(root, info)
    except _Stop as stop:
        problems += stop.args
    return problems


def _read_info(root: str) -> dict:
    try:
        with open(os.path.join(root, "meta", "info.json"), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as exc:
        raise _Stop(f"meta/info.json: {exc}") from None
    missing = [f"meta/info.json: no {key}" for key in INFO_KEYS if key not in info]
    if missing:
        raise _Stop(*missing)
    return info


def _check_info(info: dict) -> list[str]:
    """The codebase version and the features' names, dtypes and shapes."""
    problems = []
    if info["codebase_version"] != CODEBASE_VERSION:
        problems.append(f"meta/info.json: codebase_version {info['codebase_version']!r}, not {CODEBASE_VERSION!r}")
    features = info["features"]
    problems += [f"meta/info.json: feature {key} missing" for key in INDEX_FEATURES if key not in features]
    for key, feature in features.items():
        if "/" in key or not {"dtype", "shape", "names"} <= set(feature):
            problems.append(f"meta/info.json: feature {key}: bad name or no dtype/shape/names")
        elif feature["dtype"] in ("image", "video") and len(feature["shape"]) != 3:
            problems.append(f"meta/info.json: feature {key}: image shape {feature['shape']} is not (h, w, c)")
    if video_keys(info) and not info["video_path"]:
        problems.append("meta/info.json: video features but no video_path")
    return problems


def _read_tasks(root: str) -> dict[str, list]:
    """meta/tasks.parquet as {"task": [...], "task_index": [...]}."""
    try:
        return pq.read_table(os.path.join(root, "meta", "tasks.parquet"), columns=["task", "task_index"]).to_pydict()
    except (OSError, KeyError, pa.ArrowException) as exc:
        raise _Stop(f"meta/tasks.parquet: {exc}") from None


def _check_tasks(tasks: dict[str, list], info: dict) -> list[str]:
    names, index = tasks["task"], tasks["task_index"]
    problems = []
    if sorted(index) != list(range(len(index))) or len(set(names)) != len(names):
        problems.append("meta/tasks.parquet: task_index is not 0..n-1 over distinct tasks")
    if len(names) != info["total_tasks"]:
        problems.append(f"meta/tasks.parquet: {len(names)} tasks, info.json says {info['total_tasks']}")
    return problems


def _read_episodes(root: str, info: dict) -> list[dict]:
    """The rows of meta/episodes, which must have every column LeRobotDataset reads."""
    files = episode_files(root)
    if not files:
        raise _Stop("meta/episodes: no parquet file")
    episodes = pa.concat_tables([pq.read_table(path) for path in files]).to_pylist()
    required = list(EPISODE_COLUMNS) + [f"videos/{key}/{column}" for key in video_keys(info)
                                        for column in VIDEO_COLUMNS]
    missing = [column for column in required if column not in (episodes[0] if episodes else {})]
    if missing:
        raise _Stop(f"meta/episodes: columns missing: {missing}")
    return episodes


def _check_episodes(root: str, info: dict, episodes: list[dict], tasks: dict[str, list]) -> list[str]:
    """Episode indices in order, contiguous frame ranges, known tasks, existing data and video files."""
    total_episodes, problems = info["total_episodes"], []
    if [e["episode_index"] for e in episodes] != list(range(total_episodes)):
        problems.append(f"meta/episodes: episode_index is not 0..{total_episodes - 1} in order")
    expected_from = 0
    for e in episodes:
        where = f"meta/episodes: episode {e['episode_index']}"
        if e["dataset_from_index"] != expected_from or e["dataset_to_index"] - e["dataset_from_index"] != e["length"]:
            problems.append(f"{where}: dataset_from/to_index not contiguous or not matching length {e['length']}")
        expected_from = e["dataset_to_index"]
        if not set(e["tasks"]) <= set(tasks["task"]):
            problems.append(f"{where}: tasks {e['tasks']} not in meta/tasks.parquet")
        if not os.path.exists(os.path.join(root, data_file(info, e))):
            problems.append(f"{where}: its data file is missing")
        problems += _check_episode_videos(root, info, e, where)
    if expected_from != info["total_frames"]:
        problems.append(f"meta/episodes: frames add up to {expected_from}, info.json says {info['total_frames']}")
    return problems


def _check_episode_videos(root: str, info: dict, episode: dict, where: str) -> list[str]:
    """Each of an episode's video files exists and its timestamps span its length."""
    problems = []
    for key in video_keys(info):
        path = os.path.join(root, video_file(info, episode, key))
        span = episode[f"videos/{key}/to_timestamp"] - episode[f"videos/{key}/from_timestamp"]
        if not os.path.exists(path):
            problems.append(f"{where}: video {path} is missing")
        elif abs(span - episode["length"] / info["fps"]) > 1e-6:
            problems.append(f"{where}: {key} spans {span} s for {episode['length']} frames at {info['fps']} fps")
    return problems


def _check_video_files(root: str, info: dict, episodes: list[dict]) -> list[str]:
    """Each video file holds at least the frames its episodes point into, and its stream
    is what the feature's `info` says."""
    problems, fps = [], info["fps"]
    for key in video_keys(info):
        ends: dict[str, float] = {}
        for e in episodes:
            path = video_file(info, e, key)
            ends[path] = max(ends.get(path, 0.0), e[f"videos/{key}/to_timestamp"])
        said = info["features"][key].get("info", {})
        for path, end in ends.items():
            frames = video_frames(os.path.join(root, path))
            if frames < round(end * fps):
                problems.append(f"{path}: {frames} frames, episodes need {round(end * fps)}")
            actual = video_info(os.path.join(root, path))
            wrong = {k: v for k, v in actual.items() if said.get(k) != v}
            if wrong:
                problems.append(f"{path}: the stream has {wrong}, meta/info.json says otherwise for {key}")
    return problems


def _check_splits(info: dict) -> list[str]:
    """The splits' `start:end` ranges cover 0:total_episodes without gaps."""
    total = info["total_episodes"]
    spans = sorted(tuple(int(x) for x in span.split(":")) for span in info["splits"].values())
    if not spans or spans[0][0] != 0 or spans[-1][1] != total or any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
        return [f"meta/info.json: splits {info['splits']} do not cover 0:{total} contiguously"]
    return []


def _check_data(root: str, info: dict, episodes: list[dict], tasks: dict[str, list]) -> list[str]:
    """Every data file, and their rows adding up to total_frames."""
    bounds = {e["episode_index"]: (e["dataset_from_index"], e["length"]) for e in episodes}
    problems, rows = [], 0
    for path in sorted(glob.glob(os.path.join(root, "data", "*", "*.parquet"))):
        file_problems, file_rows = _check_data_file(root, path, info, bounds, set(tasks["task_index"]))
        problems += file_problems
        rows += file_rows
    if rows != info["total_frames"]:
        problems.append(f"data: {rows} rows, info.json says total_frames {info['total_frames']}")
    return problems


def _check_data_file(root: str, path: str, info: dict, bounds: dict[int, tuple[int, int]],
                     task_indices: set[int]) -> tuple[list[str], int]:
    """A data file's problems (columns and types as the features say, index columns matching
    the episode rows, timestamps, task indices) and its row count."""
    name, features = os.path.relpath(path, root), info["features"]
    columns = [key for key, feature in features.items() if feature["dtype"] != "video"]
    schema = pq.read_schema(path)
    if sorted(schema.names) != sorted(columns):
        return [f"{name}: columns {sorted(schema.names)}, features say {sorted(columns)}"], 0
    problems = [f"{name}: {key} is {schema.field(key).type}, not {arrow_type(features[key])}"
                for key in columns if schema.field(key).type != arrow_type(features[key])]
    table = pq.read_table(path, columns=list(INDEX_FEATURES))
    episode, index, frame = (table.column(key).to_numpy() for key in ("episode_index", "index", "frame_index"))
    for ep in np.unique(episode):
        start, length = bounds.get(int(ep), (None, None))
        mine = episode == ep
        if start is None or not np.array_equal(index[mine], np.arange(start, start + length)):
            problems.append(f"{name}: episode {ep}: index is not dataset_from..to_index")
        elif not np.array_equal(frame[mine], np.arange(length)):
            problems.append(f"{name}: episode {ep}: frame_index is not 0..length-1")
    if np.abs(table.column("timestamp").to_numpy() - frame / info["fps"]).max(initial=0) > 1e-4:
        problems.append(f"{name}: timestamp is not frame_index / fps")
    if not set(np.unique(table.column("task_index").to_numpy()).tolist()) <= task_indices:
        problems.append(f"{name}: task_index outside meta/tasks.parquet")
    return problems, table.num_rows


def _read_stats(root: str) -> dict:
    try:
        with open(os.path.join(root, "meta", "stats.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise _Stop(f"meta/stats.json: {exc}") from None


def _check_stats(info: dict, stats: dict) -> list[str]:
    """Every feature has LeRobot's stats, shaped as the feature (images: (3, 1, 1) per channel)."""
    problems = []
    for key, feature in info["features"].items():
        if key not in stats or not set(STAT_KEYS) <= set(stats[key]):
            problems.append(f"meta/stats.json: {key} lacks {list(STAT_KEYS)}")
            continue
        image = feature["dtype"] in ("image", "video")
        for stat, value in stats[key].items():
            want = (1,) if stat == "count" else (3, 1, 1) if image else tuple(feature["shape"])
            if np.shape(value) != want:
                problems.append(f"meta/stats.json: {key}/{stat} has shape {np.shape(value)}, not {want}")
    return problems


def _check_modality(root: str, info: dict) -> list[str]:
    """GR00T's meta/modality.json, where there is one: state and action ranges within their
    vectors, video and annotation keys naming features."""
    path = os.path.join(root, "meta", "modality.json")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        modality = json.load(f)
    features, problems = info["features"], []
    for group, key in (("state", "observation.state"), ("action", "action")):
        size = features[key]["shape"][0]
        for name, span in modality.get(group, {}).items():
            if not 0 <= span["start"] < span["end"] <= size:
                problems.append(f"meta/modality.json: {group}.{name} {span['start']}:{span['end']} is not in 0:{size}")
    for group in ("video", "annotation"):
        for name, entry in modality.get(group, {}).items():
            key = entry.get("original_key")
            if key not in features:
                problems.append(f"meta/modality.json: {group}.{name} names {key!r}, not a feature")
    return problems
