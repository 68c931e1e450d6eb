"""LVLM adapters over real transformers models (see base.py for the contract).

from mmguard_core.models import build_word_tokenizer, build_tiny, load_surrogate, FAMILIES
"""

from .base import AdapterOutput, LVLMAdapter, Prompt, TokenPositions
from .common import HFAdapter, ModelLoadError
from .registry import FAMILIES, load_surrogate, parse_spec
from .tiny import build_tiny
from .tokenizer import build_word_tokenizer

__all__ = [
    "FAMILIES",
    "AdapterOutput",
    "HFAdapter",
    "LVLMAdapter",
    "ModelLoadError",
    "Prompt",
    "TokenPositions",
    "build_tiny",
    "build_word_tokenizer",
    "load_surrogate",
    "parse_spec",
]
