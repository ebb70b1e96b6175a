"""Actions derived from consecutive poses (`delta: pose`): position change and the
base-frame rotation change as roll/pitch/yaw, R = Rz(yaw) Ry(pitch) Rx(roll) as in ROS tf."""

from __future__ import annotations

import numpy as np

from pipelines.rosbag_source import pose_deltas, roll_pitch_yaw


def quaternion(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """[x y z w] of Rz(yaw) Ry(pitch) Rx(roll), by the textbook formula."""
    cr, sr, cp, sp, cy, sy = (f(a / 2) for a in (roll, pitch, yaw) for f in (np.cos, np.sin))
    return np.array([sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
                     cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy])


def rotation(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_roll_pitch_yaw_inverts_the_textbook_quaternion():
    angles = np.array([[0.1, -0.2, 0.3], [-1.0, 0.5, 2.5], [0.0, 0.0, -3.0]])
    np.testing.assert_allclose(roll_pitch_yaw(np.stack([quaternion(*a) for a in angles])), angles, atol=1e-12)
    np.testing.assert_allclose(roll_pitch_yaw(np.array([[0.0, 0.0, 0.0, 1.0]])), [[0, 0, 0]], atol=1e-12)


def test_pose_deltas_are_base_frame_rotation_changes_and_position_differences():
    start = quaternion(0.2, -0.1, 0.5)
    step = quaternion(0.05, 0.02, -0.03)
    # the next orientation is the start rotated by `step` in the base frame: R1 = Rstep R0
    next_q = _from_matrix(rotation(step) @ rotation(start))
    poses = np.array([[0.1, 0.2, 0.3, *start], [0.15, 0.18, 0.31, *(-next_q)]])  # -q is the same rotation
    np.testing.assert_allclose(pose_deltas(poses), [[0.05, -0.02, 0.01, 0.05, 0.02, -0.03]], atol=1e-9)


def _from_matrix(m: np.ndarray) -> np.ndarray:
    w = np.sqrt(1 + np.trace(m)) / 2
    return np.array([(m[2, 1] - m[1, 2]) / (4 * w), (m[0, 2] - m[2, 0]) / (4 * w), (m[1, 0] - m[0, 1]) / (4 * w), w])
