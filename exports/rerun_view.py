"""`robolake view NAME[:VERSION] [--episode ID ...] [--where COND] [--limit N] -o OUT.rrd
[--spawn]`: chosen episodes of a published version as a Rerun recording (docs/view.md).

Episodes are chosen in SQL over the episodes view and their episode_quality columns
(robolake/lake_views.py), read from gold (frames as their stored JPEG/PNG bytes, actions,
state, instruction) and from silver (each step's index and timestamp, the episode's
metadata and quality row, the action values the outlier filter flagged), and written
through robolake/rerun_recording.py, one episode at a time. Under
`/episodes/<episode_id>/`: `cameras/<camera>` (encoded images), `action/<name>` (source
units), `action_normalized/<name>` (what the policy trains on), `state/<part>/<k>` (named
from the manifest's state layout), `instruction`, `metadata` and `quality` (documents) and
`quality/events` (a text log at the steps a finding concerns: robolake/episode_events.py,
and the filter's flags). Timelines: `step` (the steps view's step_index) and `time`
(seconds since the episode's first step)."""

from __future__ import annotations

import argparse
import difflib
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import duckdb
import numpy as np
import rerun as rr
from rerun.chunk import RrdReader
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from robolake import progress
from robolake import rerun_recording as rec
from robolake.arguments import ArgumentParser, positive_int
from robolake.episode_events import WARN, episode_events
from robolake.errors import RobolakeError
from robolake.lake import EPISODE_QUALITY, GoldVersion, Lake
from robolake.lake_views import available_views, connect_version, episodes_with_quality
from robolake.names import dataset_argument
from robolake.overwrite import check_replace
from robolake.pins import reading
from robolake.sql import one_line, parse_condition
from robolake.staging import staged
from robolake.storage import is_remote

ID_COLUMNS = ("dataset", "version", "episode_id")


# ---------------------------------------------------------------- choosing episodes

def _sql_list(values: list[str]) -> str:
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


def choose_episodes(con: duckdb.DuckDBPyConnection, target: GoldVersion, episode_ids: list[str],
                    where: str | None, limit: int | None) -> list[str]:
    """The ids, in id order, of the episodes named by `episode_ids` (all of them, when
    given) that meet `where` (a DuckDB condition over the episodes view and its quality
    columns), at most `limit`. One clear error for an unknown id or an empty choice."""
    reference = f"{target.dataset}:{target.version}"
    known = [row[0] for row in con.sql("SELECT episode_id FROM episodes ORDER BY episode_id").fetchall()]
    present = set(known)
    unknown = [episode_id for episode_id in episode_ids if episode_id not in present]
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"its ids run {known[0]!r} .. {known[-1]!r}"
        raise RobolakeError(f"--episode {unknown[0]!r}: no such episode in {reference} ({len(known)} episodes; {hint})")
    relation = episodes_with_quality(con)
    if episode_ids:
        relation = relation.filter(f"episode_id IN ({_sql_list(episode_ids)})")
    try:
        if where:
            relation = relation.filter(parse_condition(where, "--where"))
        chosen = [row[0] for row in relation.project("episode_id").order("episode_id").fetchall()]
    except duckdb.Error as exc:
        raise RobolakeError(f"--where {where!r}: {one_line(exc)}") from None
    if not chosen:
        asked = " AND ".join(([f"episode_id IN ({_sql_list(episode_ids)})"] if episode_ids else [])
                             + ([f"({where})"] if where else []))
        raise RobolakeError(f"{reference}: no episode meets {asked}")
    return chosen[:limit] if limit else chosen


def _rows_by_episode(con: duckdb.DuckDBPyConnection, query: str) -> dict[str, list[dict]]:
    cursor = con.execute(query)
    names = [d[0] for d in cursor.description]
    rows: dict[str, list[dict]] = {}
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        rows.setdefault(row["episode_id"], []).append(row)
    return rows


class SilverFacts:
    """What silver holds of the chosen episodes: their episodes rows, quality rows, each
    curated step's index and timestamp, and the action values the outlier filter flagged."""

    def __init__(self, con: duckdb.DuckDBPyConnection, ids: list[str]):
        chosen = f"episode_id IN ({_sql_list(ids)})"
        views = available_views(con)
        self.episodes = {e: rows[0] for e, rows in _rows_by_episode(
            con, f"SELECT * FROM episodes WHERE {chosen}").items()}
        self.quality = ({e: rows[0] for e, rows in _rows_by_episode(
            con, f"SELECT * FROM {EPISODE_QUALITY} WHERE {chosen}").items()} if EPISODE_QUALITY in views else None)
        self.steps = _rows_by_episode(
            con, f"SELECT episode_id, step_index, timestamp FROM steps WHERE {chosen} ORDER BY episode_id, step_index")
        self.filtered = (_rows_by_episode(con, f"SELECT * FROM filtered WHERE {chosen} ORDER BY step_index")
                         if "filtered" in views else {})


# ---------------------------------------------------------------- reading gold

