"""Gold RLDS version -> LeRobotDataset, codebase v3.0 layout (`robolake lerobot`).

- robolake/lerobot_layout.py and robolake/lerobot_video.py (shared with the `source.format: lerobot`
  reader): the v3.0 folder layout (path templates, info.json) and the video codec;
- writer.py: `export(gold_dir, out_dir)`: streams the gold episodes into data Parquet, MP4
  videos and meta/, writes provenance.json, validates, and moves the folder into place;
- video.py: the MP4 files, episodes appended, and their error against the gold frames;
- statistics.py: meta/stats.json and the episode rows' per-episode statistics;
- modality.py: GR00T's meta/modality.json (`--modality`);
- validator.py: `validate_export(root)`: checks a folder against what LeRobotDataset reads;
- command.py: `run(argv)`, the command line."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only, not its banner at each encoder start

from exports.lerobot.command import run  # noqa: E402

__all__ = ["run"]
