"""Benchmark the safe policy runtime's `act()` latency: p50 / p99 at batch 1 and 4, float32 and int8.

One fixed compact VLA (training.model.CompactVLA, random weights from a fixed seed, nothing
downloaded), benchmarks/train.py's size: 2 cameras of 64x64 cut into 16x16 patches, a vision
encoder 128 wide with 2 layers, and a Llama language model of hidden size 768, 8 layers, 12
heads, SwiGLU width 2048 (about 59M parameters). `act()` is timed whole, as a robot controller
calls it: preprocessing of the sample's camera frames (front 480x640, wrist 240x320 uint8 RGB)
through the sample's camera transforms (robolake.camera_frames: centre crop, resize to 256x256,
JPEG encode and decode, as the gold pipeline stored the training frames), then resized to 64 by
training.frames.eval_frames, instruction tokenization, the prefix forward and
7 KV-cached greedy decoding steps, denormalization, smoothing and clipping. int8 is
`training.runtime.quantize_int8`: dynamic int8 quantization of the language model's and
projector's linear layers (the vision encoder stays float32).

Each precision runs in a fresh child process (this script with the hidden --child flag; the
parent samples the RSS of its process tree, benchmarks/harness.py). A child builds the model,
wraps it in a `Policy` with a mean_std statistics document, then per batch size runs --warmup
untimed calls and --calls timed ones on observations generated before the clock starts
(reused in turn; the smoothing history is reset between batch sizes). torch uses every core
(printed). About 1 minute on 2 cores. On 2 quiet cores float32 took 270 / 540 ms p50 at batch 1 / 4
and int8 175 / 280 ms (measured before the camera transforms, on 256x256 frames). The camera
transforms alone (printed per run) cost 2.5-3 ms per robot on these random frames and 1.4 ms on
rendered sample frames (JPEG works harder on noise), under 1% of act(). Latencies suffer
from any other load on the machine (with a load average of 3 from neighbours, float32 at
batch 1 took 2 s p50 and p99s ran to seconds). int8's peak RSS includes the float model it
is quantized from.

    python benchmarks/policy_latency.py             # 2 warm-up + 20 timed calls per batch size
    python benchmarks/policy_latency.py --calls 50  # a steadier p99, slower
"""

from __future__ import annotations

import argparse
import os
import sys
import time


from harness import MB, add_run_arguments, benchmark_parser, child_command, parent_run, print_result, run_measured

# The parent never imports torch: each child pays its own imports.

MODEL = {
    "image_size": 64, "patch_size": 16, "num_cameras": 2, "vision_hidden": 128, "vision_layers": 2,
    "vision_heads": 4, "lm_hidden": 768, "lm_layers": 8, "lm_heads": 12, "lm_intermediate": 2048, "action_dim": 7,
}
FRAMES = {"front": (480, 640), "wrist": (240, 320)}  # the sample's camera frames (height, width), in model order
CAMERAS = list(FRAMES)
# The sample's camera transforms (datasets/sample_tabletop.yaml), as a bundle's camera_frames.json records them.
CAMERA_FRAMES = [{"name": name, "size": [256, 256], "encoding": "jpeg", "jpeg_quality": 95} for name in CAMERAS]
INSTRUCTIONS = [
    "pick up the red block and place it in the bowl",
    "open the top drawer",
    "push the blue button to the left",
    "put the cup on the plate",
]
BATCH_SIZES = (1, 4)
DISTINCT_OBSERVATIONS = 4
PRECISIONS = ("float32", "int8")
SAMPLE_S = 0.05
SEED = 0


def statistics(action_dim: int) -> dict:
    """A mean_std dataset_statistics.json document: centimeter-scale deltas, the gripper unnormalized."""
    mask = [True] * (action_dim - 1) + [False]
    return {"action": {"mean": [0.0] * action_dim, "std": [0.01] * (action_dim - 1) + [1.0], "mask": mask},
            "robolake": {"normalization": {"mode": "mean_std", "std_bound": 1.0, "mask": mask, "state": False}}}


