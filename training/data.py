"""Gold RLDS -> torch: a streaming step dataset for fine-tuning a VLA policy.

Streaming. `RldsSteps` reads the split's TFRecord shards with TFDS
(`GoldVersion.episodes`, robolake/lake.py), one episode at a time: the images
are left encoded (`tfds.decode.SkipDecoding`) and an episode's steps come out of
tf.data as one batch (stepping through the nested RLDS `steps` dataset one element
at a time costs about 3x more). Steps then go through a shuffle buffer of at most
`shuffle_buffer` steps (train only) that holds the encoded JPEG/PNG bytes, so a
buffer of 2000 steps of the sample's two 256x256 JPEG cameras takes about 70 MB
(decoded to float32 at 224x224, 2.4 GB). Only a step
that leaves the buffer is decoded (OpenCV), cropped, resized and colour-jittered.
Memory is therefore bounded by the buffer, the episode being unpacked and the two
episodes tf.data prefetches; the split is never held whole. The episode read order
is seeded by (seed, epoch), the buffer and augmentation by (seed, epoch, consumer):
the same seed and epoch give the same steps in the same order with the same crops.

Sharding. Each (rank, DataLoader worker) pair is one consumer, numbered
`rank * num_workers + worker_id` out of `world_size * num_workers`. When the split
has at least as many files as consumers, files are dealt to consumers by TFDS
(`tfds.ReadConfig(input_context=tf.distribute.InputContext(...))`: file i goes to
consumer i mod consumers, then each shuffles its own files). With fewer files, every
consumer reads every file in the same seeded order and keeps the episodes whose
index in that order is its id modulo consumers (`tf.data.Dataset.shard`). Either way
each step is read once per epoch over all consumers. Consumers may get different
numbers of steps (episodes and shards differ in length), so a distributed training
loop should run a fixed number of optimizer steps on the infinite training stream
rather than count on ranks exhausting together.

Each DataLoader worker builds its own tf.data pipeline in `__iter__`, after the
fork (the tests fork workers from a process that has already run TensorFlow)."""

from __future__ import annotations

from collections.abc import Iterator

import robolake  # noqa: F401  (first: robolake/quiet.py quiets TensorFlow's start-up before it loads)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
import torch  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402

from robolake.camera_frames import decode  # noqa: E402
from robolake.lake import GoldVersion  # noqa: E402
from robolake.normalization import load_statistics  # noqa: E402
from robolake.storage import exists  # noqa: E402
from training.config import DataConfig  # noqa: E402
from training.frames import center_crop, model_pixels, resized  # noqa: E402


