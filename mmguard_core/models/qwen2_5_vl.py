"""Qwen2.5-VL family (`Qwen2_5_VLForConditionalGeneration`): the Qwen2-VL recipe with a windowed-attention
ViT (SwiGLU, RMSNorm). Same chat template, patch packing, image_grid_thw and mm_token_type_ids as Qwen2-VL.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import Qwen2_5_VLForConditionalGeneration

from .qwen2_vl import Qwen2VLAdapter


class Qwen2_5_VLAdapter(Qwen2VLAdapter):  # noqa: N801 - mirrors the transformers class name
    family: ClassVar[str] = "qwen2_5_vl"
    model_class = Qwen2_5_VLForConditionalGeneration
    model_types = ("qwen2_5_vl",)
