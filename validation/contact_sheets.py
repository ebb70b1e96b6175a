"""Contact sheets of episodes for the coverage report: FRAMES frames of one camera evenly
spaced over the episode (the first and last included), read from the silver steps table
(one row group per episode, the encoded bytes gold stores), scaled to TILE_HEIGHT px and
tiled in one row, as a small JPEG."""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from robolake.lake import Lake
from robolake.storage import join, list_files, parquet_file

FRAMES = 6
TILE_HEIGHT = 48  # px
GAP = 2  # px between tiles
JPEG_QUALITY = 80


class ContactSheet(NamedTuple):
    jpeg: bytes
    width: int  # px
    height: int


def _row_groups(files: list[str]) -> dict[str, list[tuple[str, int]]]:
    """Episode id -> the (file, row group) pairs that hold its steps, from the row groups'
    episode_id statistics (read from the column where a writer kept none)."""
    found: dict[str, list[tuple[str, int]]] = {}
    for path in files:
        with parquet_file(path) as parquet:
            column = parquet.schema_arrow.get_field_index("episode_id")
            for group in range(parquet.num_row_groups):
                stats = parquet.metadata.row_group(group).column(column).statistics
                if stats is not None and stats.has_min_max and stats.min == stats.max:
                    ids = {stats.min}
                else:
                    ids = set(parquet.read_row_group(group, columns=["episode_id"]).column(0).to_pylist())
                for episode_id in ids:
                    found.setdefault(episode_id, []).append((path, group))
    return found


def tile(frames: list[np.ndarray]) -> ContactSheet | None:
    """Decoded frames (BGR) scaled to TILE_HEIGHT and laid side by side, as a JPEG."""
    if not frames:
        return None
    tiles = [cv2.resize(f, (max(1, round(f.shape[1] * TILE_HEIGHT / f.shape[0])), TILE_HEIGHT),
                        interpolation=cv2.INTER_AREA) for f in frames]
    width = sum(t.shape[1] for t in tiles) + GAP * (len(tiles) - 1)
    sheet = np.full((TILE_HEIGHT, width, 3), 255, np.uint8)
    x = 0
    for t in tiles:
        sheet[:, x:x + t.shape[1]] = t
        x += t.shape[1] + GAP
    ok, encoded = cv2.imencode(".jpg", sheet, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return ContactSheet(encoded.tobytes(), width, TILE_HEIGHT) if ok else None


def _decoded(data: bytes | None) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None


def contact_sheets(lake: Lake, dataset: str, version: str, cameras: dict[str, str]) -> dict[str, ContactSheet]:
    """Episode id -> the contact sheet of the camera `cameras` names for it; an episode
    whose frames cannot be read or decoded has none."""
    if not cameras:
        return {}
    silver = lake.silver_partition(dataset, "steps", version)
    groups = _row_groups(list_files(join(silver, "split=*", "*.parquet")))
    sheets = {}
    for episode_id, camera in cameras.items():
        frames = []
        for path, group in groups.get(episode_id, []):
            with parquet_file(path) as parquet:
                if f"image_{camera}" not in parquet.schema_arrow.names:
                    continue
                table = parquet.read_row_group(group, columns=["episode_id", f"image_{camera}"])
            ids, images = table.column(0).to_pylist(), table.column(1).to_pylist()
            frames += [image for i, image in zip(ids, images) if i == episode_id]
        picked = np.unique(np.linspace(0, len(frames) - 1, min(FRAMES, len(frames))).round().astype(int))
        decoded = [frame for frame in (_decoded(frames[i]) for i in picked) if frame is not None]
        sheet = tile(decoded)
        if sheet is not None:
            sheets[episode_id] = sheet
    return sheets