class RldsSteps(torch.utils.data.IterableDataset):
    """Steps of one split of a gold RLDS version, as dicts of tensors (see module doc).

    `epochs`: None repeats forever in train mode and reads one pass otherwise.
    `peak_buffered` and `steps_read` record, for the latest iteration in this process,
    the most steps the shuffle buffer held and the steps read from the shards."""

    def __init__(
        self,
        gold_dir: str,
        split: str,
        config: DataConfig,
        train: bool,
        rank: int = 0,
        world_size: int = 1,
        epochs: int | None = None,
    ):
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        layout = GoldVersion.at(gold_dir).layout()
        if split not in layout["splits"]:
            raise ValueError(f"{gold_dir} has no split {split!r} (splits: {sorted(layout['splits'])})")
        available = layout["cameras"]
        unknown = sorted(set(config.cameras or ()) - set(available))
        if unknown:
            raise ValueError(f"cameras {unknown} are not in {gold_dir} (cameras: {available})")
        self.gold_dir, self.split, self.config, self.train = gold_dir, split, config, train
        self.rank, self.world_size = rank, world_size
        self.epochs = epochs if epochs is not None else (None if train else 1)
        self.available_cameras = available  # all left encoded by TFDS, used or not
        self.cameras = list(config.cameras or available)
        self.num_files = layout["shards"][split]
        self.peak_buffered = 0
        self.steps_read = 0

    def consumer(self) -> tuple[int, int]:
        """(this consumer's id, number of consumers) over ranks and DataLoader workers."""
        worker = torch.utils.data.get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        return self.rank * num_workers + worker_id, self.world_size * num_workers

    def __iter__(self) -> Iterator[dict]:
        consumer, consumers = self.consumer()
        self.peak_buffered = self.steps_read = 0
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            rng = np.random.default_rng([self.config.seed, epoch, consumer])
            steps = self._steps(epoch, consumer, consumers)
            if self.train:
                steps = self._shuffled(steps, rng)
            for step in steps:
                yield self._item(step, rng)
            epoch += 1

    def _episodes(self, epoch: int, consumer: int, consumers: int) -> tf.data.Dataset:
        """This consumer's episodes, each with its steps as arrays (images encoded)."""
        by_file = consumers <= self.num_files
        context = tf.distribute.InputContext(num_input_pipelines=consumers, input_pipeline_id=consumer)
        read_config = tfds.ReadConfig(
            shuffle_seed=int(np.random.SeedSequence([self.config.seed, epoch]).generate_state(1)[0]),
            input_context=context if by_file and consumers > 1 else None,
        )
        episodes = GoldVersion.at(self.gold_dir).episodes(self.split, read_config=read_config,
                                                          shuffle_files=self.train)
        if not by_file:
            episodes = episodes.shard(consumers, consumer)

        def unpack(episode):
            steps = episode["steps"].batch(episode["steps"].cardinality()).get_single_element()
            return {
                "images": {name: steps["observation"][name] for name in self.cameras},
                "state": steps["observation"]["state"],
                "action": steps["action"],
                "action_raw": steps["action_raw"],
                "instruction": steps["language_instruction"],
                "episode_id": episode["episode_metadata"]["episode_id"],
                "task": episode["episode_metadata"]["task"],
            }

        return episodes.map(unpack).prefetch(2)

    def _steps(self, epoch: int, consumer: int, consumers: int) -> Iterator[dict]:
        """Steps in read order, images still encoded."""
        horizon = self.config.action_horizon
        for episode in self._episodes(epoch, consumer, consumers).as_numpy_iterator():
            episode_id, task = episode["episode_id"].decode(), episode["task"].decode()
            actions = episode["action"]
            # Past the episode's end a chunk repeats its last action, marked as padding (LeRobot's action_is_pad).
            padded = np.concatenate([actions, np.repeat(actions[-1:], horizon - 1, axis=0)])
            for index in range(len(actions)):
                self.steps_read += 1
                yield {
                    "encoded": [episode["images"][name][index] for name in self.cameras],
                    "action": actions[index].copy(),
                    "action_chunk": padded[index : index + horizon].copy(),
                    "action_is_pad": np.arange(index, index + horizon) >= len(actions),
                    "action_raw": episode["action_raw"][index].copy(),
                    "state": episode["state"][index].copy(),
                    "instruction": episode["instruction"][index].decode(),
                    "task": task,
                    "episode_id": episode_id,
                    "step_index": index,
                }

    def _shuffled(self, steps: Iterator[dict], rng: np.random.Generator) -> Iterator[dict]:
        """A uniformly random step of a buffer of at most `shuffle_buffer` steps, refilled
        as it goes; the remainder in random order once the input ends."""
        size = self.config.shuffle_buffer
        buffer: list[dict] = []
        for step in steps:
            if len(buffer) < size:
                buffer.append(step)
                self.peak_buffered = max(self.peak_buffered, len(buffer))
                continue
            index = rng.integers(size)
            yield buffer[index]
            buffer[index] = step
        for index in rng.permutation(len(buffer)):
            yield buffer[index]

    def _item(self, step: dict, rng: np.random.Generator) -> dict:
        images = np.stack([self._image(encoded, rng) for encoded in step.pop("encoded")])
        return {
            **step,
            "images": model_pixels(images),
            "action": torch.from_numpy(step["action"]),
            "action_chunk": torch.from_numpy(step["action_chunk"]),
            "action_is_pad": torch.from_numpy(step["action_is_pad"]),
            "action_raw": torch.from_numpy(step["action_raw"]),
            "state": torch.from_numpy(step["state"]),
        }

    def _image(self, encoded: bytes, rng: np.random.Generator) -> np.ndarray:
        """(image_size, image_size, 3) uint8 RGB: decoded, randomly (train) or centrally (eval)
        cropped, resized, (train) colour-jittered."""
        image = decode(encoded)
        if self.train:
            height, width = image.shape[:2]
            crop_h = max(1, round(height * self.config.crop_scale))
            crop_w = max(1, round(width * self.config.crop_scale))
            top, left = rng.integers(height - crop_h + 1), rng.integers(width - crop_w + 1)
            image = image[top : top + crop_h, left : left + crop_w]
        else:
            image = center_crop(image, self.config.crop_scale)
        image = resized(image, self.config.image_size)
        return self._jittered(image, rng) if self.train else image

    def _jittered(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightness, contrast, saturation in this order, each a factor in [1 - a, 1 + a]
        blending towards black, the mean gray level, the gray image (as torchvision's
        ColorJitter), in uint8: the first two as one lookup table."""
        c = self.config
        levels = np.clip(np.arange(256) * rng.uniform(1 - c.brightness, 1 + c.brightness), 0, 255)
        histogram = np.bincount(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).ravel(), minlength=256)
        mean = histogram @ levels / histogram.sum()
        levels = np.clip(mean + (levels - mean) * rng.uniform(1 - c.contrast, 1 + c.contrast), 0, 255)
        image = cv2.LUT(image, np.rint(levels).astype(np.uint8))
        gray = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        factor = rng.uniform(1 - c.saturation, 1 + c.saturation)
        return cv2.addWeighted(image, factor, gray, 1 - factor, 0)  # saturates to [0, 255]


def collate(items: list[dict]) -> dict:
    """A batch: tensors stacked, `step_index` an int64 tensor, strings as lists. That is
    torch's default_collate for these items, which in a DataLoader worker also stacks
    straight into shared memory (saving a copy of the images per batch)."""
    return torch.utils.data.default_collate(items)


def dataset_info(gold_dir: str) -> dict:
    """What a training run needs to know before reading any step: cameras and their
    image shapes, action and state sizes, per split episodes and steps (steps from
    manifest.json; None without one), the statistics file and its contents, and the
    train split's instructions (one per episode and distinct text, by episode id)."""
    gold = GoldVersion.at(gold_dir)
    builder = gold.builder()
    layout = gold.layout(builder)
    counts = gold.manifest["counts"]["by_split"] if exists(gold.manifest_path) else {}
    return {
        "name": builder.info.name,
        "version": str(builder.info.version),
        "cameras": layout["cameras"],
        "image_shapes": layout["image_shapes"],
        "action_dim": layout["action_dim"],
        "state_dim": layout["state_dim"],
        "splits": {name: {"episodes": episodes, "steps": counts.get(name, {}).get("steps")}
                   for name, episodes in layout["splits"].items()},
        "statistics_path": gold.statistics_path,
        "statistics": load_statistics(gold_dir),
        "instructions": train_instructions(gold, builder),
    }


def train_instructions(gold: GoldVersion, builder: tfds.core.DatasetBuilder | None = None) -> list[str]:
    """The train split's instruction texts, one per (episode, distinct text), ordered by
    episode id. Read from the build's silver `curated_steps` table (gold's exact steps
    without images; two columns read), else, for a gold folder outside a lake, by a pass
    over the train shards with the images left encoded."""
    pairs: set[tuple[str, str]] = set()
    files = gold.silver_files("curated_steps", "train")
    for path in files:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            table = pq.read_table(f, columns=["episode_id", "language_instruction"])
        pairs |= set(zip(table.column("episode_id").to_pylist(), table.column("language_instruction").to_pylist()))
    if not files:
        def instructions(episode):
            steps = episode["steps"].batch(episode["steps"].cardinality()).get_single_element()
            return episode["episode_metadata"]["episode_id"], steps["language_instruction"]

        for episode_id, texts in gold.episodes("train", builder).map(instructions).as_numpy_iterator():
            pairs |= {(episode_id.decode(), text.decode()) for text in texts}
    return [text for _, text in sorted(pairs)]
