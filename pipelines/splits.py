"""Split assignment and shard layout: deterministic, from episode ids and tasks only."""

from __future__ import annotations

import dataclasses
import math

from pipelines.episode import EpisodeRef, stable_hash
from robolake.spec import SplitPolicy


def assign_split(ref: EpisodeRef, policy: SplitPolicy) -> str:
    """`episode_hash`: a point in [0, 1) from the episode id's hash, placed in the
    cumulative fractions; `task`: the held-out split naming the task, else train;
    `keep`: the source's split."""
    if policy.by == "keep":
        if not ref.source_split:
            raise ValueError(f"{ref.episode_id}: splits.by is keep, but its source gives no split")
        return ref.source_split
    if policy.by == "task":
        for split, tasks in policy.held_out_tasks.items():
            if ref.task in tasks:
                return split
        return "train"
    point = int(stable_hash(ref.split_key)[:15], 16) / 16**15
    cumulative = 0.0
    for split, fraction in policy.fractions.items():
        cumulative += fraction
        if point < cumulative:
            return split
    return next(reversed(policy.fractions))


def assign_shards(refs: list[EpisodeRef], steps_per_shard: int) -> list[EpisodeRef]:
    """Lay out one split's episodes in shards of about `steps_per_shard` steps:
    ordered by a stable hash of the episode id, cut into contiguous runs."""
    ordered = sorted(refs, key=lambda r: r.order_key)
    weights = [max(1, r.num_steps) for r in ordered]
    total = sum(weights)
    num_shards = max(1, min(len(ordered), math.ceil(total / steps_per_shard)))
    placed, done = [], 0
    for ref, weight in zip(ordered, weights):
        shard = min(num_shards - 1, int((done + weight / 2) / total * num_shards))
        placed.append(dataclasses.replace(ref, shard=shard))
        done += weight
    return placed
