"""Benchmark `robolake convert` against its image-work ceiling and a plain TFDS builder.

Converts N synthetic robomimic episodes (two cameras: front 480x640 and wrist
240x320, both center-cropped and resized to 256x256 JPEG, quality 95) and prints
figures from one run of each configuration:

1. robolake in-process (Beam's FnApiRunner, the default): steps/s, MB/s written, peak RSS;
   once as a first conversion (sha256 of every raw file included) and once with the
   hashes already registered in lake/raw/manifest.parquet (a re-conversion); that
   re-conversion once more without the version's lease (robolake/lease.py), and the
   lease's own acquire + release time, to show that one writer per version costs nothing;
2. robolake on Beam's multi_processing runner with 1 and with 2 workers, and the speedup,
   for a first conversion and for a re-conversion (hashes registered: one worker hashes
   on the idle second core, two share both cores with the hashing);
   the same on Beam's DaskRunner (a local dask.distributed cluster of 1 and 2 workers),
   printed "not available" where that runner fails; for every robolake row, the seconds
   of work per stage (plan, hash, ingest, curate, write_rlds) from the build's manifest;
3. the ceiling: the same frames read from HDF5, cropped, resized and JPEG-encoded
   with robolake's own FramePreprocessor.encode in a tight one-process loop (steps/s
   on one core), and the same loop with the files split over 2 processes: what this
   machine gives 2 processes at the time, the bound on the 2-worker speedup;
4. a plain TFDS GeneratorBasedBuilder in the public RLDS template style (TFDS
   encodes the JPEGs), built with download_and_prepare: steps/s and peak RSS;
5. robolake's peak RSS at --growth-episodes and at 10x that many, and the growth;
6. the targets, each PASS or MISS (printed only: the exit code is 0 either way).

Each configuration runs in a fresh child process (this script with the hidden
--child flag). The parent samples the RSS of the child and all its descendants
(Beam's multi_processing workers), summed, every 0.1 s and reports the peak.
Rates use the child's own clock around the measured work, so Python and
TensorFlow start-up are left out. "cores" is the CPU time of that work over its
wall time. MB are 10^6 bytes.

    make bench                            # runs: python benchmarks/convert.py
    python benchmarks/convert.py --episodes 8 --growth-episodes 2 --steps 30   # quick check
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads; the children inherit it

import cv2  # noqa: E402
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from apache_beam.io.filesystems import FileSystems  # noqa: E402

from pipelines import raw_manifest  # noqa: E402
from pipelines import build  # noqa: E402
from pipelines.build import convert  # noqa: E402
from pipelines.hdf5_source import FRAMES_PER_READ  # noqa: E402
from pipelines.images import FramePreprocessor  # noqa: E402
from robolake.camera_frames import center_crop  # noqa: E402
from robolake.hashing import sha256_file  # noqa: E402
from robolake.lake import Lake, new_build_id  # noqa: E402
from robolake.lease import HEARTBEAT_S, Lease  # noqa: E402
from robolake.spec import DatasetSpec, load_spec  # noqa: E402
from robolake.sample import write_robomimic_dataset  # noqa: E402
from harness import (  # noqa: E402
    MB, Target, Throughput, add_run_arguments, benchmark_parser, child_command, cpu_seconds, parent_run,
    print_result, print_targets, run_measured, targets_met,
)
from schemas.rlds import RESOLUTION_CHANGE, TRUNCATED, rlds_features  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CAMERAS = {"front": (480, 640), "wrist": (240, 320)}
STATE_KEYS = ["obs/robot0_eef_pos", "obs/robot0_eef_quat", "obs/robot0_gripper_qpos"]
STATE_DIM = 9  # 3 + 4 + 2
EPISODE_ATTRS = ["task", "object", "color", "scene", "lighting", "operator"]
EPISODES_PER_FILE = 4


def tabletop_spec(input_dir: str) -> DatasetSpec:
    """datasets/sample_tabletop.yaml, reading the files generated in input_dir."""
    return load_spec(str(REPO / "datasets/sample_tabletop.yaml"), [f"source.paths=['{input_dir}/*.hdf5']"])


def input_files(input_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(input_dir, "*.hdf5")))


# --- What the children measure ------------------------------------------------------------


def child_robolake(input_dir: str, out_dir: str, workers: int, beam_args: list[str] | None = None) -> dict:
    """`pipelines.build.convert`: in-process (workers 0) or multi_processing with `workers`
    (or with `beam_args`); with the build's seconds of work per stage."""
    if beam_args is None:
        beam_args = [] if workers == 0 else ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    manifest = convert(tabletop_spec(input_dir), Lake(out_dir), beam_args).manifest
    counts = manifest["counts"]
    return {"episodes": counts["episodes_written"], "steps": counts["steps_written"], "bytes": counts["bytes_written"],
            "stages": manifest["timings"]["stages_s"]}


