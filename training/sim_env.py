"""Closed-loop evaluation environments behind one gymnasium-style interface, and the
built-in `TabletopEnv`: the sample generator's tabletop scene (robolake/sample) run as
a simple kinematic simulation.

Interface (gymnasium's shape, no gymnasium dependency):

    observation, info = env.reset(seed=None, options=None)   # options: {"task": "pick", ...}
    observation, reward, terminated, truncated, info = env.step(action)   # action: (7,)
    env.close();  env.action_dim == 7;  env.max_steps;  env.camera_names

    observation = {"images": {camera: uint8 (H, W, 3) RGB}, "state": float32 (9,), "instruction": str}
    info: "success" (bool), "task" (str), "failure_mode" (one of FAILURE_MODES at the end
    of a failed episode, else None)

Actions are the dataset's 7-DoF delta end-effector commands at 10 Hz, [dx, dy, dz,
droll, dpitch, dyaw, gripper], metres and radians in the robot base frame (x forward,
z up), gripper > 0 closes and <= 0 opens (the sample writes +1 closed, -1 open:
robolake/sample/motion.py). The state is the dataset's state vector (datasets/
sample_tabletop.yaml): robot0_eef_pos (3), robot0_eef_quat (4, xyzw), robot0_gripper_qpos
(2, [+w/2, -w/2]); see STATE_NAMES.

Other simulators plug in behind the same interface with a thin adapter class:

- robosuite (MuJoCo): `robosuite.make(env_name, robots="Panda", controller_configs=
  load_controller_config(default_controller="OSC_POSE"), use_camera_obs=True,
  camera_names=[...], control_freq=10)` (robosuite 1.4; 1.5 builds the OSC_POSE arm part
  with load_composite_controller_config). Images from `obs[f"{camera}_image"]` (flipped
  vertically: MuJoCo renders bottom-up); state = concat(obs["robot0_eef_pos"],
  obs["robot0_eef_quat"], obs["robot0_gripper_qpos"]) -- the same keys as the robomimic
  HDF5 this dataset mirrors. OSC_POSE takes [dx, dy, dz, dax, day, daz, gripper] scaled
  to [-1, 1] (divide the metre/radian deltas by the controller's output_max) with
  gripper -1 open / +1 closed, as here. success from `env._check_success()`, truncate at
  `horizon`; the instruction comes from the task (robosuite has none).
- ManiSkill: `gymnasium.make(env_id, obs_mode="rgbd", control_mode="pd_ee_delta_pose")`.
  Images from `obs["sensor_data"][camera]["rgb"]`, state from the TCP pose
  `obs["extra"]["tcp_pose"]` (position + wxyz quaternion: reorder to xyzw) and the gripper
  qpos from `obs["agent"]["qpos"][-2:]`; its gripper action is +1 open / -1 closed, so
  negate ours; `info["success"]` as is.
- LIBERO (robosuite underneath): `OffScreenRenderEnv(bddl_file_name=..., camera_heights=..,
  camera_widths=..)`. Images `obs["agentview_image"]` -> "front" and
  `obs["robot0_eye_in_hand_image"]` -> "wrist" (both flipped vertically), state as for
  robosuite, the instruction is the task's `language`; actions as robosuite's OSC_POSE;
  success from `env.check_success()`.

Each adapter maps `options["task"]` to its task, returns `failure_mode` "timeout" when it
knows no better, and is registered in `make_env`.

Failure modes (FAILURE_MODES), the cause of a failed tabletop episode:

- "left workspace": the tool left TOOL_BOUNDS; this ends the episode at once.
- "missed grasp" (pick, place): the object was never grasped (the fingers never closed,
  or closed but not around it).
- "missed contact" (push): the tool never touched the object.
- "dropped": pick: the object was grasped, then released before it reached LIFT_HEIGHT
  and not grasped again; place: the latest release was off the plate and more than
  DROP_HEIGHT above the table, so the object fell.
- "wrong place": place: the object was set down on the table off the plate (released
  within DROP_HEIGHT of the table); push: the object was moved but ended more than
  PUSH_TOLERANCE from the goal, with the tool no longer against it.
- "timeout": the step limit came while the task was still under way: pick or place
  still holding the object, push still holding or touching it.

The tabletop simulation is kinematic: the tool centre point integrates the position and
yaw deltas (roll and pitch stay pointing down, as in the sample), the fingers move at the
sample's gripper speed; closing the fingers on the target object grasps it (it then
moves rigidly with the tool), opening drops it onto the table (or the plate). Closed
fingers low on the table push the object away from the tool. Distractors and the plate
are scenery; nothing collides. Frames come from the sample's Renderer, so they look
like the dataset's."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np

from robolake.errors import RobolakeError
from robolake.sample.episode import DEFAULT_CAMERAS, build_episode, gripper_qpos
from robolake.sample.motion import (
    CONTROL_HZ,
    GRIPPER_MOVE_S,
    MAX_STEPS,
    OPEN_WIDTH,
    Trajectory,
    episode_steps,
    joint_positions,
    quat_xyzw,
)
from robolake.sample.render import Renderer
from robolake.sample.scenario import (
    COLORS,
    DIRECTION_WORDS,
    INSTRUCTIONS,
    LIGHTINGS,
    OBJECTS,
    OPERATORS,
    PLATE_HEIGHT,
    PLATE_RADIUS,
    PUSH_DIRECTIONS,
    SCENES,
    EpisodeMeta,
    Layout,
    Prop,
    episode_streams,
    sample_layout,
    sample_metadata,
)

STATE_NAMES = ["eef_x", "eef_y", "eef_z", "eef_qx", "eef_qy", "eef_qz", "eef_qw", "gripper_qpos_0", "gripper_qpos_1"]
DEFAULT_MAX_STEPS = MAX_STEPS + 20  # the longest scripted sample episode, plus room to recover

MAX_STEP_TRANSLATION = 0.05  # m per 10 Hz step (0.5 m/s): larger commands are clipped
MAX_STEP_YAW = 0.3  # rad per step
TOOL_BOUNDS = ((0.15, 0.85), (-0.45, 0.45), (0.0, 0.45))  # leaving them ends the episode
FINGER_SPEED = OPEN_WIDTH / (GRIPPER_MOVE_S * CONTROL_HZ)  # m per step: open to closed in GRIPPER_MOVE_S
GRASP_TOLERANCE = 0.02  # m between the tool centre and the object's axis for a grasp
PUSHER_RADIUS = 0.025  # m from the tool axis to the outside of the closed fingers
LIFT_HEIGHT = 0.10  # m of the object's base above the table: a pick succeeds
PUSH_TOLERANCE = 0.03  # m from the push goal: a push succeeds
DROP_HEIGHT = 0.02  # m of the object's base above the table: released off the plate higher, it was dropped
CONTACT_SLACK = 0.002  # m beyond contact distance that still counts as the tool touching the object
FAILURE_MODES = ("left workspace", "missed grasp", "missed contact", "dropped", "wrong place", "timeout")

# Metadata that options may fix; those that shape the instruction are drawn, not overwritten.
METADATA_VALUES = {
    "task": list(INSTRUCTIONS), "object": list(OBJECTS), "color": list(COLORS), "direction": list(PUSH_DIRECTIONS),
    "scene": list(SCENES), "lighting": list(LIGHTINGS), "operator": list(OPERATORS),
}
INSTRUCTION_FIELDS = ("task", "object", "color", "direction")
MAX_METADATA_DRAWS = 100_000
SWAP_OPTION = "swap_instruction"  # reset option: name the scene's first distractor instead of its target


class EnvPolicy(Protocol):
    """What run_rollouts drives: one action per observation; reset at each episode start."""

    def act(self, observation: dict[str, Any]) -> np.ndarray: ...

    def reset(self) -> None: ...


class RuntimePolicyAdapter:
    """A learned runtime policy (`act(images, instruction, state) -> result.actions (1, 7)`)
    as an EnvPolicy."""

    def __init__(self, policy):
        self.policy = policy
        self.last_entropy: float | None = None  # the last action's mean token entropy (nats), for recordings

    def act(self, observation: dict[str, Any]) -> np.ndarray:
        result = self.policy.act(observation["images"], observation["instruction"], observation["state"])
        self.last_entropy = float(result.entropy[0])
        return np.asarray(result.actions[0])

    def reset(self) -> None:
        self.policy.reset()


def conditioned_metadata(rng: np.random.Generator, fixed: dict[str, str]) -> EpisodeMeta:
    """The sample's metadata draw conditioned on `fixed`: the fields the instruction names
    (task, object, color, direction) by redrawing until they match, the others set."""
    for name, value in fixed.items():
        if name not in METADATA_VALUES:
            raise RobolakeError(f"unknown reset option {name!r}: "
                                f"expected max_steps, {SWAP_OPTION} or one of {list(METADATA_VALUES)}")
        if value not in METADATA_VALUES[name]:
            raise RobolakeError(f"reset option {name}={value!r}: expected one of {METADATA_VALUES[name]}")
    if "direction" in fixed and fixed.get("task", "push") != "push":
        raise RobolakeError("reset option direction: only push tasks have a direction")
    drawn = {k: v for k, v in fixed.items() if k in INSTRUCTION_FIELDS}
    if "direction" in drawn:
        drawn["task"] = "push"
    for _ in range(MAX_METADATA_DRAWS):
        meta = sample_metadata(rng)
        if all(getattr(meta, k) == v for k, v in drawn.items()):
            return dataclasses.replace(meta, **{k: v for k, v in fixed.items() if k not in INSTRUCTION_FIELDS})
    raise RobolakeError(f"no sample metadata matches {drawn} in {MAX_METADATA_DRAWS} draws")


def swap_instruction(meta: EpisodeMeta, layout: Layout) -> tuple[EpisodeMeta, Layout, Prop | None]:
    """The same scene with its first distractor named instead of its target: the
    instruction from the same template (same task, direction) naming that object, which
    becomes the target the env moves and judges success on, while the original target
    stays where it was as scenery. Also returns the original target; a scene without a
    distractor comes back unchanged, with None."""
    named = next((prop for prop in layout.props if prop is not layout.plate), None)
    if named is None:
        return meta, layout, None
    words = DIRECTION_WORDS.get(meta.direction, "")
    template = next(t for t in INSTRUCTIONS[meta.task]
                    if t.format(color=meta.color, object=meta.object, direction=words) == meta.language_instruction)
    instruction = template.format(color=named.color, object=named.shape, direction=words)
    props = tuple(layout.target if prop is named else prop for prop in layout.props)
    return (dataclasses.replace(meta, object=named.shape, color=named.color, language_instruction=instruction),
            dataclasses.replace(layout, target=named, props=props), layout.target)


def _rotate(xy: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * xy[0] - s * xy[1], s * xy[0] + c * xy[1]])


def yaw_from_state(state: np.ndarray) -> float:
    """Inverse of motion.quat_xyzw for a tool pointing down: the yaw in the state's quaternion."""
    return float(2.0 * np.arctan2(state[4], state[3]))