def child_latency(precision: str, warmup: int, calls: int) -> dict:
    """Build the policy, then time `act()` at every batch size."""
    import numpy as np
    import torch

    from robolake.camera_frames import camera_preprocessors
    from training.model import CompactVLA, ModelConfig, trainable_parameters
    from training.runtime import Policy, quantize_int8
    from training.tokenizers import InstructionTokenizer

    torch.manual_seed(SEED)
    model = CompactVLA(ModelConfig(**MODEL), InstructionTokenizer.from_texts(INSTRUCTIONS)).requires_grad_(False).eval()
    parameters = trainable_parameters(model)[1]
    if precision == "int8":
        model = quantize_int8(model)  # the float copy is dropped
    policy = Policy(model, statistics(MODEL["action_dim"]), CAMERAS, camera_frames=CAMERA_FRAMES)
    rng = np.random.default_rng(SEED)
    latencies, fallbacks = {}, 0
    for batch in BATCH_SIZES:
        observations = [
            ({name: rng.integers(0, 256, (batch, *size, 3), dtype=np.uint8) for name, size in FRAMES.items()},
             [INSTRUCTIONS[(i + j) % len(INSTRUCTIONS)] for j in range(batch)])
            for i in range(DISTINCT_OBSERVATIONS)
        ]
        policy.reset()
        for i in range(warmup):
            policy.act(*observations[i % len(observations)])
        seconds = []
        for i in range(calls):
            tick = time.perf_counter()
            result = policy.act(*observations[i % len(observations)])
            seconds.append(time.perf_counter() - tick)
            fallbacks += int(result.fallback.sum())
        latencies[str(batch)] = seconds
    transforms = camera_preprocessors(CAMERA_FRAMES)
    frames = [observations[i % len(observations)][0] for i in range(calls)]
    tick = time.perf_counter()
    for images in frames:
        for name, transform in transforms.items():
            transform.as_stored(images[name][0])
    transform_s = (time.perf_counter() - tick) / calls
    return {"precision": precision, "parameters": parameters, "latencies": latencies, "calls": calls,
            "threads": torch.get_num_threads(), "fallbacks": fallbacks, "transform_s": transform_s}


def percentile_ms(seconds: list[float], q: float) -> float:
    ordered = sorted(seconds)
    return 1000 * ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def print_table(results: dict[str, tuple[dict, int]]) -> None:
    header = "".join(f"{f'batch {b} p50':>13}{f'batch {b} p99':>13}{f'obs/s @{b}':>10}" for b in BATCH_SIZES)
    print(f"\n{'precision':<10}{header}{'peak RSS':>10}")
    for precision, (result, sampled) in results.items():
        cells = ""
        for batch in BATCH_SIZES:
            seconds = result["latencies"][str(batch)]
            cells += (f"{percentile_ms(seconds, 50):>10.1f} ms{percentile_ms(seconds, 99):>10.1f} ms"
                      f"{batch * len(seconds) / sum(seconds):>10.1f}")
        print(f"{precision:<10}{cells}{max(sampled, result['max_rss']) / MB:>7.0f} MB")
    (float_result, _), (int8_result, _) = results["float32"], results["int8"]
    p50 = {name: {b: percentile_ms(r["latencies"][str(b)], 50) for b in BATCH_SIZES}
           for name, r in (("float32", float_result), ("int8", int8_result))}
    ratios = ", ".join(f"batch {b} {p50['float32'][b] / p50['int8'][b]:.2f}x" for b in BATCH_SIZES)
    print(f"(p50 / p99 of {float_result['calls']} timed act() calls per batch size, nearest-rank; obs/s: robots served "
          f"per second; peak RSS: max of the parent's samples and the child's ru_maxrss)\nint8 p50 speed-up over "
          f"float32: {ratios}")
    transform_ms = 1000 * float_result["transform_s"]
    print(f"camera transforms (crop, resize, JPEG encode + decode, both cameras) per robot: {transform_ms:.1f} ms, "
          f"{100 * transform_ms / p50['float32'][1]:.1f}% of float32's batch-1 p50")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--calls", type=int, default=20, help="timed act() calls per batch size (default: 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before them (default: 2)")
    add_run_arguments(parser, PRECISIONS, "the children's logs", workdir=False)
    args = parser.parse_args(argv)
    if args.calls < 1 or args.warmup < 0:
        parser.error("--calls must be at least 1, --warmup at least 0")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.child:
        print_result(child_latency(args.child, args.warmup, args.calls))
        return
    m = MODEL
    sizes = " + ".join(f"{name} {h}x{w}" for name, (h, w) in FRAMES.items())
    heading = (f"policy runtime act() latency: compact VLA, frames {sizes} -> 256x256 JPEG -> {m['image_size']}x"
               f"{m['image_size']}, patch {m['patch_size']}, vision {m['vision_hidden']}x"
               f"{m['vision_layers']} layers, Llama {m['lm_hidden']} hidden x {m['lm_layers']} layers, "
               f"{m['lm_heads']} heads, MLP {m['lm_intermediate']}; {args.warmup} warm-up + {args.calls} timed calls "
               f"per batch size")
    with parent_run(heading, "robolake-policy-latency-", args.keep) as run:
        results = {}
        for i, precision in enumerate(PRECISIONS, 1):
            print(f"[{i}/{len(PRECISIONS)}] {precision} ...", flush=True)
            command = child_command(__file__, precision, "--warmup", str(args.warmup), "--calls", str(args.calls))
            log_path = os.path.join(run.workdir, f"{precision}.log")
            results[precision] = run_measured(command, log_path, precision, SAMPLE_S)
            result = results[precision][0]
            print(f"      {result['parameters']:,} parameters, {result['threads']} threads", flush=True)
        print_table(results)
    print(f"\n{run.seconds:.0f} s in all")


if __name__ == "__main__":
    main(sys.argv[1:])
