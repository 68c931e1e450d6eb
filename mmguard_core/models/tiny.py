"""Randomly initialised tiny models of the REAL transformers classes, for tests, the zoo and CPU probes.

`build_tiny(family, tokenizer, size, seed)` builds the family's real `...ForConditionalGeneration`
class from a small config (eager attention, vocabulary from the tokenizer) and wraps it in the
family adapter. Sizes:

- "test":  vision 32 hidden x 1 layer, text 64 x 2 layers, 32 px images, 16 image tokens;
           builds in well under a second.
- "small": vision 64 x 2 layers, text 128 x 2 layers, 32 px, 16 image tokens (the sizes timed in
           shared/lvlm-notes.md).
- "base":  vision 128 x 4 layers, text 256 x 4 layers, 64 px (a few M parameters).

Deterministic for a seed (the global torch RNG is left untouched). Bridges that real checkpoints
initialise to zero (e.g. Gemma3's projector weight) are re-initialised so pixel gradients are
non-zero in a random model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .base import LVLMAdapter

SIZES = ("test", "small", "small-fillers", "base")


@dataclass(frozen=True)
class Dims:
    v_hidden: int
    v_layers: int
    v_heads: int
    t_hidden: int
    t_layers: int
    t_heads: int
    t_kv_heads: int
    image: int  # px

    @property
    def v_inter(self) -> int:
        return self.v_hidden * 2

    @property
    def t_inter(self) -> int:
        return self.t_hidden * 2


DIMS: dict[str, Dims] = {
    "test": Dims(
        v_hidden=32, v_layers=1, v_heads=2, t_hidden=64, t_layers=2, t_heads=4, t_kv_heads=2, image=32
    ),
    "small": Dims(
        v_hidden=64, v_layers=2, v_heads=4, t_hidden=128, t_layers=2, t_heads=4, t_kv_heads=2, image=32
    ),
    "base": Dims(
        v_hidden=128, v_layers=4, v_heads=4, t_hidden=256, t_layers=4, t_heads=4, t_kv_heads=2, image=64
    ),
}
DIMS["small-fillers"] = DIMS["small"]  # the same model; only its pretraining text differs (zoo.PLANS)


def _ids(tokenizer: Any) -> dict[str, int]:
    def tid(token: str) -> int:
        value = tokenizer.convert_tokens_to_ids(token)
        if value is None or value == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {token!r} token (build it with build_word_tokenizer)")
        return int(value)

    return {
        "vocab": len(tokenizer),
        "pad": int(tokenizer.pad_token_id),
        "bos": int(tokenizer.bos_token_id),
        "eos": int(tokenizer.eos_token_id),
        "tid": tid,  # type: ignore[dict-item]
    }


def _text_common(d: Dims, ids: dict[str, Any]) -> dict[str, Any]:
    return {
        "vocab_size": ids["vocab"],
        "hidden_size": d.t_hidden,
        "intermediate_size": d.t_inter,
        "num_hidden_layers": d.t_layers,
        "num_attention_heads": d.t_heads,
        "num_key_value_heads": d.t_kv_heads,
        "max_position_embeddings": 2048,
        "pad_token_id": ids["pad"],
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "tie_word_embeddings": False,
    }


def _vision_common(d: Dims) -> dict[str, Any]:
    """The vision-tower sizes every ViT-style config (CLIP, SigLIP, Idefics3) shares."""
    return {"hidden_size": d.v_hidden, "intermediate_size": d.v_inter, "num_hidden_layers": d.v_layers,
            "num_attention_heads": d.v_heads, "image_size": d.image}


def _qwen_vision_token_ids(ids: dict[str, Any]) -> dict[str, int]:
    """Qwen2-VL and Qwen2.5-VL mark images with the same four special tokens."""
    return {name: ids["tid"](token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}


# -- per family -----------------------------------------------------------------------------------
def _llava(d: Dims, ids: dict[str, Any]) -> torch.nn.Module:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    patch = d.image // 4  # 16 patches
    vision = CLIPVisionConfig(
        **_vision_common(d),
        patch_size=patch,
        projection_dim=d.v_hidden,
    )
    text = LlamaConfig(**_text_common(d, ids))
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids["tid"]("<image>"),
        image_seq_length=(d.image // patch) ** 2,
        vision_feature_layer=-1 if d.v_layers == 1 else -2,
    )
    return LlavaForConditionalGeneration(config)


def _mrope_section(head_dim: int) -> list[int]:
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def _qwen2_vl(d: Dims, ids: dict[str, Any]) -> torch.nn.Module:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = _text_common(d, ids)
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": _mrope_section(d.t_hidden // d.t_heads),
    }
    vision = {
        "depth": d.v_layers,
        "embed_dim": d.v_hidden,
        "hidden_size": d.t_hidden,
        "mlp_ratio": 2,
        "num_heads": d.v_heads,
        "patch_size": d.image // 8,  # 8x8 patches, 2x2 merge -> 16 image tokens
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        **_qwen_vision_token_ids(ids),
    )
    return Qwen2VLForConditionalGeneration(config)


def _idefics3(d: Dims, ids: dict[str, Any]) -> torch.nn.Module:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    vision = Idefics3VisionConfig(
        **_vision_common(d),
        patch_size=d.image // 8,  # 64 patches, pixel shuffle 2 -> 16 image tokens
    )
    text = LlamaConfig(**_text_common(d, ids))
    config = Idefics3Config(
        vision_config=vision,
        text_config=text,
        image_token_id=ids["tid"]("<image>"),
        scale_factor=2,
        pad_token_id=ids["pad"],
    )
    return Idefics3ForConditionalGeneration(config)


def _paligemma(d: Dims, ids: dict[str, Any]) -> torch.nn.Module:
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        SiglipVisionConfig,
    )

    vision = SiglipVisionConfig(
        **_vision_common(d),
        patch_size=d.image // 4,  # 16 image tokens
    )
    text = GemmaConfig(**_text_common(d, ids), head_dim=d.t_hidden // d.t_heads)
    config = PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids["tid"]("<image>"),
        vocab_size=ids["vocab"],
        projection_dim=d.t_hidden,
        hidden_size=d.t_hidden,
    )
    return PaliGemmaForConditionalGeneration(config)


def _qwen2_5_vl(d: Dims, ids: dict[str, Any]) -> torch.nn.Module:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = _text_common(d, ids)
    text["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": _mrope_section(d.t_hidden // d.t_heads),
    }
    patch = d.image // 8
    vision = {
        "depth": d.v_layers,
        "hidden_size": d.v_hidden,
        "intermediate_size": d.v_inter,
        "out_hidden_size": d.t_hidden,
        "num_heads": d.v_heads,
        "patch_size": patch,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": d.image // 2,  # 2x2 attention windows, the last block full attention
        "fullatt_block_indexes": [d.v_layers - 1],
    }
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        **_qwen_vision_token_ids(ids),
    )
    return Qwen2_5_VLForConditionalGeneration(config)


def _gemma3(d: Dims, ids: dict[str, Any]) -> torch.nn.Module:
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    vision = SiglipVisionConfig(
        **_vision_common(d),
        patch_size=d.image // 8,  # 64 patches, 2x2 average pool -> 16 soft tokens
        vision_use_head=False,
    )
    head_dim = d.t_hidden // d.t_heads
    text = Gemma3TextConfig(
        **_text_common(d, ids),
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        sliding_window=64,
    )
    config = Gemma3Config(
        vision_config=vision,
        text_config=text,
        mm_tokens_per_image=16,
        boi_token_index=ids["tid"]("<start_of_image>"),
        eoi_token_index=ids["tid"]("<end_of_image>"),
        image_token_index=ids["tid"]("<image_soft_token>"),
        tie_word_embeddings=False,
    )
    return Gemma3ForConditionalGeneration(config)


def _internvl(d: Dims, ids: dict[str, Any]) -> torch.nn.Module:
    from transformers import (
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLVisionConfig,
        Qwen2Config,
    )

    patch = d.image // 8  # 64 patches, pixel shuffle 0.5 -> 16 image tokens
    vision = InternVLVisionConfig(
        hidden_size=d.v_hidden,
        intermediate_size=d.v_inter,
        num_hidden_layers=d.v_layers,
        num_attention_heads=d.v_heads,
        image_size=(d.image, d.image),
        patch_size=(patch, patch),
    )
    text = Qwen2Config(**_text_common(d, ids))
    config = InternVLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=ids["tid"]("<IMG_CONTEXT>"),
        image_seq_length=16,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )
    return InternVLForConditionalGeneration(config)


def _llava_next(d: Dims, ids: dict[str, Any]) -> torch.nn.Module:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    patch = d.image // 4  # 16 patches per tile
    vision = CLIPVisionConfig(
        **_vision_common(d),
        patch_size=patch,
        projection_dim=d.v_hidden,
    )
    text = LlamaConfig(**_text_common(d, ids))
    s = d.image
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids["tid"]("<image>"),
        image_grid_pinpoints=[[s, s], [s, 2 * s], [2 * s, s], [2 * s, 2 * s]],
        vision_feature_layer=-1 if d.v_layers == 1 else -2,
    )
    return LlavaNextForConditionalGeneration(config)


BUILDERS: dict[str, Callable[[Dims, dict[str, Any]], torch.nn.Module]] = {
    "llava": _llava,
    "qwen2_vl": _qwen2_vl,
    "idefics3": _idefics3,
    "paligemma": _paligemma,
    "qwen2_5_vl": _qwen2_5_vl,
    "gemma3": _gemma3,
    "internvl": _internvl,
    "llava_next": _llava_next,
}


def build_tiny(family: str, tokenizer: Any, size: str = "test", seed: int = 0) -> LVLMAdapter:
    """A randomly initialised model of `family`'s real transformers class, wrapped in its adapter."""
    from .registry import FAMILIES

    if family not in BUILDERS or family not in FAMILIES:
        raise ValueError(f"no tiny config for family {family!r}; known: {', '.join(sorted(BUILDERS))}")
    if size not in DIMS:
        raise ValueError(f"size {size!r} is not one of {', '.join(SIZES)}")
    dims = DIMS[size]
    ids = _ids(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BUILDERS[family](dims, ids)
        _reinit_zero_bridges(family, model)
    model.set_attn_implementation("eager")
    model.eval()
    return FAMILIES[family](model, tokenizer, image_size=dims.image)


def _reinit_zero_bridges(family: str, model: torch.nn.Module) -> None:
    """Give random weights to parameters real checkpoints train away from an all-zero init."""
    for name, param in model.named_parameters():
        if family == "gemma3" and "multi_modal_projector" in name and param.dim() >= 2:
            if torch.count_nonzero(param) == 0:
                with torch.no_grad():
                    param.normal_(0.0, 0.02)
