"""Export of a checkpoint's merged policy to TorchScript, and its parity with PyTorch.

`export_policy` traces `CompactVLA.predict` itself (torch.jit.trace, CPU, float32 or dynamic
int8): the vision encoder, the projector and the greedy decoding of all D action tokens with
its KV cache, unrolled into one graph over the D steps, so the exported program computes what
the PyTorch model computes. Inputs are images (B, cameras, 3, S, S) float in [0, 1], the
instruction ids and mask (B, max_instruction_tokens) of the word tokenizer, which stays in
Python, the raw state (B, state_dim) of a model with state input and, for a FiLM model, the
instructions' sentence embeddings (B, 384), which `ExportedPolicy` computes in Python with the
installed encoder that model_config.json names (checked at load); outputs are the normalized actions (B, D), their token ids and the entropies (B, D).
The batch size is free; cameras, image size and instruction length are the model's, fixed.
ONNX is not offered: neither onnx nor onnxruntime is installed here. torch 2.13 marks
torch.jit.trace deprecated in favour of torch.export; torch.export handles the float model
(checked: dynamic batch, same outputs) but not torch.ao's dynamically quantized linears (their
packed weights are TorchScript objects it cannot fake), so TorchScript, which takes both, stays
the one format here until int8 moves to torchao.

The .pt file is self-contained: the model config, tokenizer, dataset statistics, camera
order and camera transforms (the bundle's camera_frames.json) travel in it as TorchScript
extra files, and `ExportedPolicy.load` gives back an object with CompactVLA's
`predict_actions` that `training.runtime.Policy` accepts (`.policy()`), which crops, resizes
and encodes live frames as the dataset's gold frames were.

`check_parity` compares an export with the PyTorch model it came from on random observations
(random images, instructions of random words of the tokenizer's vocabulary);
`quantization_change` compares an int8 export with the float PyTorch model: how far int8 moves
the actions, how many action tokens it keeps, how it shifts the entropy.

    robolake export BUNDLE OUT.pt [--int8] [--observations 100]
"""

from __future__ import annotations

import json
import time
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from robolake import progress
from robolake.arguments import ArgumentParser, positive_int
from robolake.errors import RobolakeError
from robolake.overwrite import check_replace
from robolake.staging import staged
from training.model import (CompactVLA, ModelConfig, checkpointing_question_asked, instruction_embeddings, require_files,
                            sentence_encoder)
from training.runtime import (
    Policy,
    SafetyConfig,
    checkpoint_camera_frames,
    checkpoint_cameras,
    checkpoint_crop_scale,
    load_inference_model,
    quantize_int8,
    warn_frames_as_given,
)
from training.tokenizers import SPECIAL_TOKENS, InstructionTokenizer

EXPORT_INFO = "export.json"
MODEL_CONFIG = "model_config.json"
TOKENIZER = "tokenizer.json"
STATISTICS = "dataset_statistics.json"


class ParityError(RobolakeError):
    """An export's outputs differ from its PyTorch model's by more than the tolerance."""


class _Predict(nn.Module):
    """`CompactVLA.predict` as a forward returning a tuple, which torch.jit.trace needs."""

    def __init__(self, model: CompactVLA):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, instruction_ids: Tensor, instruction_mask: Tensor,
                *inputs: Tensor) -> tuple[Tensor, ...]:
        """`inputs`: the raw robot state (B, state_dim), only for a model with state input, then the
        instructions' sentence embeddings (B, dim), only for a FiLM model (`_optional_inputs`)."""
        config = self.model.config
        state = inputs[0] if config.state_dim else None
        embedding = inputs[-1] if config.language_conditioning == "film" else None
        out = self.model.predict(images, instruction_ids, instruction_mask, state, embedding)
        return out["actions"], out["tokens"], out["entropy"], out["chunk"]


def _optional_inputs(config: ModelConfig, state: Tensor | None, instructions: list[str]) -> tuple[Tensor, ...]:
    """The traced program's inputs after the instruction ids and mask: the state for a model with state
    input, the sentence embeddings, computed here in Python, for a FiLM model."""
    if config.state_dim and state is None:
        raise ValueError("this policy reads the robot state: pass state")
    return ((state.float(),) if config.state_dim else ()) + (
        (instruction_embeddings(instructions),) if config.language_conditioning == "film" else ())