@dataclasses.dataclass
class SceneState:
    """The simulated poses, [x, y, z, yaw] (object: its base centre). Stands in for the
    sample's Trajectory in its Renderer: every time asked gets the current poses."""

    tool_pose: np.ndarray
    object_pose: np.ndarray
    finger_width: float

    def tool(self, t: np.ndarray) -> np.ndarray:
        return np.tile(self.tool_pose, (len(t), 1))

    def object(self, t: np.ndarray) -> np.ndarray:
        return np.tile(self.object_pose, (len(t), 1))

    def width(self, t: np.ndarray) -> np.ndarray:
        return np.full(len(t), self.finger_width)


class TabletopEnv:
    """The sample's tabletop scene, closed loop. Episode k after `reset(seed=s)` is the
    sample's episode (s, k): the same metadata, layout and render noise streams (with
    `task` or other metadata fixed by options, it is drawn from episode k's stream).

    `cameras` are render sizes (height, width): the default is the sample's (front
    480x640, wrist 240x320; ~7 ms a step for both); smaller sizes with the same aspect
    keep the same view and cost ~5 ms. `max_steps` can also be set per episode with
    `options["max_steps"]`; `options["swap_instruction"]` (SWAP_OPTION) gives the
    episode's scene with another object named (swap_instruction; the original target is
    then `swapped_target`, else None)."""

    action_dim = 7

    def __init__(self, cameras: dict[str, tuple[int, int]] = DEFAULT_CAMERAS, max_steps: int = DEFAULT_MAX_STEPS):
        self.cameras = dict(cameras)
        self.camera_names = list(self.cameras)
        self.max_steps = max_steps
        self._episode_max_steps = max_steps
        self.seed, self.index = 0, -1
        self.meta: EpisodeMeta | None = None
        self.layout: Layout | None = None
        self.swapped_target: Prop | None = None
        self.steps = 0
        self._done = True

    # ---- gymnasium API ----

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        options = dict(options or {})
        if seed is not None:
            self.seed, self.index = int(seed), 0
        else:
            self.index += 1
        self._episode_max_steps = int(options.pop("max_steps", self.max_steps))
        swap = bool(options.pop(SWAP_OPTION, False))
        streams = {name: np.random.default_rng(seq) for name, seq in episode_streams(self.seed, self.index).items()}
        self.meta = conditioned_metadata(streams["metadata"], options)
        self.layout = sample_layout(self.meta, streams["layout"])
        self.swapped_target = None
        if swap:
            self.meta, self.layout, self.swapped_target = swap_instruction(self.meta, self.layout)
        target = self.layout.target
        self.scene = SceneState(self.layout.home.copy(), np.array([target.x, target.y, 0.0, target.yaw]), OPEN_WIDTH)
        # Where the sample's scripted motion leaves the object: the push goal.
        self.goal = Trajectory(self.meta, self.layout, 1.0).object_poses[-1]
        captures = {name: self._episode_max_steps + 1 for name in self.cameras}
        self.renderer = Renderer(self.meta, self.layout, self.scene, self.cameras, captures, streams["render"])
        self.steps, self._done = 0, False
        self.holding, self.ever_grasped, self.ever_moved = False, False, False
        self._grip = np.zeros(4)  # held object's pose in the tool frame: x, y, z, yaw
        self._released_on_target: bool | None = None  # the latest release, if any
        self._released_from = 0.0  # the object's base height above the table at the latest release
        info = {"success": False, "task": self.meta.task, "failure_mode": None, "seed": self.seed,
                "index": self.index, **self.meta.attrs(), "direction": self.meta.direction}
        return self._observation(), info

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        if self._done:
            raise RuntimeError("the episode is over: call reset() first")
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (self.action_dim,) or not np.all(np.isfinite(action)):
            raise ValueError(f"expected a finite action of shape ({self.action_dim},), got {action}")
        self.steps += 1
        self._move(action[:3], action[5])
        released = self._actuate_fingers(close=action[6] > 0)
        self._push()
        left_workspace = not all(lo <= v <= hi for v, (lo, hi) in zip(self.scene.tool_pose[:3], TOOL_BOUNDS))
        success = self._succeeded(released)
        terminated = success or left_workspace
        truncated = not terminated and self.steps >= self._episode_max_steps
        self._done = terminated or truncated
        failure = None
        if self._done and not success:
            failure = "left workspace" if left_workspace else self._failure_mode()
        info = {"success": success, "task": self.meta.task, "failure_mode": failure, "holding": self.holding}
        return self._observation(), float(success), terminated, truncated, info

    def close(self) -> None:
        self.renderer = None

    # ---- kinematics ----

    def _move(self, translation: np.ndarray, yaw: float) -> None:
        """Integrate the deltas (clipped to the speed limits); the tool stops at the table,
        or the held object does."""
        pose = self.scene.tool_pose.copy()
        pose[:3] += np.clip(translation, -MAX_STEP_TRANSLATION, MAX_STEP_TRANSLATION)
        pose[3] += np.clip(yaw, -MAX_STEP_YAW, MAX_STEP_YAW)
        pose[2] = max(pose[2], -self._grip[2] if self.holding else 0.0)
        self.scene.tool_pose = pose
        if self.holding:
            xy = pose[:2] + _rotate(self._grip[:2], pose[3])
            self.scene.object_pose = np.array([*xy, pose[2] + self._grip[2], pose[3] + self._grip[3]])

    def _actuate_fingers(self, close: bool) -> bool:
        """Move the fingers one step; closing around the object grasps it, opening drops
        it (onto the plate if it is over it). Returns whether it was released."""
        width = self.scene.finger_width
        if not close:
            self.scene.finger_width = min(OPEN_WIDTH, width + FINGER_SPEED)
            if self.holding:
                self.holding = False
                obj = self.scene.object_pose.copy()
                self._released_from = float(obj[2])
                obj[2] = PLATE_HEIGHT if self._over_plate(obj) else 0.0
                self.scene.object_pose = obj
                self._released_on_target = bool(self._over_plate(obj))
                return True
            return False
        if self.holding:
            return False
        object_width, object_height = self.layout.target.size
        tool, obj = self.scene.tool_pose, self.scene.object_pose
        closed = max(0.0, width - FINGER_SPEED)
        around = (np.hypot(*(tool[:2] - obj[:2])) <= GRASP_TOLERANCE
                  and obj[2] <= tool[2] <= obj[2] + object_height and width > object_width)
        if around and closed <= object_width:
            self.holding, self.ever_grasped = True, True
            offset = obj - tool
            self._grip = np.array([*_rotate(offset[:2], -tool[3]), offset[2], offset[3]])
            closed = object_width
        self.scene.finger_width = closed
        return False

    def _contact_distance(self) -> float | None:
        """How far from the tool axis closed fingers reach the object's axis; None while
        they cannot push it (open, holding it, or above its top)."""
        object_width, object_height = self.layout.target.size
        tool, obj = self.scene.tool_pose, self.scene.object_pose
        if self.holding or self.scene.finger_width >= object_width or tool[2] >= obj[2] + object_height:
            return None
        return 0.5 * object_width + PUSHER_RADIUS

    def _push(self) -> None:
        """Closed fingers lower than the object's top push it out to contact distance."""
        contact = self._contact_distance()
        if contact is None:
            return
        tool, obj = self.scene.tool_pose, self.scene.object_pose
        away = obj[:2] - tool[:2]
        distance = np.hypot(*away)
        if 1e-9 < distance < contact:
            self.scene.object_pose = np.array([*(tool[:2] + away * contact / distance), obj[2], obj[3]])
            self.ever_moved = True

    def _over_plate(self, obj: np.ndarray) -> bool:
        plate = self.layout.plate
        return plate is not None and np.hypot(obj[0] - plate.x, obj[1] - plate.y) <= PLATE_RADIUS

    # ---- outcome ----

    def _succeeded(self, released: bool) -> bool:
        obj = self.scene.object_pose
        if self.meta.task == "pick":
            return bool(self.holding and obj[2] >= LIFT_HEIGHT)
        if self.meta.task == "place":
            return bool(released and self._released_on_target)
        return bool(not self.holding and obj[2] == 0.0 and np.hypot(*(obj[:2] - self.goal[:2])) <= PUSH_TOLERANCE)

    def _touching(self) -> bool:
        contact = self._contact_distance()
        distance = np.hypot(*(self.scene.object_pose[:2] - self.scene.tool_pose[:2]))
        return contact is not None and distance <= contact + CONTACT_SLACK

    def _failure_mode(self) -> str:
        """Why an episode that ran out of steps failed, other than leaving the workspace
        (see FAILURE_MODES in the module docstring)."""
        if self.meta.task == "push":
            if not (self.ever_moved or self.ever_grasped):
                return "missed contact"
            return "timeout" if self.holding or self._touching() else "wrong place"
        if not self.ever_grasped:
            return "missed grasp"
        if self.holding:
            return "timeout"
        if self.meta.task == "pick" or self._released_from > DROP_HEIGHT:
            return "dropped"
        return "wrong place"

    def _observation(self) -> dict[str, Any]:
        tool, width = self.scene.tool_pose, self.scene.finger_width
        fingers = gripper_qpos(joint_positions(tool[None], np.array([width])))[0]
        state = np.concatenate([tool[:3], quat_xyzw(tool[3]), fingers]).astype(np.float32)
        images = {name: self.renderer.frame(name, self.steps, 0.0) for name in self.camera_names}
        return {"images": images, "state": state, "instruction": self.meta.language_instruction}


