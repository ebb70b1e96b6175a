"""`robolake lerobot NAME[:VERSION] OUT_DIR`: export a published gold version, with a progress bar."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from exports.lerobot.writer import export
from robolake.arguments import ArgumentParser
from robolake.lake import Lake
from robolake.names import dataset_argument
from robolake.pins import reading
from robolake.progress import console


@reading("lerobot")
def run(argv: list[str]) -> int:
    parser = ArgumentParser(prog="robolake lerobot", description="export a gold dataset version as a "
                            "LeRobotDataset (codebase v3.0): Parquet frames, MP4 videos, meta/")
    parser.add_argument("dataset", type=dataset_argument, help="NAME[:VERSION] (default: the latest published version)")
    parser.add_argument("out_dir", help="folder to create: LeRobotDataset(repo_id, root=OUT_DIR) loads it")
    parser.add_argument("--lake", default="lake")
    parser.add_argument("--overwrite", action="store_true", help="replace out_dir if it is an earlier export")
    parser.add_argument("--images", choices=("auto", "video", "image"), default="auto",
                        help="video: MP4 per camera, AV1 (else H.264) as LeRobot encodes it (lossy); image: the "
                             "gold JPEG/PNG bytes in Parquet; auto: video where PyAV can encode it")
    parser.add_argument("--modality", action="store_true",
                        help="also write meta/modality.json, the state/action ranges NVIDIA GR00T reads")
    args = parser.parse_args(argv)
    target = Lake(args.lake).resolve(args.dataset)
    with Progress(TextColumn(f"lerobot {target.dataset}:{target.version}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("episodes"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("export", total=None)
        outcome = export(target.gold_dir, args.out_dir, overwrite=args.overwrite, images=args.images,
                         modality=args.modality,
                         progress=lambda done, total: bar.update(task, completed=done, total=total))
    print(outcome.summary_line())
    return 0
