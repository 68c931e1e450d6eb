"""LLaVA-1.5 family (`LlavaForConditionalGeneration`: CLIP vision tower + MLP projector + Llama-style LM).

Template (llava-hf chat template): ``<s>USER: <image>\\n{question} ASSISTANT: {answer}</s>``, the
``<image>`` placeholder expanded to one token per vision patch (the CLS token is dropped under
the "default" feature strategy). Pixels: the processor resizes the shortest edge and centre-crops;
we resize the whole image to the square input size (every pixel of a perturbation reaches the
model), bicubic with antialiasing, CLIP mean/std.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import LlavaForConditionalGeneration

from .base import Prompt
from .common import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, HFAdapter, Rendered


class LlavaAdapter(HFAdapter):
    family: ClassVar[str] = "llava"
    model_class = LlavaForConditionalGeneration
    model_types = ("llava",)
    default_mean = OPENAI_CLIP_MEAN
    default_std = OPENAI_CLIP_STD

    def num_image_tokens(self) -> int:
        vision = self.config.vision_config
        patches = (self.image_size[0] // vision.patch_size) * (self.image_size[1] // vision.patch_size)
        return patches + (1 if self.config.vision_feature_select_strategy == "full" else 0)

    def render(self, prompt: Prompt) -> Rendered:
        head = f"{self.token_str('bos_token')}USER: {self.image_block()}\n"
        question_start = len(head)
        text = f"{head}{prompt.question} ASSISTANT:"
        label_start = len(text)
        text += " "
        answer_start = len(text)
        text += prompt.answer + self.token_str("eos_token", "</s>")
        return Rendered(text, question_start, label_start, answer_start)
