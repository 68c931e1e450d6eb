"""Gemma 3 family (`Gemma3ForConditionalGeneration`: SigLIP encoder, average-pooled soft tokens, Gemma 3 LM).

Template (the Gemma 3 chat template after the processor expands <start_of_image>)::

    <bos><start_of_turn>user\\n\\n\\n<start_of_image><image_soft_token>...<end_of_image>\\n\\n{question}<end_of_turn>\\n
    <start_of_turn>model\\n{answer}<end_of_turn>

``token_type_ids`` is 1 on the image soft tokens (they attend to each other bidirectionally).
Pixels: resized to the SigLIP input size (896 for real checkpoints; no pan-and-scan), mean = std = 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from transformers import Gemma3ForConditionalGeneration

from .base import Prompt
from .common import HALF, HFAdapter, Rendered


class Gemma3Adapter(HFAdapter):
    family: ClassVar[str] = "gemma3"
    model_class = Gemma3ForConditionalGeneration
    model_types = ("gemma3",)
    default_mean = HALF
    default_std = HALF
    extra_text_keys = ("token_type_ids",)

    def num_image_tokens(self) -> int:
        return int(self.config.mm_tokens_per_image)

    def image_block(self) -> str:
        soft = self.tokenizer.convert_ids_to_tokens(self.image_token_id)
        return f"\n\n<start_of_image>{soft * self.num_image_tokens()}<end_of_image>\n\n"

    def render(self, prompt: Prompt) -> Rendered:
        head = f"{self.token_str('bos_token', '<bos>')}<start_of_turn>user\n{self.image_block()}"
        question_start = len(head)
        text = f"{head}{prompt.question}<end_of_turn>\n<start_of_turn>model\n"
        answer_start = len(text)
        text += f"{prompt.answer}<end_of_turn>"
        return Rendered(text, question_start, answer_start, answer_start)

    def extra_text_inputs(
        self, input_ids: torch.Tensor, answer_start: Sequence[int]
    ) -> dict[str, torch.Tensor]:
        return {"token_type_ids": (input_ids == self.image_token_id).long()}