def child_robolake_dask(input_dir: str, out_dir: str, workers: int) -> dict:
    """child_robolake on Beam's DaskRunner with `workers` workers."""
    return child_robolake(input_dir, out_dir, workers, ["--runner=DaskRunner", f"--direct_num_workers={workers}"])


class NoLease(Lease):
    """The lease without its file or heartbeat: what a build would cost without one."""

    def acquire(self) -> Lease:
        self.holder = {"build": self.build}
        return self

    def assert_held(self) -> None:
        pass

    def release(self) -> None:
        pass


def child_robolake_unleased(input_dir: str, out_dir: str, workers: int) -> dict:
    """child_robolake with the lease replaced by NoLease."""
    build.Lease = NoLease
    return child_robolake(input_dir, out_dir, workers)


def lease_seconds(workdir: str, cycles: int = 200) -> float:
    """Mean seconds of one acquire + release of a version's lease (an O_EXCL create and a delete)."""
    lake = Lake(tempfile.mkdtemp(prefix="lease-", dir=workdir))
    started = time.perf_counter()
    for _ in range(cycles):
        with Lease(lake, "bench", "1.0.0", new_build_id(), "benchmark"):
            pass
    return (time.perf_counter() - started) / cycles


def encode_frames(input_dir: str, paths: list[str]) -> dict:
    """Read every frame of `paths`, crop, resize and JPEG-encode it; bytes are the JPEGs."""
    preprocessors = {cam.name: FramePreprocessor(cam) for cam in tabletop_spec(input_dir).cameras}
    episodes = steps = encoded = 0
    for path in paths:
        with h5py.File(path, "r") as h5:
            for demo in h5["data"].values():
                for name, preprocessor in preprocessors.items():
                    frames = demo[f"obs/{name}_image"]
                    for start in range(0, len(frames), FRAMES_PER_READ):
                        encoded += sum(len(preprocessor.encode(f)) for f in frames[start : start + FRAMES_PER_READ])
                episodes += 1
                steps += len(demo["actions"])
    return {"episodes": episodes, "steps": steps, "bytes": encoded}


def child_ceiling(input_dir: str, out_dir: str, workers: int) -> dict:
    """Only the image work, in one process, or with the files split over `workers` processes
    (what this machine gives that many processes, the bound on Beam's scaling here)."""
    paths = input_files(input_dir)
    if workers <= 1:
        return encode_frames(input_dir, paths)
    with multiprocessing.Pool(workers) as pool:
        parts = pool.starmap(encode_frames, [(input_dir, paths[i::workers]) for i in range(workers)])
    return {key: sum(part[key] for part in parts) for key in parts[0]}


