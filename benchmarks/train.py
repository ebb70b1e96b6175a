"""Benchmark LoRA against full fine-tuning of the compact VLA: trainable parameters, peak memory, steps/s.

One fixed model size (training.model.CompactVLA, float32): 64x64 images from 2 cameras
cut into 16x16 patches (16 tokens per camera), a vision encoder 128 wide with 2 layers
and 4 heads, the projector, and a Llama language model of hidden size 768, 8 layers, 12
heads, SwiGLU width 2048: about 59M parameters, 58M of them in the language model. A
training sequence is 32 patch tokens + 24 instruction tokens + 7 action tokens. The
size keeps a full fine-tuning step near 2 s on 2 cores (LoRA: about 1.2 s); 8x8
patches (128 image tokens, 159 in a sequence instead of 63) would make every step at
least 2.5x longer. LoRA's share of the parameters hardly depends on the layer count:
r=32 on q and v adds 4 x 32 x 768 per layer against the layer's 4 x 768^2 + 3 x 768 x
2048.

Both configurations train the same model, built from the same seed, the way
training/train.py does: LoRA with TrainConfig's defaults (r=32, alpha=64, dropout 0.05
on the language model's q_proj/v_proj via training.model.add_lora, vision encoder and
projector frozen, peak LR 3e-4) or every weight trainable (LR 1e-5); AdamW with
TrainConfig's betas and weight decay, gradients clipped at 1.0, `model.loss(batch)` on
batches shaped like the data loader's (images (B, 2, 3, 64, 64) float in [0, 1],
action (B, 7) in [-1, 1], one instruction string per example; the tokenizer is an
InstructionTokenizer.from_texts over a few sentences). The batches are synthetic
random tensors, generated before the clock starts and reused in turn; --batch-size
examples per step (default 8), no gradient accumulation. After --warmup optimizer steps
(default 2, not timed) the child times --steps steps (default 20) with its own clock.
Autocast is off (float32 throughout): on a CPU without AVX512-BF16 or AMX (the 2-core
AMD EPYC this was written on) a bf16 matmul runs about 100x slower than a float32 one
and a bf16 training step about 40x slower, so a bf16 pair at the defaults would take the
better part of an hour; --bf16 adds a LoRA/full pair with bf16 autocast for CPUs that have the units
(shown in the table, not in the targets). The model is built here from training.model and
training.config only: importing training.train would pull in the data loader's
TensorFlow and add some 600 MB of baseline RSS to both configurations.

It prints, per configuration: trainable parameters and their share of the total; RSS
after the imports (Python, torch, transformers, peft: about 400 MB of either
configuration's peak), after the model is built (+ about 240 MB of float32 weights) and
after the warm-up; the peak RSS; the training-time increase, peak minus the
model-built RSS (gradients, AdamW's two moment buffers, activations, the allocator's
retained memory); the gradient + AdamW state that the trainable parameters need by
arithmetic (3 x 4 bytes each); steps/s and samples/s. Then the targets, each PASS or
MISS (printed only: the exit code is 0 either way):

1. LoRA trains < 2% of the parameters;
2. LoRA's peak RSS <= 60% of full fine-tuning's. The ratio includes what both share:
   the ~400 MB baseline, the ~240 MB of weights and the activations of a batch (with
   LoRA the backward pass still runs through every layer to reach the adapters, so
   its activations are those of full fine-tuning, about 50 MB per example here). Full
   fine-tuning adds ~700 MB of gradient and AdamW state for 59M parameters; LoRA ~9 MB.
   At this size the shared part is the larger one, so the ratio sits well above what a
   7B model (whose weights and optimizer state dwarf everything else) would show, and
   it moves with the batch size: on 2 cores, LoRA / full peak was 51% at batch 1, 57% at
   4, 62-64% at 8 (the default: a MISS) and 79% at 16. The ratio of the training-time
   increases, printed below the targets, leaves the baseline and the weights out and
   shows what LoRA saves of what training itself adds: 10%, 27%, 42-43% and 70% at those
   batch sizes. Repeated runs differ by a few MB in peak RSS; steps/s suffer from any
   other load on the machine (a busy neighbour made a step 5-10x slower).

Each configuration runs in a fresh child process (this script with the hidden --child
flag). The parent samples the RSS of the child's process tree every 50 ms
(benchmarks/harness.py); the child also reports its ru_maxrss (getrusage, the kernel's
high-water mark, which no sampling interval can miss), and the peak is the larger of
the two. Steps/s leave out the imports, the model build and the warm-up. torch uses
every core (torch.get_num_threads(), printed). MB are 10^6 bytes.

A third configuration trains the demo's own recipe (training/configs/pretrain.yaml: its
model section, full training at its LR, the state token and 8-step action chunks decoded in
parallel) on batches of its shape, for its training throughput in samples/s; it is not in
the targets. Closed-loop success after N steps of that recipe: benchmarks/learning_curve.py.

    python benchmarks/train.py              # 2 warm-up + 20 timed steps each: about 1.5 minutes on 2 cores
    python benchmarks/train.py --quick      # 1 + 3 steps each: about the same memory figures, rougher steps/s; ~30 s
    python benchmarks/train.py --batch-size 4           # how the memory ratio moves with the activations
    python benchmarks/train.py --bf16       # also a pair with bf16 autocast (only on a CPU with bf16 units)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import psutil

from harness import (
    MB, Target, add_run_arguments, benchmark_parser, child_command, parent_run, print_result, print_targets,
    run_measured, targets_met,
)

# The parent never imports torch: each child pays its own imports, measured as its baseline.

MODEL = {
    "image_size": 64, "patch_size": 16, "num_cameras": 2, "vision_hidden": 128, "vision_layers": 2,
    "vision_heads": 4, "lm_hidden": 768, "lm_layers": 8, "lm_heads": 12, "lm_intermediate": 2048, "action_dim": 7,
}
INSTRUCTIONS = [
    "pick up the red block and place it in the bowl",
    "open the top drawer",
    "push the blue button to the left",
    "put the cup on the plate",
    "stack the green block on the yellow block",
    "close the drawer slowly",
]
DISTINCT_BATCHES = 4  # synthetic batches generated up front and reused in turn
SHARE_LIMIT = 0.02  # LoRA's trainable share of the parameters
RSS_RATIO_LIMIT = 0.60  # LoRA peak RSS / full fine-tuning peak RSS
SAMPLE_S = 0.05
SEED = 0


# --- What the children measure ------------------------------------------------------------


def rss() -> int:
    return psutil.Process().memory_info().rss


def recipe_model() -> tuple[dict, float]:
    """The demo recipe's ModelConfig fields (its config's model section on the sample's 2 cameras, 7-D
    actions) and its peak learning rate."""
    import yaml

    recipe = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "training", "configs", "pretrain.yaml")))
    return {"num_cameras": 2, "action_dim": 7, **recipe["model"]}, recipe["lr"]


def synthetic_batches(model: dict, batch_size: int, count: int, seed: int) -> list[dict]:
    """Batches shaped as training.data's collate yields them for ModelConfig fields `model`, from a seeded generator."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    size, cameras, dims = model["image_size"], model["num_cameras"], model["action_dim"]
    horizon = model.get("action_horizon", 1)
    batches = []
    for i in range(count):
        batches.append({
            "images": torch.rand(batch_size, cameras, 3, size, size, generator=generator),
            "action": torch.rand(batch_size, dims, generator=generator) * 2 - 1,
            "action_chunk": torch.rand(batch_size, horizon, dims, generator=generator) * 2 - 1,
            "action_is_pad": torch.zeros(batch_size, horizon, dtype=torch.bool),
            "state": torch.rand(batch_size, model.get("state_dim") or 1, generator=generator),
            "instruction": [INSTRUCTIONS[(i * batch_size + j) % len(INSTRUCTIONS)] for j in range(batch_size)],
        })
    return batches


