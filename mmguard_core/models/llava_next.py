"""LLaVA-NeXT / LLaVA-1.6 family (`LlavaNextForConditionalGeneration`: CLIP tower, "anyres" tiling, image newline).

Pixels: every image is first resized to one canonical size (default: the vision tower's input
size, e.g. 336 x 336; set another with `image_size=`), then processed exactly like the LLaVA-NeXT
image processor would process an image of that size: resize to fit the best grid pinpoint,
zero-pad (black) to it, cut into tiles of the tower's input size, prepend the whole image resized
to one tile; `image_sizes` = the canonical size. All of it in torch, so gradients reach the image.
The number of image placeholder tokens follows the processor's formula (base tile + unpadded
tiles + one newline per row).

Template from the checkpoint's chat template: Mistral ``[INST] <image>\\n{q} [/INST] {a}</s>``,
ChatML (``<|im_start|>``, the 34B) or Vicuna ``USER: <image>\\n{q} ASSISTANT: {a}</s>`` (default,
also for tiny models).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from transformers import LlavaNextForConditionalGeneration
from transformers.image_processing_utils import select_best_resolution

from .base import Prompt
from .common import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, HFAdapter, Rendered, resize


class LlavaNextAdapter(HFAdapter):
    family: ClassVar[str] = "llava_next"
    model_class = LlavaNextForConditionalGeneration
    model_types = ("llava_next",)
    default_mean = OPENAI_CLIP_MEAN
    default_std = OPENAI_CLIP_STD

    @property
    def tile(self) -> int:
        return int(self.config.vision_config.image_size)

    def check_image_size(self) -> None:
        if min(self.image_size) < 1:
            raise ValueError(f"llava_next: bad image size {self.image_size}")

    # -- geometry (processor's rules, for the canonical size) ----------------------
    def _best_resolution(self) -> tuple[int, int]:
        best = select_best_resolution(list(self.image_size), self.config.image_grid_pinpoints)
        return int(best[0]), int(best[1])

    def _fit(self, best: tuple[int, int]) -> tuple[int, int]:
        """get_patch_output_size: the canonical image resized to fit `best`, aspect kept."""
        height, width = self.image_size
        scale_w, scale_h = best[1] / width, best[0] / height
        if scale_w < scale_h:
            return min(-(-height * best[1] // width), best[0]), best[1]
        return best[0], min(-(-width * best[0] // height), best[1])

    def num_image_tokens(self) -> int:
        height, width = self.image_size
        best_h, best_w = self._best_resolution()
        patch = int(self.config.vision_config.patch_size)
        per_side = self.tile // patch
        scale_h, scale_w = best_h // self.tile, best_w // self.tile
        current_h, current_w = per_side * scale_h, per_side * scale_w
        if width / height > current_w / current_h:
            new_h = int(round(height * (current_w / width), 7))
            current_h -= ((current_h - new_h) // 2) * 2
        else:
            new_w = int(round(width * (current_h / height), 7))
            current_w -= ((current_w - new_w) // 2) * 2
        base = per_side * per_side + (1 if self.config.vision_feature_select_strategy == "full" else 0)
        return base + current_h * current_w + current_h

    # -- LVLMAdapter ---------------------------------------------------------------
    def pixel_inputs(self, images: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        canonical = self.resized_pixels(images)  # (B, 3, H, W) in [0, 1]
        best_h, best_w = self._best_resolution()
        fit_h, fit_w = self._fit((best_h, best_w))
        fitted = resize(canonical, (fit_h, fit_w))
        top, rem_y = divmod(best_h - fit_h, 2)
        left, rem_x = divmod(best_w - fit_w, 2)
        padded = F.pad(fitted, (left, left + rem_x, top, top + rem_y), value=0.0)
        tile = self.tile
        batch = padded.shape[0]
        tiles = (
            padded.reshape(batch, 3, best_h // tile, tile, best_w // tile, tile)
            .permute(0, 2, 4, 1, 3, 5)
            .reshape(batch, -1, 3, tile, tile)
        )
        base = resize(canonical, (tile, tile))[:, None]
        pixel_values = self.normalise(torch.cat([base, tiles], dim=1)).to(self.dtype)
        sizes = torch.tensor([list(self.image_size)] * batch, dtype=torch.long, device=pixel_values.device)
        return {"pixel_values": pixel_values, "image_sizes": sizes}

    def _style(self) -> str:
        template = getattr(self.tokenizer, "chat_template", None) or ""
        if isinstance(template, dict):
            template = " ".join(str(v) for v in template.values())
        if "[INST]" in template:
            return "mistral"
        if "<|im_start|>" in template:
            return "chatml"
        return "vicuna"

    def render(self, prompt: Prompt) -> Rendered:
        bos, eos = self.token_str("bos_token"), self.token_str("eos_token", "</s>")
        style = self._style()
        if style == "mistral":
            head, mid, sep, end = f"{bos}[INST] {self.image_block()}\n", " [/INST]", " ", eos
        elif style == "chatml":
            head = f"{bos}<|im_start|>user\n{self.image_block()}\n"
            mid, sep, end = "<|im_end|>\n<|im_start|>assistant\n", "", "<|im_end|>"
        else:
            head, mid, sep, end = f"{bos}USER: {self.image_block()}\n", " ASSISTANT:", " ", eos
        question_start = len(head)
        text = f"{head}{prompt.question}{mid}"
        label_start = len(text)
        text += sep
        answer_start = len(text)
        text += prompt.answer + end
        return Rendered(text, question_start, label_start, answer_start)
