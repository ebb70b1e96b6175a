"""What each episode is about: metadata (task, object, lighting, ...) and the table layout.

The distributions are deliberately skewed (most episodes are bright-light red-cube
picks by operator_0) so that coverage reports have gaps to flag. Every episode draws
from its own random streams, children of SeedSequence([seed, index]), so episode i is
the same whatever the number of episodes, and its metadata can be drawn without
drawing anything else."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robolake.sample import exact

TASKS = {"pick": 0.60, "place": 0.25, "push": 0.15}
OBJECTS = {"cube": 0.50, "cylinder": 0.30, "prism": 0.20}
COLORS = {"red": 0.45, "green": 0.25, "blue": 0.20, "yellow": 0.10}
SCENES = {"wood_table": 0.70, "white_table": 0.30}
LIGHTINGS = {"bright": 0.65, "dim": 0.20, "warm": 0.10, "side": 0.05}
OPERATORS = {"operator_0": 0.60, "operator_1": 0.30, "operator_2": 0.10}
PUSH_DIRECTIONS = {"left": (0.0, 1.0), "right": (0.0, -1.0), "forward": (1.0, 0.0), "back": (-1.0, 0.0)}

INSTRUCTIONS = {
    "pick": [
        "pick up the {color} {object}",
        "grab the {color} {object} and lift it",
        "lift the {color} {object} off the table",
        "pick the {color} {object} up",
    ],
    "place": [
        "put the {color} {object} on the plate",
        "place the {color} {object} onto the plate",
        "move the {color} {object} to the plate",
        "pick up the {color} {object} and set it down on the plate",
    ],
    "push": [
        "push the {color} {object} {direction}",
        "slide the {color} {object} {direction}",
        "nudge the {color} {object} {direction} along the table",
    ],
}
DIRECTION_WORDS = {"left": "to the left", "right": "to the right", "forward": "away from you", "back": "towards you"}

# Size of each shape in metres: (footprint width, height); the gripper closes to the width.
OBJECT_SIZE = {"cube": (0.05, 0.05), "cylinder": (0.05, 0.06), "prism": (0.055, 0.045)}
PLATE_RADIUS, PLATE_HEIGHT = 0.07, 0.012
WORKSPACE = ((0.38, 0.62), (-0.18, 0.18))  # x, y ranges where objects stand

# Children of SeedSequence([seed, index]), one per concern, so that e.g. rendering changes
# never shift the metadata or the motion of an episode.
STREAMS = ("metadata", "layout", "motion", "clock", "render", "transport")


def episode_streams(seed: int, index: int) -> dict[str, np.random.SeedSequence]:
    children = np.random.SeedSequence([seed, index]).spawn(len(STREAMS))
    return dict(zip(STREAMS, children))


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    return names[int(rng.choice(len(names), p=np.array(list(weights.values())) / sum(weights.values())))]


@dataclass(frozen=True)
class EpisodeMeta:
    task: str
    object: str
    color: str
    scene: str
    lighting: str
    operator: str
    language_instruction: str
    direction: str = ""  # push tasks only: one of PUSH_DIRECTIONS

    def attrs(self) -> dict[str, str]:
        """The per-episode metadata fields written to HDF5 attributes, bag sidecars and the manifest."""
        return {
            "task": self.task, "object": self.object, "color": self.color, "scene": self.scene,
            "lighting": self.lighting, "operator": self.operator, "language_instruction": self.language_instruction,
        }


def sample_metadata(rng: np.random.Generator) -> EpisodeMeta:
    task, obj, color = _choice(rng, TASKS), _choice(rng, OBJECTS), _choice(rng, COLORS)
    scene, lighting, operator = _choice(rng, SCENES), _choice(rng, LIGHTINGS), _choice(rng, OPERATORS)
    direction = str(rng.choice(list(PUSH_DIRECTIONS))) if task == "push" else ""
    template = INSTRUCTIONS[task][int(rng.integers(len(INSTRUCTIONS[task])))]
    instruction = template.format(color=color, object=obj, direction=DIRECTION_WORDS.get(direction, ""))
    return EpisodeMeta(task, obj, color, scene, lighting, operator, instruction, direction)


def episode_metadata(seed: int, index: int) -> EpisodeMeta:
    """Episode `index`'s metadata alone (cheap: no motion, no rendering)."""
    return sample_metadata(np.random.default_rng(episode_streams(seed, index)["metadata"]))


@dataclass(frozen=True)
class Prop:
    """A static or movable thing on the table: centre of its footprint at table height, yaw."""

    shape: str  # cube / cylinder / prism / plate
    color: str
    x: float
    y: float
    yaw: float

    @property
    def size(self) -> tuple[float, float]:
        return (2 * PLATE_RADIUS, PLATE_HEIGHT) if self.shape == "plate" else OBJECT_SIZE[self.shape]


@dataclass(frozen=True)
class Layout:
    target: Prop  # the object the instruction names
    props: tuple[Prop, ...]  # distractors and, for place, the plate
    plate: Prop | None
    home: np.ndarray  # start end-effector [x, y, z, yaw]
    speed: float  # how fast this operator moves, relative to nominal


def _free_spot(rng: np.random.Generator, taken: list[tuple[float, float]], clearance: float) -> tuple[float, float]:
    (x0, x1), (y0, y1) = WORKSPACE
    for _ in range(100):
        x, y = float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))
        if all(float(exact.hypot(x - a, y - b)) >= clearance for a, b in taken):
            return x, y
    return x, y  # crowded: accept an overlap rather than loop forever


def sample_layout(meta: EpisodeMeta, rng: np.random.Generator) -> Layout:
    """Where the target, one or two distractors and (for place) the plate stand; the start pose."""
    # Keep room in the push direction so the pushed object stays on the workspace.
    dx, dy = PUSH_DIRECTIONS.get(meta.direction, (0.0, 0.0))
    (x0, x1), (y0, y1) = WORKSPACE
    x = float(rng.uniform(x0 + max(0, -dx) * 0.12, x1 - max(0, dx) * 0.12))
    y = float(rng.uniform(y0 + max(0, -dy) * 0.12, y1 - max(0, dy) * 0.12))
    target = Prop(meta.object, meta.color, x, y, float(rng.uniform(-np.pi / 4, np.pi / 4)))
    taken = [(x, y)] + ([(x + 0.12 * dx, y + 0.12 * dy)] if meta.direction else [])
    plate = None
    if meta.task == "place":
        plate = Prop("plate", "plate", *_free_spot(rng, taken, 0.16), 0.0)
        taken.append((plate.x, plate.y))
    props = [plate] if plate else []
    for _ in range(int(rng.integers(1, 3))):
        shape = str(rng.choice([s for s in OBJECT_SIZE if s != meta.object]))
        color = str(rng.choice([c for c in COLORS if c != meta.color]))
        spot = _free_spot(rng, taken, 0.11)
        taken.append(spot)
        props.append(Prop(shape, color, *spot, float(rng.uniform(-np.pi, np.pi))))
    home = rng.uniform([0.32, -0.05, 0.22, -0.2], [0.38, 0.05, 0.27, 0.2])
    return Layout(target, tuple(props), plate, home, float(rng.uniform(0.85, 1.2)))
