"""Published gold versions of the lake as a source (`source.format: lake`): the members
of a mixture (`robolake mix`), or the one version an edit derives from (`robolake edit`).

- Selection happens on the driver, before the pipeline: each member's `episodes` view
  (the one `robolake query --dataset` shows) is queried with DuckDB for the member's
  `where` and retask rules, and gives every episode's split, instruction and metadata.
  The member's weight then sets how many copies of each train episode the new version
  holds. Workers get that plan: member episode id -> choice.
- Each member's gold folder is read as an RLDS builder folder by RldsSource: ids from
  `episode_metadata/episode_id`, actions from `steps/action_raw` (the member's curated
  actions in source units, so statistics and normalization are computed afresh), frames
  resized and re-encoded to the new version's cameras, or kept byte for byte where the
  member stores them at the same size, encoding and quality: those are never decoded,
  and their pixel summary (moments, brightness, contrast) is the member's silver
  episodes row, over the frames the member ingested. Actions and state are then
  mapped to the new version's dimensions: picked by name or padded with a number, and
  state zero-padded to the widest member.
- A member's `trim` (`robolake edit trim`) cuts each kept episode's idle head and tail:
  planned here on the driver from the member's curated actions (pipelines/trim.py), an
  episode idle throughout quarantined, the others sliced as they are read.
- Episode ids: an edit keeps the member's ids; a mixture prefixes the member's name
  (`<dataset>/<id>`); the k-th copy of an episode (k >= 2) appends `#k` and is split
  with its original."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import numpy as np

from pipelines import trim
from pipelines.episode import Episode, EpisodeRef, QuarantineRecord, check_step_bounds, stable_hash
from pipelines.images import FramePreprocessor
from pipelines.rlds_source import RldsSource
from pipelines.stats import CameraSummary
from robolake import lake_views
from robolake.errors import RobolakeError
from robolake.lake import EPISODE_QUALITY, GoldVersion, Lake
from robolake.spec import LANGUAGE_INSTRUCTION, DatasetSpec, LakeMember, ValueSource, parse_spec
from robolake.sql import one_line, parse_condition

EPISODE_ID_FEATURE = "episode_metadata/episode_id"


@dataclass(frozen=True)
class Choice:
    """What the new version makes of one member episode."""

    copies: int  # 0: left out by the weight
    split: str
    instruction: str
    metadata: dict[str, str]


@dataclass(frozen=True)
class ColumnMap:
    """Target columns from a member's vector: an int picks a member column, a float is a pad value."""

    columns: tuple[int | float, ...]

    def apply(self, values: np.ndarray) -> np.ndarray:
        out = np.empty((len(values), len(self.columns)), np.float32)
        for i, column in enumerate(self.columns):
            out[:, i] = values[:, column] if isinstance(column, int) else column
        return out


def _folder_key(folder: str) -> str:
    return os.path.normpath(os.path.abspath(folder))


STORED_AS = ("size", "encoding", "jpeg_quality")  # camera fields that decide the bytes gold holds


def _member_reader(spec: DatasetSpec, member: LakeMember, version: GoldVersion,
                   where: str) -> tuple[RldsSource, dict[str, str]]:
    """The member's gold folder read as RLDS with the new version's cameras, and the
    cameras stored already as the new version stores them (target name -> member name):
    those keep their bytes."""
    member_cameras = {cam.name: cam for cam in version.spec.cameras}
    cameras, passthrough = [], {}
    for cam in spec.cameras:
        name = member.cameras.get(cam.name, cam.name)
        if name not in member_cameras:
            raise RobolakeError(f"{where}.cameras: {member.dataset} has no camera {name!r} for {cam.name!r} "
                                f"(it has {sorted(member_cameras)}); map it: cameras: {{{cam.name}: <camera>}}")
        if all(getattr(cam, field) == getattr(member_cameras[name], field) for field in STORED_AS):
            passthrough[cam.name] = name
        cameras.append({**cam.model_dump(mode="json"), "key": f"steps/observation/{name}", "channel_order": "rgb"})
    member_spec = parse_spec({
        "name": member.name, "version": member.version, "control_rate_hz": spec.control_rate_hz,
        "source": {"format": "rlds", "paths": [version.gold_dir]},
        "cameras": cameras,
        "state": {"keys": ["steps/observation/state"]},
        "action": {"keys": ["steps/action_raw"], "names": version.spec.action.names},
        "instruction": {"feature": LANGUAGE_INSTRUCTION},
        "episode_length": spec.episode_length.model_dump(mode="json"),
    }, origin=f"{where} ({member.dataset})")
    return RldsSource(member_spec, id_feature=EPISODE_ID_FEATURE, passthrough=frozenset(passthrough)), passthrough