class ScriptedPolicy:
    """The expert: the sample's min-jerk script for the env's current episode (the same
    duration as the generated demonstration), closed loop: each action steers from the
    observed end-effector pose to where the script is one step later."""

    def __init__(self, env: TabletopEnv):
        self.env = env
        self.reset()

    def reset(self) -> None:
        self._trajectory: Trajectory | None = None
        self._step = 0

    def act(self, observation: dict[str, Any]) -> np.ndarray:
        if self._trajectory is None:
            meta, layout = self.env.meta, self.env.layout
            self._trajectory = Trajectory(meta, layout, episode_steps(meta, layout) / CONTROL_HZ)
        now = np.array([self._step / CONTROL_HZ])
        target = self._trajectory.tool(now + 1.0 / CONTROL_HZ)[0]
        self._step += 1
        state = observation["state"].astype(np.float64)
        dyaw = np.angle(np.exp(1j * (target[3] - yaw_from_state(state))))
        return np.array([*(target[:3] - state[:3]), 0.0, 0.0, dyaw, self._trajectory.gripper(now)[0]])


def sample_action_range(episodes: int = 20, seed: int = 0, coverage: float = 0.98) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension central `coverage` range of the sample demonstrations' actions."""
    actions = np.concatenate([build_episode(seed, index, cameras={}).actions for index in range(episodes)])
    tail = 50.0 * (1.0 - coverage)
    return np.percentile(actions, tail, axis=0), np.percentile(actions, 100.0 - tail, axis=0)


