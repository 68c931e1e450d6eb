"""InternVL family (`InternVLForConditionalGeneration`, the transformers-native "-hf" checkpoints such as
OpenGVLab/InternVL3-1B-hf: InternViT, pixel-shuffle MLP projector, Qwen2 LM).

Template (Qwen chat turns; the processor expands the image to <img><IMG_CONTEXT>...</img>)::

    <|im_start|>user\\n<img><IMG_CONTEXT>...</img>\\n{question}<|im_end|>\\n<|im_start|>assistant\\n{answer}<|im_end|>

Pixels: one tile (no dynamic tiling), resized to the vision input size (448 for real
checkpoints); mean/std from the checkpoint's preprocessor_config.json (ImageNet by default).
"""

from __future__ import annotations

from typing import ClassVar

from transformers import InternVLForConditionalGeneration

from .base import Prompt
from .common import IMAGENET_MEAN, IMAGENET_STD, HFAdapter, Rendered


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int | float):
        return int(value), int(value)
    return int(value[0]), int(value[1])


class InternVLAdapter(HFAdapter):
    family: ClassVar[str] = "internvl"
    model_class = InternVLForConditionalGeneration
    model_types = ("internvl",)
    default_mean = IMAGENET_MEAN
    default_std = IMAGENET_STD

    def default_image_size(self) -> tuple[int, int]:
        return _pair(self.config.vision_config.image_size)

    def check_image_size(self) -> None:
        expected = _pair(self.config.vision_config.image_size)
        if self.image_size != expected:
            raise ValueError(f"internvl: the vision tower takes {expected} images, got {self.image_size}")

    def num_image_tokens(self) -> int:
        ph, pw = _pair(self.config.vision_config.patch_size)
        patches = (self.image_size[0] // ph) * (self.image_size[1] // pw)
        return int(patches * self.config.downsample_ratio**2)

    def image_block(self) -> str:
        context = self.tokenizer.convert_ids_to_tokens(self.image_token_id)
        return f"<img>{context * self.num_image_tokens()}</img>"

    def render(self, prompt: Prompt) -> Rendered:
        head = f"<|im_start|>user\n{self.image_block()}\n"
        question_start = len(head)
        text = f"{head}{prompt.question}<|im_end|>\n<|im_start|>assistant\n"
        answer_start = len(text)
        text += f"{prompt.answer}<|im_end|>"
        return Rendered(text, question_start, answer_start, answer_start)