def _action_map(spec: DatasetSpec, member: LakeMember, names: list[str], where: str) -> ColumnMap:
    columns = []
    for target in spec.action.names:
        given = member.action.get(target, target)
        if isinstance(given, str):
            if given not in names:
                raise RobolakeError(f"{where}.action: {member.dataset} has no action dimension {given!r} for "
                                    f"{target!r} (it has {names}); map it to one of those or pad it with a number")
            columns.append(names.index(given))
        else:
            columns.append(float(given))
    return ColumnMap(tuple(columns))


def _state_map(member: LakeMember, state_dim: int, width: int, where: str) -> ColumnMap:
    kept = member.state if member.state is not None else list(range(state_dim))
    bad = [i for i in kept if not 0 <= i < state_dim]
    if bad:
        raise RobolakeError(f"{where}.state: index {bad[0]} is outside {member.dataset}'s state of {state_dim}")
    return ColumnMap((*kept, *[0.0] * (width - len(kept))))


def _rows(con, query: str) -> list[dict]:
    cursor = con.execute(query)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _selected(con, condition: str, where: str, member: str) -> set[str]:
    """Ids of the member's episodes that `condition`, one SQL expression over the episodes
    view and their quality columns, selects."""
    expression = parse_condition(condition, where)
    try:
        rows = lake_views.episodes_with_quality(con).filter(expression).project("episode_id").fetchall()
    except duckdb.Error as exc:  # the user's SQL; DuckDB's message says what is wrong
        raise RobolakeError(f"{where}: {condition!r} over {member}'s episodes view: {one_line(exc)}") from None
    return {row[0] for row in rows}


def copies_by_weight(ids: list[str], weight: float) -> dict[str, int]:
    """Copies of each episode for a sampling rate: weight * n copies in all (rounded half
    up), every episode floor(weight) times and the first of them in stable-hash order once more."""
    whole, target = math.floor(weight), math.floor(weight * len(ids) + 0.5)
    extra = target - whole * len(ids)
    ordered = sorted(ids, key=stable_hash)
    return {episode_id: whole + (rank < extra) for rank, episode_id in enumerate(ordered)}


