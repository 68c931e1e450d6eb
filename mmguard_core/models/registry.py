"""Family name -> adapter class, and loading surrogates from a spec string.

Specs: ``"family:/local/path"`` (a local checkpoint folder: a real checkpoint such as
llava-hf/llava-1.5-7b-hf downloaded beforehand, or one written by `adapter.save_pretrained`) or
``"zoo:family"`` (a pre-trained tiny model from the zoo, see `mmguard_core.models.zoo`).
"""

from __future__ import annotations

from pathlib import Path

from .base import LVLMAdapter
from .common import ModelLoadError, resolve_dtype
from .gemma3 import Gemma3Adapter
from .idefics3 import Idefics3Adapter
from .internvl import InternVLAdapter
from .llava import LlavaAdapter
from .llava_next import LlavaNextAdapter
from .paligemma import PaliGemmaAdapter
from .qwen2_5_vl import Qwen2_5_VLAdapter
from .qwen2_vl import Qwen2VLAdapter

FAMILIES: dict[str, type[LVLMAdapter]] = {
    cls.family: cls
    for cls in (
        LlavaAdapter,
        Qwen2VLAdapter,
        Idefics3Adapter,
        PaliGemmaAdapter,
        Qwen2_5_VLAdapter,
        Gemma3Adapter,
        InternVLAdapter,
        LlavaNextAdapter,
    )
}


def parse_spec(spec: str) -> tuple[str, str]:
    """'family:rest' -> (family, rest); raises ModelLoadError naming the spec."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ModelLoadError(f"surrogate spec {spec!r}: expected 'family:/local/path' or 'zoo:family'")
    family, rest = spec.split(":", 1)
    family, rest = family.strip(), rest.strip()
    if not family or not rest:
        raise ModelLoadError(f"surrogate spec {spec!r}: expected 'family:/local/path' or 'zoo:family'")
    return family, rest


def load_surrogate(spec: str, device: str = "cpu", dtype: str = "float32") -> LVLMAdapter:
    """Load one surrogate LVLM adapter from a spec ('family:/local/path' or 'zoo:family')."""
    family, rest = parse_spec(spec)
    if family == "zoo":
        from . import zoo  # provided by the zoo module (another engineer)

        adapter = zoo.load_zoo_model(rest)
        adapter.model.to(device=device, dtype=resolve_dtype(dtype))
        return adapter
    if family not in FAMILIES:
        raise ModelLoadError(
            f"surrogate spec {spec!r}: unknown family {family!r}; known: zoo, {', '.join(sorted(FAMILIES))}"
        )
    path = Path(rest).expanduser()
    if not path.exists():
        raise ModelLoadError(f"surrogate spec {spec!r}: path {str(path)!r} does not exist")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ModelLoadError(
            f"surrogate spec {spec!r}: {str(path)!r} is not a checkpoint folder (no config.json)"
        )
    try:
        return FAMILIES[family].from_pretrained(path, device=device, dtype=resolve_dtype(dtype))
    except ModelLoadError as exc:
        raise ModelLoadError(f"surrogate spec {spec!r}: {exc}") from exc