class RandomPolicy:
    """Uniform actions within the sample demonstrations' typical ranges (sample_action_range);
    episode k after construction draws from stream (seed, k)."""

    def __init__(self, seed: int = 0, low: np.ndarray | None = None, high: np.ndarray | None = None):
        if low is None or high is None:
            low, high = sample_action_range()
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        self.seed, self.episodes = seed, 0

    def reset(self) -> None:
        self.rng = np.random.default_rng([self.seed, self.episodes])
        self.episodes += 1

    def act(self, observation: dict[str, Any]) -> np.ndarray:
        return self.rng.uniform(self.low, self.high)


class ConstantPolicy:
    """The same action every step: with a dataset's mean action (dataset_statistics.json's
    action.mean), the mean-action baseline a learned policy has to beat."""

    def __init__(self, action: np.ndarray):
        self.action = np.asarray(action, np.float64)

    def reset(self) -> None:
        pass

    def act(self, observation: dict[str, Any]) -> np.ndarray:
        return self.action


EXTERNAL_SIMULATORS = {"robosuite": "robosuite", "maniskill": "mani_skill", "libero": "libero"}


def make_env(name: str, **kwargs):
    """The environment called `name`: "tabletop" (built in, kwargs go to TabletopEnv) or an
    external simulator ("robosuite", "maniskill", "libero"; see the module docstring)."""
    if name == "tabletop":
        return TabletopEnv(**kwargs)
    if name not in EXTERNAL_SIMULATORS:
        raise RobolakeError(f"unknown environment {name!r}: expected tabletop or one of {sorted(EXTERNAL_SIMULATORS)}")
    package = EXTERNAL_SIMULATORS[name]
    try:
        __import__(package)
    except ImportError as error:
        raise RobolakeError(f"environment {name!r} needs the {package!r} package, which is not installed "
                            f"(pip install {package.replace('_', '-')})") from error
    raise RobolakeError(f"{package} is installed but has no adapter here yet: wrap it as described "
                        f"in training/sim_env.py's docstring and register it in make_env")