def child_train(mode: str, bf16: bool, batch_size: int, warmup: int, steps: int) -> dict:
    """Build the model (LoRA or full; recipe: the demo's, full), then warm-up and timed AdamW steps on
    synthetic batches."""
    import torch

    from training.config import TrainConfig
    from training.model import CompactVLA, ModelConfig, add_lora, trainable_parameters
    from training.tokenizers import InstructionTokenizer

    rss_imports = rss()
    torch.manual_seed(SEED)
    fields, lr = recipe_model() if mode == "recipe" else (MODEL, None)
    config = TrainConfig(mode="full" if mode == "recipe" else mode, bf16=bf16, batch_size=batch_size, lr=lr)
    model = CompactVLA(ModelConfig(**fields), InstructionTokenizer.from_texts(INSTRUCTIONS))
    if mode == "lora":
        add_lora(model, r=config.lora.r, alpha=config.lora.alpha, dropout=config.lora.dropout, mlp=config.lora.mlp)
    else:
        model.requires_grad_(True)
    model.train()
    trainable, total = trainable_parameters(model)
    rss_built = rss()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.peak_lr, betas=config.betas, weight_decay=config.weight_decay)
    batches = synthetic_batches(fields, batch_size, DISTINCT_BATCHES, SEED)

    def step(i: int) -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(batches[i % len(batches)])["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        optimizer.step()
        return float(loss.detach())

    losses = [step(i) for i in range(warmup)]
    rss_warm = rss()
    step_seconds = []
    started = time.perf_counter()
    for i in range(warmup, warmup + steps):
        tick = time.perf_counter()
        losses.append(step(i))
        step_seconds.append(time.perf_counter() - tick)
    seconds = time.perf_counter() - started
    return {
        "trainable": trainable, "total": total, "steps": steps, "batch_size": batch_size, "seconds": seconds,
        "step_seconds": step_seconds, "first_loss": losses[0], "last_loss": losses[-1],
        "rss_imports": rss_imports, "rss_built": rss_built, "rss_warm": rss_warm, "rss_end": rss(),
        "threads": torch.get_num_threads(), "lr": config.peak_lr,
    }


def run_child(args: argparse.Namespace) -> None:
    result = child_train(args.child, args.bf16, args.batch_size, args.warmup, args.steps)
    print_result(result)


# --- The parent: measure, report ----------------------------------------------------------


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    mode: str  # lora / full
    bf16: bool


@dataclass(frozen=True)
class Measurement:
    config: Config
    result: dict
    sampled_rss: int

    @property
    def peak_rss(self) -> int:
        return max(self.result["max_rss"], self.sampled_rss)

    @property
    def increase(self) -> int:
        """Peak RSS above the RSS of the built model: what training added."""
        return self.peak_rss - self.result["rss_built"]

    @property
    def share(self) -> float:
        return self.result["trainable"] / self.result["total"]

    @property
    def state_bytes(self) -> int:
        """Gradient + AdamW's two moment buffers of the trainable parameters, float32, by arithmetic."""
        return 3 * 4 * self.result["trainable"]

    @property
    def steps_per_s(self) -> float:
        return self.result["steps"] / self.result["seconds"]

    @property
    def samples_per_s(self) -> float:
        return self.steps_per_s * self.result["batch_size"]


def measure(config: Config, args: argparse.Namespace, workdir: str) -> Measurement:
    command = child_command(__file__, config.mode, "--batch-size", str(args.batch_size), "--warmup", str(args.warmup),
                            "--steps", str(args.steps), *(["--bf16"] if config.bf16 else []))
    result, sampled = run_measured(command, os.path.join(workdir, f"{config.key}.log"), config.label, SAMPLE_S)
    return Measurement(config, result, sampled)


def plan(bf16: bool) -> list[Config]:
    configs = [Config("lora", "LoRA r=32 q/v, float32", "lora", False),
               Config("full", "full fine-tuning, float32", "full", False),
               Config("recipe", "demo recipe (pretrain.yaml), full", "recipe", False)]
    if bf16:
        configs += [Config("lora_bf16", "LoRA r=32 q/v, bf16 autocast", "lora", True),
                    Config("full_bf16", "full fine-tuning, bf16 autocast", "full", True)]
    return configs


def print_table(measurements: list[Measurement]) -> None:
    print(f"\n{'configuration':<32} {'trainable':>11} {'share':>7} {'RSS imports':>11} {'built':>7} {'warm':>7} "
          f"{'peak':>7} {'increase':>8} {'grad+Adam':>9} {'steps/s':>7} {'samples/s':>9}")
    for m in measurements:
        r = m.result
        print(f"{m.config.label:<32} {r['trainable']:>11,} {m.share:>7.2%} {r['rss_imports'] / MB:>8.0f} MB "
              f"{r['rss_built'] / MB:>4.0f} MB {r['rss_warm'] / MB:>4.0f} MB {m.peak_rss / MB:>4.0f} MB "
              f"{m.increase / MB:>5.0f} MB {m.state_bytes / MB:>6.0f} MB {m.steps_per_s:>7.2f} {m.samples_per_s:>9.1f}")
    print("(RSS: after imports, after the model is built, after the warm-up; peak: max of the parent's samples and "
          "the child's ru_maxrss; increase: peak - built; grad+Adam: 12 bytes per trainable parameter, computed)")
    for m in measurements:
        r = m.result
        times = sorted(r["step_seconds"])
        print(f"{m.config.label}: {r['steps']} steps of {r['batch_size']} in {r['seconds']:.1f} s, step "
              f"{times[0]:.2f} / {times[len(times) // 2]:.2f} / {times[-1]:.2f} s (min / median / max), "
              f"LR {r['lr']:.0e}, loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}, {r['threads']} threads; "
              f"sampled peak {m.sampled_rss / MB:.0f} MB, ru_maxrss {r['max_rss'] / MB:.0f} MB")


def evaluate(lora: Measurement, full: Measurement) -> list[Target]:
    ratio = lora.peak_rss / full.peak_rss
    return [
        Target("LoRA trainable share", f"{lora.result['trainable']:,} of {lora.result['total']:,} = {lora.share:.2%}",
               f"< {SHARE_LIMIT:.0%}", lora.share < SHARE_LIMIT, f"LoRA trains {lora.share:.2%}"),
        Target("LoRA peak RSS / full fine-tuning peak RSS",
               f"{lora.peak_rss / MB:.0f} / {full.peak_rss / MB:.0f} MB = {ratio:.0%}",
               f"<= {RSS_RATIO_LIMIT:.0%}", ratio <= RSS_RATIO_LIMIT, f"peak RSS {ratio:.0%} of full"),
    ]


def summary_line(lora: Measurement, full: Measurement, targets: list[Target], seconds: float) -> str:
    return (f"summary: {targets_met(targets)}; training-time increase "
            f"{lora.increase / full.increase:.0%} of full; LoRA {lora.steps_per_s:.2f} steps/s, full "
            f"{full.steps_per_s:.2f} steps/s ({lora.steps_per_s / full.steps_per_s:.2f}x); {seconds:.0f} s in all")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--steps", type=int, help="timed optimizer steps per configuration (default: 20, --quick 3)")
    parser.add_argument("--warmup", type=int, help="untimed optimizer steps before them (default: 2, --quick 1)")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per optimizer step (default: 8)")
    parser.add_argument("--quick", action="store_true", help="a fast check: 1 warm-up + 3 timed steps each")
    parser.add_argument("--bf16", action="store_true",
                        help="also a LoRA/full pair under bf16 autocast (slow on CPUs without bf16 units)")
    add_run_arguments(parser, ["lora", "full", "recipe"], "the children's logs", workdir=False)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 3 if args.quick else 20
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be at least 1, --warmup at least 0")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return
    m = MODEL
    heading = (f"compact VLA, LoRA vs full fine-tuning: {m['num_cameras']} cameras {m['image_size']}x{m['image_size']}, "
               f"patch {m['patch_size']}, vision {m['vision_hidden']}x{m['vision_layers']} layers, Llama "
               f"{m['lm_hidden']} hidden x {m['lm_layers']} layers, {m['lm_heads']} heads, MLP {m['lm_intermediate']}; "
               f"batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed AdamW steps each")
    with parent_run(heading, "robolake-train-bench-", args.keep) as run:
        configs = plan(args.bf16)
        results: dict[str, Measurement] = {}
        for i, config in enumerate(configs, 1):
            print(f"[{i}/{len(configs)}] {config.label} ...", flush=True)
            r = results[config.key] = measure(config, args, run.workdir)
            print(f"      {r.result['trainable']:,} trainable ({r.share:.2%}), {r.steps_per_s:.2f} steps/s, "
                  f"peak RSS {r.peak_rss / MB:.0f} MB (built {r.result['rss_built'] / MB:.0f} MB)", flush=True)
        print_table(list(results.values()))
        lora, full = results["lora"], results["full"]
        targets = evaluate(lora, full)
        print_targets(targets)
        print(f"\ntraining-time increase over the built model (gradients, AdamW state, activations; baseline and "
              f"weights left out): LoRA {lora.increase / MB:.0f} MB / full {full.increase / MB:.0f} MB = "
              f"{lora.increase / full.increase:.0%}")
    recipe = results["recipe"]
    print(f"\ndemo recipe: {recipe.result['total']:,} parameters, {recipe.samples_per_s:.1f} samples/s "
          f"({recipe.steps_per_s:.2f} steps of {args.batch_size}); closed-loop success after N steps: "
          f"benchmarks/learning_curve.py")
    print("\n" + summary_line(lora, full, targets, run.seconds))


if __name__ == "__main__":
    main(sys.argv[1:])
