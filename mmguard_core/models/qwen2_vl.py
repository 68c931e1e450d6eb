"""Qwen2-VL family (`Qwen2VLForConditionalGeneration`: native-resolution ViT with 2x2 patch merger, M-RoPE LM).

Template (the Qwen2-VL chat template with its default system turn)::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
    <|vision_start|><|image_pad|>...<|vision_end|>{question}<|im_end|>\\n<|im_start|>assistant\\n{answer}<|im_end|>

Pixels: the model takes any resolution that is a multiple of patch_size x merge_size; we resize
every image to one fixed size (default 448 x 448 for real checkpoints, 256 image tokens; set
another with `image_size=`), normalise with the CLIP mean/std, and flatten the patches exactly as
the image processor does (temporal frames duplicated): pixel_values (B*gh*gw, 3*T*p*p) plus
image_grid_thw (B, 3). `mm_token_type_ids` (1 on image pads) is required by the model's M-RoPE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from transformers import Qwen2VLForConditionalGeneration

from .base import Prompt
from .common import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, HFAdapter, Rendered

SYSTEM = "You are a helpful assistant."
DEFAULT_SIZE = 448


class Qwen2VLAdapter(HFAdapter):
    family: ClassVar[str] = "qwen2_vl"
    model_class = Qwen2VLForConditionalGeneration
    model_types = ("qwen2_vl",)
    default_mean = OPENAI_CLIP_MEAN
    default_std = OPENAI_CLIP_STD
    extra_text_keys = ("mm_token_type_ids",)

    def default_image_size(self) -> int:
        return DEFAULT_SIZE

    @property
    def _factor(self) -> int:
        vision = self.config.vision_config
        return int(vision.patch_size) * int(vision.spatial_merge_size)

    def check_image_size(self) -> None:
        h, w = self.image_size
        if h % self._factor or w % self._factor:
            raise ValueError(
                f"{self.family}: image size {self.image_size} must be a multiple of {self._factor}"
            )

    def num_image_tokens(self) -> int:
        vision = self.config.vision_config
        grid = (self.image_size[0] // vision.patch_size) * (self.image_size[1] // vision.patch_size)
        return grid // (vision.spatial_merge_size**2)

    def render(self, prompt: Prompt) -> Rendered:
        head = (
            f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
            f"<|vision_start|>{self.image_block()}<|vision_end|>"
        )
        question_start = len(head)
        text = f"{head}{prompt.question}<|im_end|>\n<|im_start|>assistant\n"
        answer_start = len(text)
        text += f"{prompt.answer}<|im_end|>"
        return Rendered(text, question_start, answer_start, answer_start)

    def pack_pixels(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        vision = self.config.vision_config
        patch, merge, temporal = (
            int(vision.patch_size),
            int(vision.spatial_merge_size),
            int(vision.temporal_patch_size),
        )
        batch, channel, height, width = pixels.shape
        gh, gw = height // patch, width // patch
        patches = pixels.reshape(batch, channel, gh // merge, merge, patch, gw // merge, merge, patch)
        patches = patches.permute(0, 2, 5, 3, 6, 1, 4, 7)
        flat = (
            patches.unsqueeze(6)
            .expand(-1, -1, -1, -1, -1, -1, temporal, -1, -1)
            .reshape(batch * gh * gw, channel * temporal * patch * patch)
        )
        grid = torch.tensor([[1, gh, gw]] * batch, dtype=torch.long, device=pixels.device)
        return {"pixel_values": flat, "image_grid_thw": grid}

    def extra_text_inputs(
        self, input_ids: torch.Tensor, answer_start: Sequence[int]
    ) -> dict[str, torch.Tensor]:
        return {"mm_token_type_ids": (input_ids == self.image_token_id).long()}

    @classmethod
    def size_from_preprocessor(cls, pre: dict[str, Any], config: Any) -> int | tuple[int, int] | None:
        """A square size inside the processor's [min_pixels, max_pixels] bounds, DEFAULT_SIZE when it fits."""
        vision = config.vision_config
        factor = int(vision.patch_size) * int(vision.spatial_merge_size)
        size = pre.get("size") or {}
        low = pre.get("min_pixels") or size.get("shortest_edge") or 0
        high = pre.get("max_pixels") or size.get("longest_edge") or 10**9
        side = DEFAULT_SIZE - DEFAULT_SIZE % factor
        while side * side > high and side > factor:
            side -= factor
        while side * side < low:
            side += factor
        return side
