"""Idefics3 family (`Idefics3ForConditionalGeneration`: SigLIP encoder, pixel-shuffle connector, Llama LM;
also the SmolVLM checkpoints published with model_type "idefics3").

Template (the Idefics3 chat template, one image, no image splitting)::

    <bos>User:<fake_token_around_image><global-img><image>...<fake_token_around_image>{question}<end_of_utterance>\\n
    Assistant: {answer}<end_of_utterance>

The processor's optional image splitting (a grid of tiles with <row_i_col_j> tags plus the global
image) is not used: every image is resized to the vision tower's square input size (the global
image). Pixels: (B, 1, 3, H, W), mean = std = 0.5.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from transformers import Idefics3ForConditionalGeneration

from .base import Prompt
from .common import HALF, HFAdapter, Rendered


class Idefics3Adapter(HFAdapter):
    family: ClassVar[str] = "idefics3"
    model_class = Idefics3ForConditionalGeneration
    model_types = ("idefics3",)
    default_mean = HALF
    default_std = HALF

    def num_image_tokens(self) -> int:
        vision = self.config.vision_config
        patches = (self.image_size[0] // vision.patch_size) * (self.image_size[1] // vision.patch_size)
        return int(patches / (self.config.scale_factor**2))

    def image_block(self) -> str:
        image = self.tokenizer.convert_ids_to_tokens(self.image_token_id)
        fake = "<fake_token_around_image>"
        return f"{fake}<global-img>{image * self.num_image_tokens()}{fake}"

    def render(self, prompt: Prompt) -> Rendered:
        head = f"{self.token_str('bos_token')}User:{self.image_block()}"
        question_start = len(head)
        text = f"{head}{prompt.question}<end_of_utterance>\nAssistant:"
        label_start = len(text)
        text += " "
        answer_start = len(text)
        text += f"{prompt.answer}<end_of_utterance>"
        return Rendered(text, question_start, label_start, answer_start)

    def pack_pixels(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        # The model drops images whose normalised pixels are all exactly 0 as padding; keep real ones.
        blank = (pixels == 0).flatten(1).all(dim=1)
        if bool(blank.any()):
            nudge = torch.zeros_like(pixels)
            nudge[:, 0, 0, 0] = 1e-6
            pixels = pixels + nudge * blank.view(-1, 1, 1, 1).to(pixels.dtype)
        return {"pixel_values": pixels[:, None]}
