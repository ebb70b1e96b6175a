"""The state layout of the manifest ([{"name", "start", "end"}] per part of the state
vector; GR00T's modality.json and the quality metrics' position columns read it), for the
readers whose spec concatenates the state from named parts (HDF5 datasets, RLDS
features, ROS topics): each part's width is what a reader of that part alone reads."""

from __future__ import annotations

from collections.abc import Callable

from robolake.spec import DatasetSpec
from robolake.spec.fields import StateSpec


def layout_of_parts(reader: Callable[[DatasetSpec], object], spec: DatasetSpec, parts: list[tuple[str, StateSpec]],
                    path: str, state_dim: int) -> list[dict] | None:
    """The layout of `parts` (name, the StateSpec of that part alone) as read from the input
    `path` by `reader` (a reader class); None where a width cannot be read or the widths
    don't add up to `state_dim`."""
    widths = [reader(spec.model_copy(update={"state": part})).state_width(path) for _, part in parts]
    if not parts or None in widths or sum(widths) != state_dim:
        return None
    layout, start = [], 0
    for (name, _), width in zip(parts, widths):
        layout.append({"name": name, "start": start, "end": start + width})
        start += width
    return layout