def export_policy(bundle_path: str | Path, out_path: str | Path, int8: bool = False, overwrite: bool = False) -> Path:
    """Trace the bundle's merged model (int8: dynamically quantized first) into a TorchScript file;
    `overwrite` replaces an earlier export at `out_path` (robolake/overwrite.py)."""
    bundle = Path(bundle_path)
    check_replace(str(out_path), "a TorchScript export", overwrite, _is_export, keep={"the checkpoint": str(bundle)})
    require_files(bundle, (STATISTICS,))
    model = load_inference_model(bundle)
    if int8:
        model = quantize_int8(model)
    statistics_text = (bundle / STATISTICS).read_text()
    info = {"int8": int8, "cameras": checkpoint_cameras(bundle, json.loads(statistics_text)),
            "crop_scale": checkpoint_crop_scale(bundle), "camera_frames": checkpoint_camera_frames(bundle),
            "bundle": str(bundle), "torch": torch.__version__}
    # One example without padding and one almost all padding, so no padding-dependent branch is frozen.
    words = [token for token in model.tokenizer.tokens if token not in SPECIAL_TOKENS]
    instructions = [" ".join(words * model.config.max_instruction_tokens), ""]
    ids, mask = model.tokenizer.batch_encode(instructions, model.config.max_instruction_tokens)
    size = model.config.image_size
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, model.config.num_cameras, 3, size, size, generator=generator)
    inputs = _optional_inputs(model.config, torch.randn(2, model.config.state_dim, generator=generator), instructions)
    out = Path(out_path)
    with torch.no_grad(), _torchscript(), staged(str(out)) as staging:
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks and mask helpers: constants here
        with checkpointing_question_asked():
            traced = torch.jit.trace(_Predict(model).eval(), (images, ids, mask, *inputs), check_trace=False)
        torch.jit.save(traced, staging, _extra_files={
            EXPORT_INFO: json.dumps(info), MODEL_CONFIG: json.dumps(asdict(model.config)),
            TOKENIZER: json.dumps({"type": "word", "tokens": model.tokenizer.tokens}), STATISTICS: statistics_text,
        })
    return out


def _is_export(path: str) -> bool:
    """A file `export_policy` wrote: a TorchScript archive with its export.json."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(f"/extra/{EXPORT_INFO}") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


@contextmanager
def _torchscript():
    """torch.jit's deprecation notices silenced: TorchScript is the format here on purpose (module docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        yield


class ExportedPolicy:
    """A TorchScript export loaded back, with CompactVLA's `config` and `predict_actions`."""

    def __init__(self, module: torch.jit.ScriptModule, config: ModelConfig, tokenizer: InstructionTokenizer,
                 statistics: dict, cameras: list[str], int8: bool, crop_scale: float = 1.0,
                 camera_frames: list[dict] | None = None):
        self.module, self.config, self.tokenizer = module, config, tokenizer
        self.statistics, self.cameras, self.int8, self.crop_scale = statistics, cameras, int8, crop_scale
        self.camera_frames = camera_frames  # the bundle's camera_frames.json

    @classmethod
    def load(cls, path: str | Path) -> ExportedPolicy:
        extra = dict.fromkeys((EXPORT_INFO, MODEL_CONFIG, TOKENIZER, STATISTICS), "")
        with _torchscript():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        info = json.loads(extra[EXPORT_INFO])
        if info.get("camera_frames") is None:
            warn_frames_as_given(f"{path}: the export has no camera_frames")
        config = ModelConfig(**json.loads(extra[MODEL_CONFIG]))
        if config.language_conditioning == "film":
            sentence_encoder(config)
        return cls(module.eval(), config,
                   InstructionTokenizer(json.loads(extra[TOKENIZER])["tokens"]), json.loads(extra[STATISTICS]),
                   info["cameras"], info["int8"], info["crop_scale"], info.get("camera_frames"))

    @torch.no_grad()
    def predict_actions(self, images: Tensor, instructions: list[str],
                        state: Tensor | None = None) -> dict[str, Tensor]:
        """As `CompactVLA.predict_actions`: actions (B, D) in [-1, 1], tokens (B, D), entropy (B, D) in nats,
        chunk (B, horizon, D)."""
        ids, mask = self.tokenizer.batch_encode(list(instructions), self.config.max_instruction_tokens)
        inputs = _optional_inputs(self.config, state, list(instructions))
        actions, tokens, entropy, chunk = self.module(images.float(), ids, mask, *inputs)
        return {"actions": actions, "tokens": tokens, "entropy": entropy, "chunk": chunk}

    def policy(self, safety: SafetyConfig | None = None) -> Policy:
        """The runtime around this export (preprocessing, denormalization, safety filter)."""
        return Policy(self, self.statistics, self.cameras, safety, crop_scale=self.crop_scale,
                      camera_frames=self.camera_frames)


@dataclass(frozen=True)
class Comparison:
    """A candidate policy's outputs against a reference's on the same observations."""

    observations: int
    max_abs_action_diff: float  # normalized actions, [-1, 1] scale
    mean_abs_action_diff: float
    token_agreement: float  # share of action tokens (observations x dims) that are equal
    max_abs_entropy_diff: float  # nats
    mean_entropy_change: float  # candidate minus reference, nats