class Member:
    """One member version: its RLDS reader, column maps and the plan of its episodes."""

    def __init__(self, spec: DatasetSpec, index: int, state_width: int, version: GoldVersion, prefix: bool):
        member = spec.source.members[index]
        where = f"source.members.{index}"
        self.member = member
        self.folder = _folder_key(version.gold_dir)
        self.reader, kept_cameras = _member_reader(spec, member, version, where)
        self.state_dim = version.manifest["state_dim"]
        self.actions = _action_map(spec, member, version.spec.action.names, where)
        self.state = _state_map(member, self.state_dim, state_width, where)
        self.prefix = f"{member.name}/" if prefix else ""
        con = lake_views.connect(Lake(spec.source.lake), member.name, member.version)
        try:
            if "episodes" not in lake_views.available_views(con):
                raise RobolakeError(f"{where}: {member.dataset} has no silver episodes table in {spec.source.lake}")
            rows = {row["episode_id"]: row for row in _rows(con, "SELECT * FROM episodes")}
            self.known = set(rows)  # every episode of the member
            self.columns = {d[0] for d in con.execute("DESCRIBE episodes").fetchall()}
            self.choices, self.counts = self._plan(con, rows, spec, version, where)
            self.kept_summaries = {
                episode_id: {target: CameraSummary.from_row(*(rows[episode_id][f"camera_{name}_{column}"]
                                                              for column in ("mean", "std", "brightness", "contrast")))
                             for target, name in kept_cameras.items()}
                for episode_id in self.choices}
            self.quality = self._quality_rows(con, spec, version) if EPISODE_QUALITY in lake_views.available_views(
                con) else {}
            self.trims = self._trims(con, spec, where) if member.trim else {}
        finally:
            con.close()

    def _quality_rows(self, con, spec: DatasetSpec, version: GoldVersion) -> dict[str, dict]:
        """The member's episode_quality rows of the kept episodes, their camera columns named
        as the new version names its cameras; none where the action dimensions differ (the
        rows are then computed afresh from the mapped actions)."""
        if list(version.spec.action.names) != list(spec.action.names):
            return {}
        cameras = {cam.name: self.member.cameras.get(cam.name, cam.name) for cam in spec.cameras}
        rows = {}
        for row in _rows(con, f"SELECT * EXCLUDE (dataset, version, split) FROM {EPISODE_QUALITY}"):
            if row["episode_id"] in self.choices:
                own = {k: v for k, v in row.items() if not k.startswith("camera_")}
                for target, name in cameras.items():
                    own |= {f"camera_{target}_{k.removeprefix(f'camera_{name}_')}": v for k, v in row.items()
                            if k.startswith(f"camera_{name}_")}
                rows[row["episode_id"]] = own
        return rows

    def _trims(self, con, spec: DatasetSpec, where: str) -> dict[str, trim.Trim]:
        """Each kept episode's cut (pipelines/trim.py), planned from the member's curated
        actions mapped to the new version's; the member's counts get the `trim` section."""
        if "steps" not in lake_views.available_views(con):
            raise RobolakeError(f"{where}.trim: {self.member.dataset} has no silver steps table in "
                                f"{spec.source.lake}; rebuild it with robolake convert --overwrite")
        trims = {episode_id: trim.plan_trim(self.actions.apply(actions), spec.action.names, spec.control_rate_hz,
                                            self.member.trim)
                 for episode_id, actions in trim.episode_actions(con) if episode_id in self.choices}
        self.counts["trim"] = trim.summary(self.member.trim, trims)
        for episode_id, cut in trims.items():  # quarantined, not written
            if cut.idle_throughout:
                self.counts["episodes_by_split"][self.choices[episode_id].split] -= self.choices[episode_id].copies
        return trims

    def _plan(self, con, rows: dict[str, dict], spec: DatasetSpec, version: GoldVersion,
              where: str) -> tuple[dict[str, Choice], dict]:
        """Each kept episode's choice, and the member's counts for the manifest."""
        member = self.member
        kept = _selected(con, member.where, f"{where}.where", member.dataset) if member.where else set(rows)
        overrides: dict[str, dict[str, str]] = {}
        for i, rule in enumerate(member.retask):
            change = {k: v for k, v in (("instruction", rule.instruction), ("task", rule.task)) if v is not None}
            for episode_id in _selected(con, rule.where, f"{where}.retask.{i}.where", member.dataset) & kept:
                overrides.setdefault(episode_id, {}).update(change)
        if not kept:
            raise RobolakeError(f"{where}.where: {member.where!r} keeps none of {member.dataset}'s "
                                f"{len(rows)} episodes")
        train = sorted(i for i in kept if rows[i]["split"] == "train")
        copies = copies_by_weight(train, member.weight)
        choices = {}
        for episode_id in sorted(kept):
            row, change = rows[episode_id], overrides.get(episode_id, {})
            metadata = {field: self._text(source, row) for field, source in spec.metadata.items()}
            metadata["task"] = change.get("task", metadata.get("task", row["task"]))
            instruction = change.get("instruction") or self._text(spec.instruction, row)
            choices[episode_id] = Choice(copies.get(episode_id, 1), row["split"], instruction, metadata)
        by_split: dict[str, int] = {}
        for choice in choices.values():
            by_split[choice.split] = by_split.get(choice.split, 0) + choice.copies
        counts = {
            "dataset": member.name, "version": member.version, "weight": member.weight, "where": member.where,
            "gold_dir": version.gold_dir, "fingerprint": version.manifest["fingerprint"],
            "statistics_sha256": version.manifest.get("statistics_sha256"),
            "episodes": len(rows), "kept": len(kept), "retasked": len(overrides),
            "episodes_by_split": dict(sorted(by_split.items())),
        }
        return choices, counts

    def _text(self, source: ValueSource, row: dict) -> str:
        """A metadata or instruction value of one member episode, from its episodes row."""
        if source.value is not None:
            return source.value
        if source.file_attr is not None:
            return {"dataset": self.member.name, "version": self.member.version, "split": row["split"]}[source.file_attr]
        column = "language_instruction" if source.feature == LANGUAGE_INSTRUCTION else source.feature.split("/", 1)[1]
        value = row.get(column)
        return "" if value is None else str(value)

    def refs(self, planned: EpisodeRef) -> list[EpisodeRef]:
        """The new version's episodes for one planned member episode (none, one or copies)."""
        choice = self.choices[planned.episode_id]
        episode_id = self.prefix + planned.episode_id
        if not choice.copies:
            return []
        first = dataclasses.replace(planned, episode_id=episode_id, instruction=choice.instruction,
                                    metadata=choice.metadata, source_split=choice.split)
        copies = [dataclasses.replace(first, episode_id=f"{episode_id}#{k}", repeat_of=episode_id)
                  for k in range(2, choice.copies + 1)]
        return [first, *copies]


