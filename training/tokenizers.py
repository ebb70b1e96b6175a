"""Tokenizers of the compact VLA: actions to bin ids and instruction text to word ids.

`ActionTokenizer` discretizes normalized actions the OpenVLA way: every dimension is
cut into `bins` uniform bins over [-1, 1] (the dataset's statistics have already mapped
actions into that range) and decoded to the bin centers. `InstructionTokenizer` is a
word-level vocabulary built from a dataset's instruction texts; it is saved as JSON next
to every checkpoint, since the language model's embedding rows follow its ids.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

ACTION_LOW, ACTION_HIGH = -1.0, 1.0


@dataclass(frozen=True)
class ActionTokenizer:
    """Uniform per-dimension binning of normalized actions over [-1, 1]."""

    bins: int = 256

    def __post_init__(self) -> None:
        if self.bins < 2:
            raise ValueError(f"an action tokenizer needs at least 2 bins, got {self.bins}")

    @property
    def bin_width(self) -> float:
        return (ACTION_HIGH - ACTION_LOW) / self.bins

    def encode(self, actions: Tensor) -> Tensor:
        """Bin ids in [0, bins) of `actions` (..., D); values outside [-1, 1] are clipped first."""
        if not torch.isfinite(actions).all():
            raise ValueError("actions contain NaN or inf: they cannot be tokenized (check the dataset's normalization)")
        clipped = actions.clamp(ACTION_LOW, ACTION_HIGH)
        ids = torch.floor((clipped - ACTION_LOW) / self.bin_width).long()
        return ids.clamp_(0, self.bins - 1)  # +1.0 falls on the upper edge of the last bin

    def gaussian_targets(self, actions: Tensor, sigma_bins: float) -> Tensor:
        """(..., D, bins) target distributions: the mass of a Gaussian centred on each (clipped)
        action value, `sigma_bins` bins wide, in each bin, renormalized over [-1, 1]."""
        position = (actions.clamp(ACTION_LOW, ACTION_HIGH) - ACTION_LOW) / self.bin_width  # in bins, [0, bins]
        edges = torch.arange(self.bins + 1, device=actions.device, dtype=torch.float32)
        cdf = 0.5 * (1 + torch.special.erf((edges - position[..., None]) / (sigma_bins * 2**0.5)))
        mass = cdf[..., 1:] - cdf[..., :-1]
        return mass / mass.sum(-1, keepdim=True)

    def decode(self, ids: Tensor) -> Tensor:
        """The centers of bins `ids`, as float32 actions in [-1, 1]."""
        return ACTION_LOW + (ids.float() + 0.5) * self.bin_width


PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)  # ids 0..3 in this order
_WORDS = re.compile(r"\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Lower-cased words, every punctuation character a token of its own."""
    return _WORDS.findall(text.lower())


class InstructionTokenizer:
    """Word-level tokenizer over a dataset's instructions: `<pad>`=0, `<unk>`=1, `<bos>`=2, `<eos>`=3, then words."""

    def __init__(self, tokens: list[str]):
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"an instruction vocabulary must start with {SPECIAL_TOKENS}, got {tokens[:4]}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("an instruction vocabulary has duplicate tokens")
        self.tokens = list(tokens)
        self._ids = {token: i for i, token in enumerate(self.tokens)}
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = range(len(SPECIAL_TOKENS))

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = 1) -> InstructionTokenizer:
        """A vocabulary of the words seen at least `min_count` times, most frequent first (ties alphabetical)."""
        counts = Counter(word for text in texts for word in split_words(text))
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls([*SPECIAL_TOKENS, *words])

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, max_length: int) -> list[int]:
        """`<bos>` words `<eos>`, unknown words as `<unk>`; long texts lose their last words, never `<eos>`."""
        if max_length < 3:
            raise ValueError(f"max_length must leave room for <bos>, one word and <eos>, got {max_length}")
        words = [self._ids.get(word, self.unk_id) for word in split_words(text)]
        return [self.bos_id, *words[: max_length - 2], self.eos_id]

    def batch_encode(self, texts: list[str], max_length: int) -> tuple[Tensor, Tensor]:
        """Ids (N, max_length) right-padded with `<pad>` and the mask of real tokens (N, max_length)."""
        ids = torch.full((len(texts), max_length), self.pad_id, dtype=torch.long)
        for row, text in enumerate(texts):
            encoded = self.encode(text, max_length)
            ids[row, : len(encoded)] = torch.tensor(encoded)
        return ids, ids != self.pad_id

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"type": "word", "tokens": self.tokens}, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> InstructionTokenizer:
        data = json.loads(Path(path).read_text())
        if data.get("type") != "word":
            raise ValueError(f"{path} is not a word-level instruction tokenizer")
        return cls(data["tokens"])
