"""Idle heads and tails cut from a lake member's episodes (`robolake edit trim`, a member's
`trim` rule). Idle is robolake/episode_quality.py's rule (`idle_steps`, `idle_ends`, each
episode's own noise floor: the one its `episode_quality` row was computed with), applied
to the actions the new version holds.

The cut is planned on the driver, before the pipeline, from the member's curated steps
(`action_raw`, exactly what its gold stores; numeric columns only, one episode at a time),
so that the plan and the manifest know every episode's kept steps; workers then slice the
episode they read (`trimmed`)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import duckdb
import numpy as np

from pipelines.episode import Episode, EpisodeRejected
from pipelines.rlds_source import decode_frames
from pipelines.stats import CameraSummary
from robolake import episode_quality
from robolake.spec.sources import TrimRule

IDLE_THROUGHOUT = "idle_throughout"  # the quarantine reason code of an episode that never moves
BATCH_ROWS = 65536  # steps read per Arrow batch while planning


@dataclass(frozen=True)
class Trim:
    """The steps [start, stop) of one member episode that the new version keeps; start ==
    stop for an episode idle throughout (quarantined). `reason` says why an episode is kept
    whole though it was not checked (no noise floor), or why it is quarantined."""

    steps_in: int
    start: int
    stop: int
    reason: str | None = None

    @property
    def idle_throughout(self) -> bool:
        return self.start == self.stop

    @property
    def cuts(self) -> bool:
        return (self.start, self.stop) != (0, self.steps_in)

    def record(self, episode_id: str) -> dict:
        """The episode's line in the manifest and provenance: steps in, kept [start, stop) and cut."""
        if self.idle_throughout:
            return {"episode_id": episode_id, "steps_in": self.steps_in, "kept": None, "cut_head": None,
                    "cut_tail": None, "reason": self.reason}
        return {"episode_id": episode_id, "steps_in": self.steps_in, "kept": [self.start, self.stop],
                "cut_head": self.start, "cut_tail": self.steps_in - self.stop, "reason": self.reason}


def plan_trim(actions: np.ndarray, action_names: Sequence[str], rate_hz: float, rule: TrimRule) -> Trim:
    """One episode's cut: an idle head (tail) of at least `rule.min_idle_s` is cut to its
    last (first) `rule.keep_s` seconds next to the motion; shorter ones are kept whole."""
    steps = len(actions)
    idle, _ = episode_quality.idle_steps(actions, episode_quality.ActionLayout.from_names(action_names))
    if idle is None:
        return Trim(steps, 0, steps, f"{steps} steps: too few to estimate a noise floor, kept whole")
    head, tail = episode_quality.idle_ends(idle)
    if head == steps:
        return Trim(steps, 0, 0, f"idle throughout: none of its {steps} steps moves above the noise floor")
    margin = round(rule.keep_s * rate_hz)

    def cut(idle_run: int) -> int:
        return max(idle_run - margin, 0) if idle_run / rate_hz >= rule.min_idle_s - 1e-9 else 0

    return Trim(steps, cut(head), steps - cut(tail))


def episode_actions(con: duckdb.DuckDBPyConnection) -> Iterator[tuple[str, np.ndarray]]:
    """(episode id, its curated actions in source units) for each episode of a version's
    `steps` view (robolake/lake_views.py), read in Arrow batches: one episode in memory at a time."""
    reader = con.sql("SELECT episode_id, action_raw FROM steps ORDER BY episode_id, step_index").to_arrow_reader(
        BATCH_ROWS)
    current, parts = None, []
    for batch in reader:
        ids = batch.column(0).to_pylist()
        values = batch.column(1).flatten().to_numpy(zero_copy_only=False).reshape(len(ids), -1)
        start = 0
        for episode_id, rows in itertools.groupby(ids):
            stop = start + sum(1 for _ in rows)
            if episode_id != current:
                if current is not None:
                    yield current, np.concatenate(parts)
                current, parts = episode_id, []
            parts.append(values[start:stop])
            start = stop
    if current is not None:
        yield current, np.concatenate(parts)


def summary(rule: TrimRule, trims: dict[str, Trim]) -> dict:
    """The member's `trim` section of the manifest and provenance: the rule, totals and
    every episode's record (trims keyed by the member's episode ids)."""
    kept = [t for t in trims.values() if not t.idle_throughout]
    return {
        "keep_s": rule.keep_s, "min_idle_s": rule.min_idle_s,
        "episodes_trimmed": sum(t.cuts for t in kept),
        "episodes_idle_throughout": len(trims) - len(kept),
        "steps_in": sum(t.steps_in for t in trims.values()),
        "steps_kept": sum(t.stop - t.start for t in kept),
        "episodes": [trims[episode_id].record(episode_id) for episode_id in sorted(trims)],
    }


def _decoded_summary(frames: list[bytes], where: str) -> CameraSummary:
    """The pixel summary of stored (JPEG/PNG) frames, each decoded once."""
    camera = CameraSummary()
    for frame in decode_frames(where, frames):
        camera.add_frame(frame)
    return camera


def trimmed(episode: Episode, trim: Trim) -> Episode:
    """The episode's kept steps, their frames' bytes unchanged. Rewards of the cut steps
    are added to the first and last kept step (the return is kept); the terminal flag
    stays on the last step; timestamps stay unrecorded (gold stores none: the writer
    numbers the kept steps from 0 at the control rate); each camera's summary is computed
    from its kept frames, and the quality row is left to be computed again from the kept steps."""
    if episode.num_steps != trim.steps_in:
        raise EpisodeRejected("trim_mismatch", f"{episode.num_steps} steps read, but the trim was planned on "
                                               f"{trim.steps_in} from the member's steps table")
    keep = slice(trim.start, trim.stop)
    rewards = episode.rewards[keep].copy()
    rewards[0] += episode.rewards[:trim.start].sum()
    rewards[-1] += episode.rewards[trim.stop:].sum()
    images = {name: frames[keep] for name, frames in episode.images.items()}
    where = f"episode {episode.ref.episode_id}"
    return dataclasses.replace(
        episode, actions=episode.actions[keep], state=episode.state[keep], rewards=rewards, images=images,
        cameras={name: _decoded_summary(frames, f"{where}, camera {name}") for name, frames in images.items()},
        quality=None,
    )