def random_observations(config: ModelConfig, tokenizer: InstructionTokenizer, count: int,
                        seed: int = 0) -> tuple[Tensor, list[str], Tensor | None]:
    """`count` observations: images uniform in [0, 1], instructions of 0 to max_instruction_tokens random
    words of the vocabulary (the longest are cut, so both padded and full-length rows occur) and, for a model
    with state input, standard normal states (None otherwise)."""
    generator = torch.Generator().manual_seed(seed)
    size = config.image_size
    images = torch.rand(count, config.num_cameras, 3, size, size, generator=generator)
    state = torch.randn(count, config.state_dim, generator=generator) if config.state_dim else None
    words = [token for token in tokenizer.tokens if token not in SPECIAL_TOKENS]
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, config.max_instruction_tokens + 1, count) if words else np.zeros(count, int)
    instructions = [" ".join(rng.choice(words, length)) if length else "" for length in lengths]
    return images, instructions, state


def compare_policies(reference, candidate, observations: int = 100, seed: int = 0,
                     batch_size: int = 10) -> Comparison:
    """Both policies' `predict_actions` on the same random observations, in batches."""
    images, instructions, state = random_observations(reference.config, reference.tokenizer, observations, seed)
    outputs: dict[str, list[dict]] = {"reference": [], "candidate": []}
    for start in range(0, observations, batch_size):
        rows = slice(start, start + batch_size)
        batch = images[rows], instructions[rows], None if state is None else state[rows]
        outputs["reference"].append(reference.predict_actions(*batch))
        outputs["candidate"].append(candidate.predict_actions(*batch))
    ref, cand = ({key: torch.cat([out[key].cpu() for out in outputs[side]]) for key in ("actions", "tokens", "entropy")}
                 for side in ("reference", "candidate"))
    action_diff = (cand["actions"].double() - ref["actions"].double()).abs()
    entropy_diff = cand["entropy"].double() - ref["entropy"].double()
    return Comparison(
        observations=observations,
        max_abs_action_diff=action_diff.max().item(),
        mean_abs_action_diff=action_diff.mean().item(),
        token_agreement=(cand["tokens"] == ref["tokens"]).double().mean().item(),
        max_abs_entropy_diff=entropy_diff.abs().max().item(),
        mean_entropy_change=entropy_diff.mean().item(),
    )


def check_parity(bundle_path: str | Path, exported_path: str | Path, observations: int = 100,
                 tolerance: float = 1e-5, seed: int = 0) -> Comparison:
    """The export against the PyTorch model it was made from (int8 too for an int8 export); raises
    ParityError when the normalized actions differ by more than `tolerance` anywhere."""
    exported = ExportedPolicy.load(exported_path)
    reference = load_inference_model(bundle_path)
    comparison = compare_policies(quantize_int8(reference) if exported.int8 else reference, exported,
                                  observations, seed)
    if comparison.max_abs_action_diff > tolerance:
        raise ParityError(f"{exported_path}: max abs action difference {comparison.max_abs_action_diff:.3g} over "
                          f"{observations} observations exceeds {tolerance:g} ({comparison})")
    return comparison


def quantization_change(bundle_path: str | Path, int8_path: str | Path, observations: int = 100,
                        seed: int = 0) -> Comparison:
    """How an int8 export's outputs differ from the float PyTorch model's on the same observations."""
    return compare_policies(load_inference_model(bundle_path), ExportedPolicy.load(int8_path), observations, seed)


def run(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="robolake export",
                            description="Export a checkpoint bundle's merged policy to TorchScript.")
    parser.add_argument("bundle", help="checkpoint bundle folder, e.g. lake/runs/finetune/best")
    parser.add_argument("out", help="the TorchScript file to write (.pt)")
    parser.add_argument("--int8", action="store_true", help="dynamic int8 quantization of the language model")
    parser.add_argument("--observations", type=positive_int, default=100, help="random observations of the parity check")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max abs difference of normalized actions")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it is an earlier export")
    args = parser.parse_args(argv)
    started = time.time()
    with progress.console.status(f"tracing {args.bundle}{' (int8)' if args.int8 else ''}") as status:
        out = export_policy(args.bundle, args.out, int8=args.int8, overwrite=args.overwrite)
        status.update(f"parity check of {out} on {args.observations} observations")
        parity = check_parity(args.bundle, out, args.observations, args.tolerance)
        if args.int8:
            status.update("int8 against the float model")
            change = quantization_change(args.bundle, out, args.observations)
    int8_change = (f"; int8 vs float: token agreement {change.token_agreement:.1%}, mean abs action difference "
                   f"{change.mean_abs_action_diff:.4f}, mean entropy change {change.mean_entropy_change:+.4f} nats"
                   if args.int8 else "")
    print(f"exported {out} in {time.time() - started:.1f} s: parity with PyTorch over {parity.observations} "
          f"observations, max abs action difference {parity.max_abs_action_diff:.3g}, max abs entropy difference "
          f"{parity.max_abs_entropy_diff:.3g}{int8_change}")
    return 0
