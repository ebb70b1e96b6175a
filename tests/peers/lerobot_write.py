"""Run by tests/test_lerobot_source.py with the lerobot venv's python (tests/peers/lerobot_venv.sh):
`python lerobot_write.py ROOT MODE` writes a small dataset with the real LeRobotDataset.create,
add_frame and save_episode (MODE video: MP4s, libsvtav1, files capped at 10 kB and 2 files per
chunk folder, so that several episodes share an MP4 and there are several files and chunk
folders; MODE image: PNG images in the data Parquet). 7 episodes of 9 to 15 frames at 15 fps,
48x64 frames, a 4-wide state and a 3-wide action with names, two tasks."""

import sys

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

TASKS = ("push the block left", "lift the cup")


def main(root: str, mode: str) -> None:
    features = {
        "observation.images.cam": {"dtype": "video" if mode == "video" else "image", "shape": (48, 64, 3),
                                   "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (4,), "names": ["x", "y", "z", "gripper"]},
        "action": {"dtype": "float32", "shape": (3,), "names": ["dx", "dy", "gripper"]},
    }
    dataset = LeRobotDataset.create("robolake/peer_written", fps=15, features=features, root=root,
                                    use_videos=mode == "video")
    if mode == "video":
        dataset.meta.update_chunk_settings(chunks_size=2, video_files_size_in_mb=0.01)
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:48, 0:64]
    for episode in range(7):
        for step in range(9 + episode):
            shade = (rows * 3 + cols * 2 + step * 9 + episode * 40) % 256
            image = np.stack([shade, (shade + 85) % 256, np.full_like(shade, 40 * episode)], -1).astype(np.uint8)
            dataset.add_frame({"observation.images.cam": image,
                               "observation.state": rng.normal(size=4).astype(np.float32),
                               "action": rng.normal(size=3).astype(np.float32),
                               "task": TASKS[episode % 2]})
        dataset.save_episode()
    dataset.finalize()


if __name__ == "__main__":
    main(*sys.argv[1:])
