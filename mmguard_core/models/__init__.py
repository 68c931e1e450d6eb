"""LVLM adapters over real transformers models (see base.py for the contract).

from mmguard_core.models import build_word_tokenizer, build_tiny, load_surrogate, FAMILIES
"""

import os

# transformers (5.x) depends on `kernels` and, on a GPU, fetches "hub kernels" (rotary, activation) from
# the Hugging Face Hub when a model loads or first runs; mmguard never downloads at run time, and offline
# that fetch fails the job (seen on a CUDA machine, twenty-eighth session). Its own switch turns it off
# for every model of this package; a user who wants hub kernels sets USE_HUB_KERNELS=YES themselves.
os.environ.setdefault("USE_HUB_KERNELS", "NO")

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
