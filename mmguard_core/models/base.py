"""The adapter contract every LVLM family implements.

An adapter wraps one real `transformers` model plus its tokenizer and turns
(image in [0, 1] at its original resolution, question, answer) into the model's
inputs *inside torch*, so a pixel-space perturbation receives gradients and one
perturbation serves every surrogate whatever its input size.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch


@dataclass(frozen=True)
class Prompt:
    """One training example in text form.

    `question` is the instruction shown to the model (for captions: the caption
    instruction), already carrying the trigger if any. `answer` is the target the
    loss is taken on (never modified by the engine, except the optional caption
    prefix placement where the trigger sits at the start of the answer).
    `trigger_span` is the character span [start, end) of the trigger inside
    `question` (or inside `answer` when `trigger_in_answer`), None when absent.
    """

    question: str
    answer: str
    trigger_span: tuple[int, int] | None = None
    trigger_in_answer: bool = False


@dataclass
class TokenPositions:
    """Index sets (Ω) into the padded sequence of one batch row."""

    image: torch.Tensor  # (n_img,) positions of image placeholder tokens
    trigger: torch.Tensor  # (n_trig,) positions of trigger tokens (may be empty)
    answer: torch.Tensor  # (n_ans,) query positions predicting an answer token (labels != -100 after shift)


@dataclass
class AdapterOutput:
    loss: torch.Tensor  # (B,) mean cross-entropy over each row's answer tokens
    exact: torch.Tensor  # (B,) bool: argmax is right at every answer token (incl. end) = greedy exact match
    # (B,) mean over each row's answer tokens of the right token's raw logit (the targeted noise's "logit" loss)
    answer_logit: torch.Tensor | None = None
    attentions: dict[int, torch.Tensor] = field(default_factory=dict)  # LM layer -> (B, heads, T, T)
    positions: list[TokenPositions] = field(default_factory=list)


class LVLMAdapter(ABC):
    """Wraps a real transformers VLM; one subclass per family (see registry.py)."""

    family: ClassVar[str]

    def __init__(self, model: torch.nn.Module, tokenizer: Any, image_processor: Any | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor

    # -- required per family -------------------------------------------------
    @abstractmethod
    def pixel_inputs(self, images: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Images (each (3, H, W) float in [0, 1], any size) -> the model's pixel kwargs, differentiably."""

    @abstractmethod
    def text_inputs(self, prompts: Sequence[Prompt]) -> dict[str, Any]:
        """Tokenize prompts with the family template: input_ids, attention_mask, labels, extra kwargs,
        and `positions` (list[TokenPositions]). Pure function of the prompts, so callers may cache it."""

    @abstractmethod
    def forward(
        self,
        images: Sequence[torch.Tensor],
        prompts: Sequence[Prompt],
        attention_layers: Sequence[int] = (),
    ) -> AdapterOutput:
        """Per-sample answer loss (differentiable w.r.t. images and parameters) and, for the LM layers
        requested, eager attention maps."""

    @property
    @abstractmethod
    def num_lm_layers(self) -> int: ...

    # -- shared --------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def clone(self) -> LVLMAdapter:
        """An independent copy (for the simulated attacker's inner fine-tuning)."""
        twin = copy.copy(self)
        twin.model = copy.deepcopy(self.model)
        return twin
