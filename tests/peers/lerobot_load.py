"""Run by tests/test_lerobot_peer.py with the lerobot venv's python (tests/peers/lerobot_venv.sh):
`python lerobot_load.py ROOT OUT.npz` loads the LeRobot dataset in ROOT with the real
LeRobotDataset (PyAV video backend; no hub: run with HF_HUB_OFFLINE=1) and saves what it
read, frame by frame, as arrays:

    action, state, episode_index, frame_index, index, timestamp, task: every frame's;
    image:<feature>: every frame of a camera, (frames, H, W, 3) uint8;
    from_index, to_index: meta/episodes' dataset_from/to_index per episode, as LeRobot read them;
    split:<name>: the `index` of every frame LeRobotDataset(episodes=<the split's range>) yields."""

import sys

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

REPO_ID = "robolake/peer_test"


def frames(dataset: LeRobotDataset) -> dict[str, np.ndarray]:
    """Every item of the dataset, stacked by key; images back to uint8 HWC."""
    items = [dataset[i] for i in range(len(dataset))]
    columns = {"action": "action", "state": "observation.state", "episode_index": "episode_index",
               "frame_index": "frame_index", "index": "index", "timestamp": "timestamp"}
    arrays = {name: np.stack([item[key].numpy() for item in items]) for name, key in columns.items()}
    arrays["task"] = np.array([item["task"] for item in items])
    for key in dataset.meta.camera_keys:
        images = np.stack([item[key].numpy() for item in items])  # float in [0, 1], channels first
        arrays[f"image:{key}"] = np.round(images * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return arrays


def main(root: str, out: str) -> None:
    dataset = LeRobotDataset(REPO_ID, root=root, video_backend="pyav")
    arrays = frames(dataset)
    arrays["from_index"] = np.array(dataset.meta.episodes["dataset_from_index"])
    arrays["to_index"] = np.array(dataset.meta.episodes["dataset_to_index"])
    for split, span in dataset.meta.info["splits"].items():
        start, end = (int(x) for x in span.split(":"))
        subset = LeRobotDataset(REPO_ID, root=root, episodes=list(range(start, end)), video_backend="pyav")
        arrays[f"split:{split}"] = np.array([subset[i]["index"].item() for i in range(len(subset))])
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:])