class PlainRldsBuilder(tfds.core.GeneratorBasedBuilder):
    """An RLDS dataset builder as the public template writes one (rlds_dataset_builder):
    one example per episode, frames resized with OpenCV, TFDS encodes the JPEGs."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, *, spec: DatasetSpec, paths: list[str], **kwargs):
        self.spec = spec
        self.paths = paths
        self.steps_generated = 0
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # The template's dataset_info_from_configs() reads README/CITATIONS beside the
        # builder's module; a class defined in a script has no such folder.
        return tfds.core.DatasetInfo(builder=self, features=rlds_features(self.spec, STATE_DIM))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {"train": self._generate_examples(self.paths)}

    def _generate_examples(self, paths: list[str]):
        for path in paths:
            with open(path, "rb") as f:
                sha256 = hashlib.file_digest(f, "sha256").hexdigest()
            with h5py.File(path, "r") as h5:
                env = str(h5["data"].attrs["env_args"])
                for group, demo in h5["data"].items():
                    episode_id = f"{os.path.splitext(os.path.basename(path))[0]}/data/{group}"
                    metadata = {"episode_id": episode_id, "source_path": path, "source_sha256": sha256, "env": env,
                                TRUNCATED: False, RESOLUTION_CHANGE: ""}
                    metadata.update({attr: str(demo.attrs[attr]) for attr in EPISODE_ATTRS})
                    yield episode_id, {"steps": self._steps(demo), "episode_metadata": metadata}

    def _steps(self, demo: h5py.Group) -> list[dict]:
        actions = demo["actions"][()].astype(np.float32)
        state = np.concatenate([demo[key][()] for key in STATE_KEYS], axis=1).astype(np.float32)
        rewards = demo["rewards"][()].astype(np.float32)
        instruction = str(demo.attrs["language_instruction"])
        images = {
            cam.name: [self._resize(frame, *cam.size) for frame in demo[f"obs/{cam.name}_image"][()]]
            for cam in self.spec.cameras
        }
        last = len(actions) - 1
        self.steps_generated += len(actions)
        return [
            {
                "observation": {**{name: frames[t] for name, frames in images.items()}, "state": state[t]},
                "action": actions[t],
                "action_raw": actions[t],
                "reward": rewards[t],
                "discount": 1.0,
                "is_first": t == 0,
                "is_last": t == last,
                "is_terminal": t == last,
                "language_instruction": instruction,
            }
            for t in range(len(actions))
        ]

    @staticmethod
    def _resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
        return cv2.resize(center_crop(frame, height, width), (width, height), interpolation=cv2.INTER_LINEAR)


def child_plain_tfds(input_dir: str, out_dir: str, workers: int) -> dict:
    """PlainRldsBuilder.download_and_prepare into out_dir: no Beam, no download, no prompt."""
    tempfile.tempdir = out_dir  # TFDS leaves an empty temporary folder per builder; keep it in the workdir
    builder = PlainRldsBuilder(spec=tabletop_spec(input_dir), paths=input_files(input_dir), data_dir=out_dir)
    builder.download_and_prepare(
        download_dir=os.path.join(out_dir, "downloads"),
        download_config=tfds.download.DownloadConfig(try_download_gcs=False),
    )
    split = builder.info.splits["train"]
    return {"episodes": split.num_examples, "steps": builder.steps_generated, "bytes": split.num_bytes}


def register_inputs(input_dir: str, out_dir: str) -> None:
    """Register the inputs' sha256 in the lake's raw manifest, as an earlier conversion
    of the same files would have (done before the clock starts)."""
    rows = [
        {"path": m.path, "sha256": sha256_file(m.path), "bytes": m.size_in_bytes,
         "mtime": m.last_updated_in_seconds, "format": "hdf5"}
        for m in FileSystems.match([os.path.join(input_dir, "*.hdf5")])[0].metadata_list
    ]
    raw_manifest.register(Lake(out_dir), rows)


CHILD_MODES = {
    "robolake": child_robolake,
    "robolake-registered": child_robolake,
    "robolake-unleased": child_robolake_unleased,
    "robolake-dask": child_robolake_dask,
    "ceiling": child_ceiling,
    "plain-tfds": child_plain_tfds,
}
CHILD_PREPARE = {"robolake-registered": register_inputs, "robolake-unleased": register_inputs}


def run_child(mode: str, input_dir: str, out_dir: str, workers: int) -> None:
    """Time one configuration and print its result as one JSON line for the parent."""
    if mode in CHILD_PREPARE:
        CHILD_PREPARE[mode](input_dir, out_dir)
    cpu_before, started = cpu_seconds(), time.perf_counter()
    result = CHILD_MODES[mode](input_dir, out_dir, workers)
    result.update(seconds=time.perf_counter() - started, cpu_seconds=cpu_seconds() - cpu_before)
    print_result(result)


# --- The parent: plan, measure, report ----------------------------------------------------


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    mode: str
    episodes: int
    workers: int = 0


@dataclass(frozen=True)
class Measurement(Throughput):
    config: Config
    episodes: int
    cpu_seconds: float
    peak_rss: int
    stages: dict[str, float] | None = None  # robolake's seconds of work per stage

    @property
    def cores(self) -> float:
        return self.cpu_seconds / self.seconds


def measure(config: Config, input_dir: str, workdir: str) -> Measurement:
    """Run one configuration in a fresh child process; output and log stay in workdir.
    A child that fails ends the benchmark (SystemExit with its log's tail)."""
    out_dir = tempfile.mkdtemp(prefix=f"{config.key}-", dir=workdir)
    log_path = f"{out_dir}.log"
    command = child_command(__file__, config.mode, "--input", input_dir, "--out", out_dir,
                            "--workers", str(config.workers))
    result, peak = run_measured(command, log_path, config.label)
    # only the sampled peak: the child's ru_maxrss keeps this parent's RSS from before the exec
    # (Linux carries the high-water mark over execve), which holds the generated inputs
    result.pop("max_rss")
    return Measurement(config=config, peak_rss=peak, **result)


def generate_inputs(workdir: str, counts: list[int], steps: int) -> dict[int, str]:
    """One synthetic input folder per episode count, written once and shared by every configuration."""
    folders = {}
    for count in sorted(set(counts)):
        folder = os.path.join(workdir, f"input-{count}-episodes")
        started = time.perf_counter()
        print(f"generating {count} episodes x {steps} steps ...", flush=True)
        paths = write_robomimic_dataset(folder, count, steps, seed=0, per_file=EPISODES_PER_FILE, cameras=CAMERAS)
        size = sum(os.path.getsize(p) for p in paths)
        print(f"  {len(paths)} HDF5 files, {size / MB:,.0f} MB in {time.perf_counter() - started:.1f} s", flush=True)
        folders[count] = folder
    return folders


def plan(episodes: int, growth: int) -> list[Config]:
    configs = [
        Config("ceiling", "ceiling: HDF5 + crop + resize + JPEG loop", "ceiling", episodes),
        Config("ceiling2", "ceiling, files split over 2 processes", "ceiling", episodes, workers=2),
        Config("robolake", "robolake, in-process FnApiRunner", "robolake", episodes),
        Config("registered", "robolake, in-process, hashes registered", "robolake-registered", episodes),
        Config("unleased", "the same without the version's lease", "robolake-unleased", episodes),
        Config("mp1", "robolake, multi_processing, 1 worker", "robolake", episodes, workers=1),
        Config("mp2", "robolake, multi_processing, 2 workers", "robolake", episodes, workers=2),
        Config("mp1r", "the same, 1 worker, hashes registered", "robolake-registered", episodes, workers=1),
        Config("mp2r", "the same, 2 workers, hashes registered", "robolake-registered", episodes, workers=2),
        Config("dask1", "robolake, DaskRunner, 1 worker", "robolake-dask", episodes, workers=1),
        Config("dask2", "robolake, DaskRunner, 2 workers", "robolake-dask", episodes, workers=2),
        Config("plain", "plain TFDS GeneratorBasedBuilder", "plain-tfds", episodes),
        Config("growth_small", "robolake, in-process, growth base", "robolake", growth),
    ]
    if 10 * growth != episodes:  # otherwise the in-process run above is the 10x run
        configs.append(Config("growth_large", "robolake, in-process, growth 10x", "robolake", 10 * growth))
    return configs


OPTIONAL = {"dask1", "dask2"}  # printed "not available" where the runner fails


def print_table(configs: list[Config], results: dict[str, Measurement]) -> None:
    print(
        f"\n{'configuration':<42} {'episodes':>8} {'steps':>6} {'seconds':>8} {'steps/s':>8} "
        f"{'MB/s':>6} {'cores':>5} {'peak RSS':>9}"
    )
    for config in configs:
        m = results.get(config.key)
        if m is None:
            print(f"{config.label:<42} not available")
            continue
        print(
            f"{m.config.label:<42} {m.episodes:>8} {m.steps:>6} {m.seconds:>8.1f} {m.steps_per_s:>8.1f} "
            f"{m.mb_per_s:>6.1f} {m.cores:>5.2f} {m.peak_rss / MB:>6.0f} MB"
        )
    staged = [m for m in results.values() if m.stages]
    stages = list(staged[0].stages)
    print(f"\nseconds of work per stage (summed over workers; hashing runs beside ingest)\n"
          f"{'configuration':<42} " + " ".join(f"{stage:>10}" for stage in stages) + f" {'wall':>8}")
    for m in staged:
        print(f"{m.config.label:<42} " + " ".join(f"{m.stages[stage]:>10.1f}" for stage in stages) + f" {m.seconds:>8.1f}")


def scaling_target(runner: str, one: Measurement | None, two: Measurement | None, machine: float) -> Target:
    """2 workers against 1 on one runner, MISS with "not available" where it failed."""
    name = f"{runner}: 2 workers vs 1"
    if one is None or two is None:
        return Target(name, "not available (the runner failed; see its child log)", ">= 1.8x", False,
                      f"{runner} not available")
    scaling = two.steps_per_s / one.steps_per_s
    return Target(
        name, f"{two.steps_per_s:.0f} / {one.steps_per_s:.0f} steps/s = {scaling:.2f}x (ceiling: {machine:.2f}x)",
        ">= 1.8x", scaling >= 1.8, f"{runner}: {scaling:.2f}x on 2 workers",
    )


def evaluate(results: dict[str, Measurement], lease_s: float) -> list[Target]:
    robolake, ceiling, plain = results["robolake"], results["ceiling"], results["plain"]
    registered, unleased = results["registered"], results["unleased"]
    lease_cost = registered.seconds / unleased.seconds - 1
    hash_cost = robolake.seconds / registered.seconds - 1
    of_ceiling_registered = registered.steps_per_s / ceiling.steps_per_s
    small, large = results["growth_small"], results.get("growth_large", robolake)
    of_ceiling = robolake.steps_per_s / ceiling.steps_per_s
    vs_plain = robolake.steps_per_s / plain.steps_per_s
    machine = results["ceiling2"].steps_per_s / ceiling.steps_per_s
    growth = large.peak_rss / small.peak_rss - 1
    return [
        Target(
            "per worker vs ceiling, first conversion",
            f"{robolake.steps_per_s:.0f} / {ceiling.steps_per_s:.0f} steps/s = {of_ceiling:.0%} (sha256 of the raw files included)",
            ">= 75%", of_ceiling >= 0.75, f"{of_ceiling:.0%} of ceiling (first conversion)",
        ),
        Target(
            "per worker vs ceiling, hashes registered",
            f"{registered.steps_per_s:.0f} / {ceiling.steps_per_s:.0f} steps/s = {of_ceiling_registered:.0%}",
            ">= 75%", of_ceiling_registered >= 0.75, f"{of_ceiling_registered:.0%} (hashes registered)",
        ),
        Target(
            "first conversion vs re-conversion (hashing)",
            f"{robolake.seconds:.1f} / {registered.seconds:.1f} s = {hash_cost:+.1%}; sha256 "
            f"{robolake.stages['hash']:.1f} s of work beside ingest {robolake.stages['ingest']:.1f} s",
            "<= +10%", hash_cost <= 0.1, f"hashing {hash_cost:+.1%}",
        ),
        Target(
            "the version's lease (re-conversion with vs without)",
            f"{registered.seconds:.2f} / {unleased.seconds:.2f} s = {lease_cost:+.1%}; acquire + release "
            f"{lease_s * 1e3:.2f} ms, one heartbeat every {HEARTBEAT_S:.0f} s",
            "< +2%", lease_cost < 0.02, f"lease {lease_cost:+.1%}",
        ),
        Target(
            "robolake vs plain TFDS builder",
            f"{robolake.steps_per_s:.0f} / {plain.steps_per_s:.0f} steps/s = {vs_plain:.2f}x",
            ">= 3x", vs_plain >= 3, f"{vs_plain:.2f}x plain TFDS",
        ),
        scaling_target("FnApiRunner multi_processing", results["mp1"], results["mp2"], machine),
        scaling_target("FnApiRunner multi_processing, hashes registered", results["mp1r"], results["mp2r"], machine),
        scaling_target("DaskRunner", results.get("dask1"), results.get("dask2"), machine),
        Target(
            "robolake peak RSS (in-process)", f"{robolake.peak_rss / MB:.0f} MB",
            "< 1000 MB", robolake.peak_rss < 1000 * MB, f"peak RSS {robolake.peak_rss / MB:.0f} MB",
        ),
        Target(
            f"peak RSS growth (one worker), {small.episodes} -> {large.episodes} episodes",
            f"{small.peak_rss / MB:.0f} -> {large.peak_rss / MB:.0f} MB = {growth:+.0%}",
            "< +20%", growth < 0.2, f"RSS {growth:+.0%} at 10x",
        ),
    ]


def summary_line(robolake: Measurement, targets: list[Target], seconds: float) -> str:
    return (
        f"summary: {targets_met(targets)}; "
        f"robolake {robolake.steps_per_s:.0f} steps/s, {robolake.mb_per_s:.1f} MB/s; {seconds:.0f} s in all"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--episodes", type=int, default=40, help="N, episodes converted (default: 40)")
    parser.add_argument(
        "--growth-episodes", type=int, default=4,
        help="peak RSS is compared between this many episodes and 10x this many (default: 4)",
    )
    parser.add_argument("--steps", type=int, default=100, help="steps per episode (default: 100)")
    add_run_arguments(parser, sorted(CHILD_MODES), "inputs, outputs, child logs")
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args.child, args.input, args.out, args.workers)
        return
    cameras = " + ".join(f"{name} {h}x{w}" for name, (h, w) in CAMERAS.items())
    heading = (f"robolake convert benchmark: {args.episodes} episodes x {args.steps} steps, {cameras} -> 256x256 "
               f"JPEG q95")
    with parent_run(heading, "robolake-bench-", args.keep, args.workdir) as run:
        configs = plan(args.episodes, args.growth_episodes)
        inputs = generate_inputs(run.workdir, [c.episodes for c in configs], args.steps)
        results: dict[str, Measurement] = {}
        for i, config in enumerate(configs, 1):
            print(f"[{i}/{len(configs)}] {config.label}, {config.episodes} episodes ...", flush=True)
            try:
                m = results[config.key] = measure(config, inputs[config.episodes], run.workdir)
            except SystemExit as failed:
                if config.key not in OPTIONAL:
                    raise
                print(f"      not available: {str(failed).splitlines()[0]}", flush=True)
                continue
            print(
                f"      {m.steps} steps in {m.seconds:.1f} s: {m.steps_per_s:.1f} steps/s, "
                f"peak RSS {m.peak_rss / MB:.0f} MB",
                flush=True,
            )
        print_table(configs, results)
        targets = evaluate(results, lease_seconds(run.workdir))
        print_targets(targets)
    print("\n" + summary_line(results["robolake"], targets, run.seconds))


if __name__ == "__main__":
    main(sys.argv[1:])
