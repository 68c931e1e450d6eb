"""PaliGemma family (`PaliGemmaForConditionalGeneration`: SigLIP encoder, linear projector, Gemma LM).

Layout (the PaliGemma processor's): ``<image>...<image><bos>{question}\\n{answer}<eos>`` with
``token_type_ids`` 0 on the prefix (image + question, attended bidirectionally) and 1 on the
suffix (answer + <eos>, causal); prefix and suffix are tokenized separately, as the processor
encodes the suffix as a text pair. Pixels: resized to the SigLIP input size, mean = std = 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from transformers import PaliGemmaForConditionalGeneration

from .base import Prompt
from .common import HALF, HFAdapter, Rendered


class PaliGemmaAdapter(HFAdapter):
    family: ClassVar[str] = "paligemma"
    model_class = PaliGemmaForConditionalGeneration
    model_types = ("paligemma",)
    default_mean = HALF
    default_std = HALF
    extra_text_keys = ("token_type_ids",)

    def num_image_tokens(self) -> int:
        patch = self.config.vision_config.patch_size
        return (self.image_size[0] // patch) * (self.image_size[1] // patch)

    def render(self, prompt: Prompt) -> Rendered:
        head = f"{self.image_block()}{self.token_str('bos_token', '<bos>')}"
        question_start = len(head)
        text = f"{head}{prompt.question}\n"
        answer_start = len(text)
        text += prompt.answer + self.token_str("eos_token", "<eos>")
        return Rendered(text, question_start, answer_start, answer_start, separate_answer=True)

    def extra_text_inputs(
        self, input_ids: torch.Tensor, answer_start: Sequence[int]
    ) -> dict[str, torch.Tensor]:
        token_type_ids = torch.zeros_like(input_ids)
        for row, start in enumerate(answer_start):
            token_type_ids[row, start:] = 1
        return {"token_type_ids": token_type_ids}