class LakeSource:
    """Gold versions of a lake as the pipeline sees any source (see pipelines/sources.py)."""

    def __init__(self, spec: DatasetSpec):
        self.spec = spec
        lake = Lake(spec.source.lake)
        versions = [lake.resolve(member.dataset) for member in spec.source.members]
        widths = [len(m.state) if m.state is not None else v.manifest["state_dim"]
                  for m, v in zip(spec.source.members, versions)]
        self.width = max(widths)
        prefix = len(versions) > 1
        self.members = [Member(spec, i, self.width, v, prefix) for i, v in enumerate(versions)]
        columns = set.union(*(m.columns for m in self.members))
        for field, value in spec.metadata.items():
            if value.feature and value.feature.split("/", 1)[1] not in columns:
                raise RobolakeError(f"metadata.{field}.feature: no member has {value.feature!r} "
                                    f"(their episodes have {', '.join(sorted(columns))})")

    def member(self, path: str) -> Member:
        folder = _folder_key(os.path.dirname(path))
        return next(m for m in self.members if m.folder == folder)

    def manifest_extras(self) -> dict:
        """`members`: per member, episodes there, kept by `where`, retasked, and written by
        split (copies counted)."""
        return {"members": [m.counts for m in self.members]}

    def find(self, pattern: str) -> list[tuple[str, int, float]]:
        member = next(m for m in self.members if m.folder == _folder_key(pattern))
        return member.reader.find(pattern)

    def companions(self, path: str) -> tuple[str, ...]:
        return self.member(path).reader.companions(path)

    def plan(self, path: str, relative_id: str, sha256: str) -> Iterator[EpisodeRef | QuarantineRecord]:
        member = self.member(path)
        for item in member.reader.plan(path, relative_id, sha256):
            if isinstance(item, QuarantineRecord):
                yield dataclasses.replace(item, episode_id=member.prefix + item.episode_id)
            elif item.episode_id not in member.known:
                yield QuarantineRecord(member.prefix + item.episode_id, path, sha256, "unknown_episode",
                                       f"{path}: episode {item.episode_id} is not in {member.member.dataset}'s "
                                       f"episodes table")
            elif item.episode_id in member.choices:
                cut = member.trims.get(item.episode_id)
                if cut is not None and cut.idle_throughout:
                    yield QuarantineRecord(member.prefix + item.episode_id, path, sha256, trim.IDLE_THROUGHOUT,
                                           f"{path}: episode {item.episode_id}: {cut.reason}")
                    continue
                if cut is not None:
                    item = dataclasses.replace(item, num_steps=cut.stop - cut.start)
                yield from member.refs(item)

    def read(self, ref: EpisodeRef, state_dim: int, preprocessors: dict[str, FramePreprocessor]) -> Episode:
        member = self.member(ref.source_path)
        episode = member.reader.read(ref, member.state_dim, preprocessors)
        member_id = ref.split_key.removeprefix(member.prefix)
        episode.cameras |= member.kept_summaries[member_id]
        episode.quality = member.quality.get(member_id)
        episode.actions = member.actions.apply(episode.actions)
        episode.state = member.state.apply(episode.state)
        cut = member.trims.get(member_id)
        if cut is not None and cut.cuts:
            episode = trim.trimmed(episode, cut)
            check_step_bounds(episode.num_steps, self.spec)
        return episode

    def state_width(self, path: str) -> int:
        return self.width

    def state_layout(self, path: str, state_dim: int) -> list[dict] | None:
        """None: the state is the members' gold state, whose parts the mixture may reorder."""
        return None

    def state_source(self) -> str:
        return "the members' observation/state"
