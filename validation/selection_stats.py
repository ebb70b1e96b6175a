"""`robolake stats NAME[:VERSION] --where "<condition>"`: the statistics of any selection
of a version's episodes, merged from their rows in the silver `episode_stats` table
(robolake.statistics.VectorStats.row) without reading a step or a frame.

The merge is exact where the statistic is mergeable: counts, min and max exactly, mean
and std by the pooled (Chan et al.) formulas, and quantiles from the summed sketch
counts, i.e. the same sketch a fresh pass over the selected steps would build. Averaging
per-episode quantiles, as LeRobot's stats aggregation does, would not give this."""

from __future__ import annotations

import argparse
import json
import sys
import time

import duckdb
import numpy as np
import pyarrow as pa

from robolake import progress
from robolake.arguments import ArgumentParser
from robolake.errors import RobolakeError
from robolake.lake import Lake
from robolake.lake_views import connect_version
from robolake.names import dataset_argument
from robolake.sql import one_line, parse_condition
from robolake.statistics import VectorStats

SPLITS = ("train", "val", "test", "all")


def _vectors(table: pa.Table, column: str) -> np.ndarray:
    """A list column of equal-length lists as a (rows, width) array."""
    values = table.column(column).combine_chunks()
    return values.flatten().to_numpy(zero_copy_only=False).reshape(len(values), -1)


def _flat(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False)


def merged_vector_stats(table: pa.Table, prefix: str, dims: int) -> VectorStats:
    """VectorStats of every row of `table` (episode_stats columns `<prefix>_*`)."""
    return VectorStats.from_rows(
        dims, table.column(f"{prefix}_count").to_numpy(),
        *(_vectors(table, f"{prefix}_{name}") for name in ("mean", "m2", "min", "max")),
        _flat(table, f"{prefix}_sketch_keys"), _flat(table, f"{prefix}_sketch_counts"),
    )


def merged_pixels(table: pa.Table, camera: str) -> dict:
    """Per-channel mean and std ([0, 1]) of a camera over the rows' frames."""
    pixels = table.column(f"camera_{camera}_pixels").to_numpy()
    means, m2s = _vectors(table, f"camera_{camera}_mean"), _vectors(table, f"camera_{camera}_m2")
    total = int(pixels.sum())
    mean = (pixels[:, None] * means).sum(axis=0) / total
    m2 = m2s.sum(axis=0) + (pixels[:, None] * (means - mean) ** 2).sum(axis=0)
    return {"mean": mean.tolist(), "std": np.sqrt(m2 / total).tolist(), "pixels": total}


def selection_statistics(lake: Lake, reference: str, where: str | None, split: str = "train") -> dict:
    """The merged statistics of the episodes of `reference` in `split` (or all) that meet
    `where`, a DuckDB condition over the `episodes` view."""
    target = lake.resolve(reference)
    con = connect_version(lake, target, ("episodes", "episode_stats"), materialize=False)
    episodes, rows = con.table("episodes"), con.table("episode_stats")
    if split != "all":  # on both sides: DuckDB then skips the other splits' partitions
        in_split = duckdb.ColumnExpression("split") == duckdb.ConstantExpression(split)
        episodes, rows = episodes.filter(in_split), rows.filter(in_split)
    try:
        if where:
            episodes = episodes.filter(parse_condition(where, "--where"))
        table = rows.join(episodes.select("episode_id"), "episode_id", how="semi").to_arrow_table()
    except duckdb.Error as exc:
        raise RobolakeError(f"--where {where!r}: {one_line(exc)}") from None
    finally:
        con.close()
    if not table.num_rows:
        chosen = ([f"({where})"] if where else []) + ([f"split = '{split}'"] if split != "all" else [])
        raise RobolakeError(f"{target.dataset}:{target.version}: no episode meets {' AND '.join(chosen) or 'true'}")
    action = merged_vector_stats(table, "action", len(target.spec.action.names))
    state = merged_vector_stats(table, "state", target.manifest["state_dim"])
    return {
        "dataset": target.dataset, "version": target.version, "split": split, "where": where,
        "num_trajectories": table.num_rows, "num_transitions": action.count,
        "action_names": list(target.spec.action.names),
        "action": action.result(), "proprio": state.result(),
        "cameras": {cam.name: merged_pixels(table, cam.name) for cam in target.spec.cameras},
    }


def _table(statistics: dict) -> str:
    """One line per action and state dimension."""
    keys = ("mean", "std", "min", "q01", "median", "q99", "max")
    lines = [f"{'dimension':<12}" + "".join(f"{key:>12}" for key in keys)]
    for group, names in (("action", statistics["action_names"]),
                         ("proprio", [f"state[{i}]" for i in range(len(statistics["proprio"]["mean"]))])):
        for d, name in enumerate(names):
            lines.append(f"{name:<12}" + "".join(f"{statistics[group][key][d]:>12.5g}" for key in keys))
    for name, pixels in statistics["cameras"].items():
        mean, std = (", ".join(f"{v:.4f}" for v in pixels[key]) for key in ("mean", "std"))
        lines.append(f"camera {name}: RGB mean [{mean}], std [{std}] over {pixels['pixels']} pixels")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="robolake stats",
        description="Statistics of a selection of a version's episodes, merged from the silver episode_stats rows.",
        epilog="""e.g. robolake stats sample_tabletop --where "task = 'pick'" """,
    )
    parser.add_argument("dataset", type=dataset_argument, help="NAME or NAME:VERSION (default: the latest version)")
    parser.add_argument("--where", help="one DuckDB expression over the episodes view (robolake query's columns)")
    parser.add_argument("--split", choices=SPLITS, default="train",
                        help="episodes of this split only (default: train, what dataset_statistics.json holds)")
    parser.add_argument("--lake", default="lake", help="lake root folder (default: lake)")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.time()
    statistics = selection_statistics(Lake(args.lake), args.dataset, args.where, args.split)
    sys.stdout.write(json.dumps(statistics, indent=2) + "\n" if args.json else _table(statistics))
    progress.console.print(
        f"stats {statistics['dataset']}:{statistics['version']}: {statistics['num_trajectories']} {args.split} episodes, "
        f"{statistics['num_transitions']} steps merged from episode_stats in {time.time() - started:.2f} s")
    return 0