def gold_episodes(target: GoldVersion, splits: dict[str, list[str]]) -> Iterator[dict]:
    """The episodes named per split, read from gold (frames encoded), in shard order."""
    import tensorflow as tf

    builder = target.builder()
    cameras = target.layout(builder)["cameras"]

    def unpack(episode):
        steps = episode["steps"].batch(episode["steps"].cardinality()).get_single_element()
        return {"id": episode["episode_metadata"]["episode_id"],
                "images": {name: steps["observation"][name] for name in cameras},
                "state": steps["observation"]["state"], "action": steps["action"], "action_raw": steps["action_raw"],
                "instruction": steps["language_instruction"]}

    for split, ids in splits.items():
        wanted = tf.constant(ids)
        episodes = target.episodes(split, builder=builder).filter(
            lambda episode: tf.reduce_any(tf.equal(episode["episode_metadata"]["episode_id"], wanted)))
        found = 0
        for episode in episodes.map(unpack).as_numpy_iterator():
            yield {**episode, "id": episode["id"].decode()}
            found += 1
            if found == len(ids):
                break


# ---------------------------------------------------------------- writing

def state_names(manifest: dict) -> list[str]:
    """One name per state dimension from the manifest's state layout (`<part>/<k>`, the
    part's last path component: `robot0_eef_pos/0`), `<i>` where the layout names none."""
    names = [str(i) for i in range(manifest["state_dim"])]
    for part in manifest.get("state_layout") or []:
        label = part["name"].strip("/").rsplit("/", 1)[-1] or "state"
        for k, i in enumerate(range(part["start"], part["end"])):
            names[i] = f"{label}/{k}"
    return names


def _format(value) -> str:
    if isinstance(value, float):
        return "null" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    return "null" if value is None else str(value)


def _quality_document(row: dict | None, action_names: list[str], located: int) -> str:
    if row is None:
        return "No episode_quality row: the version was built before the table (docs/quality.md)."
    skip = {*ID_COLUMNS, "split"}
    lines = []
    for name, value in row.items():
        if name in skip or (name.endswith("_reason") and value is None):
            continue
        if name == "action_static_share" and value is not None and len(value) == len(action_names):
            value = ", ".join(f"{n} {v:.2f}" for n, v in zip(action_names, value))
        lines.append((name, _format(value)))
    return (f"Behaviour metrics of the episode (episode_quality, docs/quality.md); {located} findings located "
            f"at their steps in quality/events.\n\n" + rec.markdown_table(lines, ("metric", "value")))


def _metadata_document(row: dict, target: GoldVersion) -> str:
    rows = [(name, _format(value)) for name, value in row.items() if not name.startswith("camera_")]
    return f"Episode of {target.dataset}:{target.version} (the episodes view).\n\n" + rec.markdown_table(rows)


def _filtered_text(row: dict) -> str:
    outcome = {"clip": f"clipped to {_format(row.get('replacement'))}", "drop_step": "step dropped",
               "quarantine": "episode quarantined"}.get(row["policy"], row["policy"])
    return f"outlier filter ({row['rule']}): {row['dimension']} = {_format(row['value'])}, {outcome}"


def write_episode(stream: rr.RecordingStream, episode: dict, silver: SilverFacts, target: GoldVersion,
                  names: list[str], state: list[str]) -> int:
    """One gold episode into the recording; returns the number of annotations logged."""
    episode_id = episode["id"]
    steps = silver.steps.get(episode_id, [])
    length = len(episode["action"])
    if len(steps) != length:
        raise RobolakeError(f"{target.dataset}:{target.version} episode {episode_id!r}: gold has {length} steps, "
                            f"the silver steps table {len(steps)}; rebuild it with robolake convert --overwrite")
    step_index = np.array([s["step_index"] for s in steps], np.int64)
    stamps = np.array([s["timestamp"] for s in steps], np.float64)
    finite = length and np.all(np.isfinite(stamps))
    seconds = stamps - stamps[0] if finite else np.arange(length) / target.spec.control_rate_hz
    root = rec.entity("episodes", episode_id)
    index = rec.timelines(step_index, seconds)
    for camera, frames in episode["images"].items():
        rec.send_frames(stream, f"{root}/cameras/{rr.escape_entity_path_part(camera)}", list(frames), index)
    rec.send_series(stream, f"{root}/action", names, episode["action_raw"], index)
    rec.send_series(stream, f"{root}/action_normalized", names, episode["action"], index)
    rec.send_series(stream, f"{root}/state", state, episode["state"], index)
    instructions = list(dict.fromkeys(text.decode() for text in episode["instruction"]))
    rec.log_document(stream, f"{root}/instruction", "\n\n".join(instructions))
    rec.log_document(stream, f"{root}/metadata", _metadata_document(silver.episodes[episode_id], target))
    quality = silver.quality.get(episode_id) if silver.quality is not None else None
    floors = (quality["idle_floor_translation"], quality["idle_floor_rotation"]) if quality else None
    events = episode_events(episode["action_raw"], names, target.spec.control_rate_hz, stamps,
                            {camera: list(frames) for camera, frames in episode["images"].items()}, floors)
    for event in events:
        rec.log_event(stream, f"{root}/quality/events", int(step_index[event.position]),
                      float(seconds[event.position]), event.text, event.level)
    kept = dict(zip(step_index.tolist(), seconds.tolist()))
    flagged = silver.filtered.get(episode_id, [])
    for row in flagged:  # a dropped step has no time: it is on the step timeline only
        rec.log_event(stream, f"{root}/quality/events", row["step_index"], kept.get(row["step_index"]),
                      _filtered_text(row), WARN)
    rec.log_document(stream, f"{root}/quality", _quality_document(quality, names, len(events) + len(flagged)))
    return len(events) + len(flagged)


