"""Realistic raw robot demonstrations, deterministic by seed: robomimic HDF5 sessions and
ROS 2 mcap bags of scripted tabletop pick / place / push episodes, two rendered cameras,
100 Hz joint states, 10 Hz delta end-effector actions, skewed metadata and seeded faults.

Modules: scenario (metadata and table layout), motion (scripted trajectory, actions,
joints), render (camera frames), episode (one episode's streams), hdf5_writer and
bag_writer (containers), faults (which episodes get which seeded fault, and how),
generate (write_sample: assignment, manifest, workers),
cli (the `robolake sample` command); exact (trigonometry and small matrix products) and
resample (texture resize, perspective warp) keep the bytes the same on every machine."""

from robolake.sample.episode import DEFAULT_CAMERAS, Episode, build_episode
from robolake.sample.generate import write_sample
from robolake.sample.hdf5_writer import write_aloha_file, write_robomimic_dataset, write_robomimic_file
from robolake.sample.scenario import EpisodeMeta, episode_metadata, sample_metadata

__all__ = [
    "DEFAULT_CAMERAS", "Episode", "EpisodeMeta", "build_episode", "episode_metadata", "sample_metadata",
    "write_aloha_file", "write_robomimic_dataset", "write_robomimic_file", "write_sample",
]