# ---------------------------------------------------------------- the command

def _is_robolake_recording(path: str) -> bool:
    """A Rerun recording that robolake wrote (its application id)."""
    try:
        return any(r.application_id == rec.APPLICATION_ID for r in RrdReader(path).recordings())
    except (OSError, ValueError, RuntimeError):
        return False


def spawn_viewer(path: str) -> None:
    """Open the Rerun viewer on `path`, detached; a RobolakeError where none can open."""
    viewer = shutil.which("rerun") or shutil.which("rerun", path=os.path.dirname(sys.executable))
    if viewer is None:
        raise RobolakeError(f"--spawn: no Rerun viewer here (no `rerun` command); {path} is written: open it with "
                            f"`rerun {path}` where rerun-sdk is installed")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RobolakeError(f"--spawn: no display to open the viewer on (DISPLAY and WAYLAND_DISPLAY are unset); "
                            f"{path} is written: open it with `rerun {path}` on a machine with a screen")
    subprocess.Popen([viewer, path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="robolake view",
        description="Write chosen episodes of a version as a Rerun recording (.rrd): frames, actions, state, "
                    "instruction, metadata and quality annotations on step and time timelines.",
        epilog="""e.g. robolake view sample_tabletop --where "gripper_reversals > 0" --limit 3 -o chatter.rrd""")
    parser.add_argument("dataset", type=dataset_argument, help="NAME or NAME:VERSION (default: the latest version)")
    parser.add_argument("--episode", action="append", default=[], metavar="ID",
                        help="an episode id (repeat for more)")
    parser.add_argument("--where", help="one DuckDB condition over the episodes view and its episode_quality "
                                        "columns (robolake query's), e.g. \"idle_share > 0.5\"")
    parser.add_argument("--limit", type=positive_int, help="at most N episodes (the first by id)")
    parser.add_argument("-o", "--out", required=True, help="the recording to write (OUT.rrd, a local file)")
    parser.add_argument("--spawn", action="store_true", help="open the Rerun viewer on it once written")
    parser.add_argument("--lake", default="lake", help="lake root folder (default: lake)")
    args = parser.parse_args(argv)
    if not (args.episode or args.where or args.limit):
        parser.error("choose episodes: --episode ID, --where CONDITION or --limit N (the first N by id)")
    return args


@reading("view")
def run(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.time()
    if is_remote(args.out) or not args.out.endswith(".rrd"):
        raise RobolakeError(f"-o {args.out}: a Rerun recording is a local file named *.rrd")
    lake = Lake(args.lake)
    target = lake.resolve(args.dataset)
    check_replace(args.out, "a Rerun recording", True, _is_robolake_recording, keep_out={"the lake": lake.root})
    con = connect_version(lake, target, ("episodes", "steps"))
    try:
        ids = choose_episodes(con, target, args.episode, args.where, args.limit)
        silver = SilverFacts(con, ids)
    finally:
        con.close()
    splits: dict[str, list[str]] = {}
    for episode_id in ids:
        splits.setdefault(silver.episodes[episode_id]["split"], []).append(episode_id)
    names, state = list(target.spec.action.names), state_names(target.manifest)
    reference = f"{target.dataset}:{target.version}"
    steps = annotations = 0
    written: list[str] = []
    with staged(args.out) as path, rec.recording(path, f"{reference} {' '.join(ids)}") as stream, \
            Progress(TextColumn(f"view {reference}"), BarColumn(), MofNCompleteColumn(), TextColumn("episodes"),
                     TimeElapsedColumn(), console=progress.console, transient=True) as bar:
        task = bar.add_task("view", total=len(ids))
        for episode in gold_episodes(target, splits):
            annotations += write_episode(stream, episode, silver, target, names, state)
            steps += len(episode["action"])
            written.append(episode["id"])
            bar.advance(task)
        if len(written) != len(ids):
            missing = sorted(set(ids) - set(written))
            raise RobolakeError(f"{reference}: silver lists {missing[0]!r} but gold holds no such episode; "
                                f"rebuild the version with robolake convert --overwrite")
    cameras = len(target.spec.cameras)
    progress.console.print(
        f"view {reference}: {len(ids)} episode{'s' if len(ids) != 1 else ''}, {steps} steps, {cameras} cameras, "
        f"{annotations} annotations -> "
        f"{args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB) in {time.time() - started:.1f} s; "
        f"open it with `rerun {args.out}`")
    if args.spawn:
        spawn_viewer(args.out)
    return 0
