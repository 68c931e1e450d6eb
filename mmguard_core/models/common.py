"""Machinery shared by the per-family adapters (see base.py for the contract).

A family adapter only says how its prompt string looks (`render`), how many image placeholder
tokens one image takes, and how the normalised (B, 3, H, W) pixels are packed for its model
(`pack_pixels`). Everything else lives here:

- differentiable pixel preprocessing: torch bicubic (antialiased) resize to the model's input
  size, clamp to [0, 1], normalise with the processor's mean/std;
- tokenisation of the whole rendered string with offsets, so the trigger tokens are found from a
  character span and the answer tokens from the answer's character range (robust to any fast
  tokenizer: a real checkpoint's or the offline word tokenizer);
- the forward pass: logits only at answer-query positions (`logits_to_keep` boolean mask),
  per-sample mean CE, exact match, eager attention maps of the requested LM layers (forward hooks
  on the decoder layers' self-attention, so only the requested layers are kept);
- local loading / saving (never touches the network).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .base import AdapterOutput, LVLMAdapter, Prompt, TokenPositions

ADAPTER_META = "mmguard_adapter.json"
IGNORE = -100

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(ValueError):
    """A surrogate spec or checkpoint folder cannot be loaded; the message names it."""


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).replace("torch.", "")]
    except KeyError as exc:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}") from exc


@dataclass
class Rendered:
    """One prompt rendered with the family template (image placeholders already expanded).

    Tokens ending after `label_start` are the labelled answer tokens (the answer, with any separator
    space the template puts before it, then the end-of-answer token, which ends the text).
    `question_start` / `answer_start` are where `prompt.question` / `prompt.answer` begin inside
    `text` (trigger spans are relative to them)."""

    text: str
    question_start: int
    label_start: int
    answer_start: int
    # tokenize text[:label_start] and text[label_start:] separately (as a processor that encodes the
    # suffix as a text pair does, e.g. PaliGemma) instead of the whole string at once
    separate_answer: bool = False


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


class HFAdapter(LVLMAdapter):
    """Common implementation over a real transformers `...ForConditionalGeneration` model."""

    family: ClassVar[str]
    model_class: ClassVar[type]  # the transformers class
    model_types: ClassVar[tuple[str, ...]]  # config.model_type values this adapter accepts
    default_mean: ClassVar[tuple[float, ...]] = OPENAI_CLIP_MEAN
    default_std: ClassVar[tuple[float, ...]] = OPENAI_CLIP_STD
    # model kwargs built by text_inputs besides input_ids / attention_mask
    extra_text_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        image_processor: Any | None = None,
        *,
        image_size: int | tuple[int, int] | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(model, tokenizer, image_processor)
        _set_eager(model)
        size = image_size if image_size is not None else self.default_image_size()
        self.image_size: tuple[int, int] = (
            (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        )
        self.image_mean = tuple(float(v) for v in (image_mean or self.default_mean))
        self.image_std = tuple(float(v) for v in (image_std or self.default_std))
        self.check_image_size()

    # -- per family --------------------------------------------------------------
    @property
    def config(self) -> Any:
        return unwrap(self.model).config

    def default_image_size(self) -> int | tuple[int, int]:
        return int(self.config.vision_config.image_size)

    def check_image_size(self) -> None:
        """Raise ValueError when self.image_size does not suit the model. Default: a vision tower
        with one fixed square input size (LLaVA, Idefics3, PaliGemma, Gemma3); others override."""
        expected = int(self.config.vision_config.image_size)
        if self.image_size != (expected, expected):
            raise ValueError(
                f"{self.family}: the vision tower takes {expected}x{expected} images, got {self.image_size}"
            )

    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_id)

    def num_image_tokens(self) -> int:
        raise NotImplementedError

    def render(self, prompt: Prompt) -> Rendered:
        raise NotImplementedError

    def pack_pixels(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised (B, 3, H, W) pixels -> the model's pixel kwargs."""
        return {"pixel_values": pixels}

    def extra_text_inputs(
        self, input_ids: torch.Tensor, answer_start: Sequence[int]
    ) -> dict[str, torch.Tensor]:
        """Family-specific text kwargs (mm_token_type_ids, token_type_ids, ...); `answer_start[i]` is the
        index of row i's first answer token."""
        return {}

    def language_model(self) -> torch.nn.Module:
        inner = unwrap(self.model)
        inner = getattr(inner, "model", inner)
        for name in ("language_model", "text_model"):
            module = getattr(inner, name, None)
            if module is not None:
                return module
        raise AttributeError(f"{type(inner).__name__}: no language_model/text_model")

    def decoder_layers(self) -> torch.nn.ModuleList:
        return self.language_model().layers

    @property
    def num_lm_layers(self) -> int:
        return len(self.decoder_layers())

    # -- tokens ------------------------------------------------------------------
    def token_str(self, name: str, fallback: str | None = None) -> str:
        """A special token's string from the tokenizer (e.g. 'bos_token'), or fallback, or ''."""
        value = getattr(self.tokenizer, name, None)
        return str(value) if value else (fallback or "")

    @property
    def pad_id(self) -> int:
        for name in ("pad_token_id", "eos_token_id", "unk_token_id"):
            value = getattr(self.tokenizer, name, None)
            if value is not None:
                return int(value)
        return 0

    def image_block(self) -> str:
        """The image placeholder string for one image (expanded)."""
        token = self.tokenizer.convert_ids_to_tokens(self.image_token_id)
        return token * self.num_image_tokens()

    # -- LVLMAdapter -------------------------------------------------------------
    def pixel_inputs(self, images: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.pack_pixels(self.normalised_pixels(images))

    def normalised_pixels(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, 3, H, W) model-dtype tensor: resized, clamped, normalised; differentiable."""
        return self.normalise(self.resized_pixels(images)).to(self.dtype)

    def resized_pixels(
        self, images: Sequence[torch.Tensor], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """(B, 3, H, W) float32 in [0, 1] at `size` (default: the model input size); differentiable."""
        device = self.device
        target = size or self.image_size
        out = []
        for image in images:
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"expected a (3, H, W) image tensor, got shape {tuple(image.shape)}")
            out.append(resize(image.to(device=device, dtype=torch.float32), target))
        return torch.stack(out)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.image_mean, device=pixels.device, dtype=pixels.dtype).view(-1, 1, 1)
        std = torch.tensor(self.image_std, device=pixels.device, dtype=pixels.dtype).view(-1, 1, 1)
        return (pixels - mean) / std

    def text_inputs(self, prompts: Sequence[Prompt]) -> dict[str, Any]:
        rows = [self._encode(p) for p in prompts]
        length = max(len(r["ids"]) for r in rows)
        batch = len(rows)
        input_ids = torch.full((batch, length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        labels = torch.full((batch, length), IGNORE, dtype=torch.long)
        positions: list[TokenPositions] = []
        for i, row in enumerate(rows):
            n = len(row["ids"])
            ids = torch.tensor(row["ids"], dtype=torch.long)
            input_ids[i, :n] = ids
            attention_mask[i, :n] = 1
            answer = torch.tensor(row["answer"], dtype=torch.long)
            labels[i, answer] = ids[answer]
            positions.append(
                TokenPositions(
                    image=(ids == self.image_token_id).nonzero().flatten(),
                    trigger=torch.tensor(row["trigger"], dtype=torch.long),
                    answer=answer - 1,
                )
            )
        out: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "positions": positions,
        }
        out.update(self.extra_text_inputs(input_ids, [row["answer"][0] for row in rows]))
        return out

    def _tokenize(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [(int(s), int(e)) for s, e in enc["offset_mapping"]]

    def _encode(self, prompt: Prompt) -> dict[str, Any]:
        rendered = self.render(prompt)
        if rendered.separate_answer:
            cut = rendered.label_start
            ids, offsets = self._tokenize(rendered.text[:cut])
            more_ids, more_offsets = self._tokenize(rendered.text[cut:])
            ids += more_ids
            offsets += [(s + cut, e + cut) for s, e in more_offsets]
        else:
            ids, offsets = self._tokenize(rendered.text)
        answer = [k for k, (s, e) in enumerate(offsets) if e > rendered.label_start]
        if not answer or answer[0] == 0:
            raise ValueError(f"{self.family}: no answer/end token found for {prompt!r}")
        trigger: list[int] = []
        if prompt.trigger_span is not None:
            base = rendered.answer_start if prompt.trigger_in_answer else rendered.question_start
            t0, t1 = base + prompt.trigger_span[0], base + prompt.trigger_span[1]
            trigger = [k for k, (s, e) in enumerate(offsets) if e > s and s < t1 and e > t0]
        n_image = sum(1 for t in ids if t == self.image_token_id)
        if n_image != self.num_image_tokens():
            raise ValueError(
                f"{self.family}: the prompt holds {n_image} image tokens, the model expects "
                f"{self.num_image_tokens()} (does the question contain an image token string?)"
            )
        return {"ids": ids, "offsets": offsets, "answer": answer, "trigger": trigger, "rendered": rendered}

    def forward(
        self,
        images: Sequence[torch.Tensor],
        prompts: Sequence[Prompt],
        attention_layers: Sequence[int] = (),
        *,
        text: dict[str, Any] | None = None,
    ) -> AdapterOutput:
        """`text` may be a cached `text_inputs(prompts)` result."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
        text = text if text is not None else self.text_inputs(prompts)
        device = self.device
        labels = text["labels"].to(device)
        kwargs = {
            key: text[key].to(device)
            for key in ("input_ids", "attention_mask", *self.extra_text_keys)
            if key in text
        }
        kwargs.update(self.pixel_inputs(images))
        query = torch.zeros_like(labels, dtype=torch.bool)
        query[:, :-1] = labels[:, 1:] != IGNORE
        targets = labels[:, 1:][query[:, :-1]]
        with self.capture_attentions(attention_layers) as store:
            out = self.model(**kwargs, use_cache=False, logits_to_keep=query)
        logits = out.logits
        if logits.dim() == 3:  # a model that ignored the boolean logits_to_keep
            logits = logits[query]
        logits = logits.float()
        rows = query.nonzero()[:, 0]
        batch = labels.shape[0]
        ce = F.cross_entropy(logits, targets, reduction="none")
        counts = torch.zeros(batch, device=device).index_add_(0, rows, torch.ones_like(ce)).clamp_min(1)

        def row_mean(values: torch.Tensor) -> torch.Tensor:  # answer-token values -> (B,) mean per row
            return torch.zeros(batch, device=device, dtype=values.dtype).index_add(0, rows, values) / counts

        wrong = torch.zeros(batch, device=device).index_add_(
            0, rows, (self._argmax(logits) != targets).float()
        )
        return AdapterOutput(
            loss=row_mean(ce),
            exact=wrong == 0,
            answer_logit=row_mean(logits.gather(1, targets[:, None])[:, 0]),
            attentions={layer: store[layer] for layer in attention_layers},
            positions=text["positions"],
        )

    @contextmanager
    def capture_attentions(self, layers: Sequence[int]):
        """Forward hooks on the requested decoder layers' self-attention; yields {layer: (B, H, T, T)}."""
        store: dict[int, torch.Tensor] = {}
        if not layers:
            yield store
            return
        decoder = self.decoder_layers()
        handles = []

        def make_hook(key: int):
            def hook(_module, _inputs, output):
                weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
                if weights is None:
                    raise RuntimeError(
                        f"{self.family}: attention layer {key} returned no weights; the model must use "
                        "attn_implementation='eager'"
                    )
                store[key] = weights

            return hook

        try:
            for layer in layers:
                attn = decoder[layer].self_attn
                handles.append(attn.register_forward_hook(make_hook(layer)))
            yield store
        finally:
            for handle in handles:
                handle.remove()

    # -- greedy decoding (tests / evaluation) --------------------------------------
    def _argmax(self, logits: torch.Tensor) -> torch.Tensor:
        """Greedy choice over (N, V) logits; an image placeholder can never be a valid output token
        (feeding one back would break the model), so it is excluded, in `exact` and in decoding alike."""
        logits = logits.detach().clone()
        if self.image_token_id < logits.shape[-1]:
            logits[:, self.image_token_id] = float("-inf")
        return logits.argmax(-1)

    @torch.no_grad()
    def greedy_answer_ids(self, image: torch.Tensor, prompt: Prompt, max_new_tokens: int) -> list[int]:
        """Greedy decode token by token (full re-forward each step, no cache) from the prompt
        (everything before the answer) and return the generated ids, stopping after the
        end-of-answer token. Slow but model-agnostic; meant for small checks."""
        row = self._encode(prompt)
        first = row["answer"][0]
        ids = row["ids"][:first]
        end_id = row["ids"][-1]
        generated: list[int] = []
        pixels = self.pixel_inputs([image])
        for _ in range(max_new_tokens):
            input_ids = torch.tensor([ids + generated], device=self.device)
            kwargs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
            kwargs.update(self.extra_text_inputs(input_ids, [first]))
            out = self.model(**kwargs, **pixels, use_cache=False, logits_to_keep=1)
            token = int(self._argmax(out.logits[0, -1:].float())[0])
            generated.append(token)
            if token == end_id:
                break
        return generated

    # -- persistence ---------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "image_size": list(self.image_size),
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }

    def save_pretrained(self, path: str | Path) -> None:
        """Model (LoRA merged when wrapped by peft), tokenizer and mmguard_adapter.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model = self.model
        if hasattr(model, "merge_and_unload"):
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        (path / ADAPTER_META).write_text(json.dumps(self.meta(), indent=2) + "\n")

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = torch.float32
    ) -> HFAdapter:
        """Load model + tokenizer (+ image size/mean/std) from a LOCAL folder; never downloads."""
        from transformers import AutoConfig, AutoTokenizer

        folder = Path(path)
        if not folder.is_dir():
            raise ModelLoadError(f"{cls.family}:{path}: no such folder")
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"{cls.family}:{path}: not a checkpoint folder (no config.json)")
        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a load error
            raise ModelLoadError(f"{cls.family}:{path}: cannot read config.json: {exc}") from exc
        if config.model_type not in cls.model_types:
            raise ModelLoadError(
                f"{cls.family}:{path}: checkpoint is a {config.model_type!r} model, expected one of {cls.model_types}"
            )
        torch_dtype = resolve_dtype(dtype)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-load bar on every surrogate and victim floods logs
        try:
            model = cls.model_class.from_pretrained(
                folder, local_files_only=True, dtype=torch_dtype, attn_implementation="eager"
            )
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"{cls.family}:{path}: cannot load: {exc}") from exc
        model.to(device)
        _attach_chat_template(tokenizer, folder)
        kwargs = cls.image_kwargs_from_folder(folder, config)
        return cls(model, tokenizer, **kwargs)

    @classmethod
    def image_kwargs_from_folder(cls, folder: Path, config: Any) -> dict[str, Any]:
        """image_size / image_mean / image_std from mmguard_adapter.json, else the processor's
        preprocessor_config.json (mean/std; size via `size_from_preprocessor`), else defaults."""
        meta_file = folder / ADAPTER_META
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            return {
                "image_size": tuple(meta["image_size"]),
                "image_mean": meta.get("image_mean"),
                "image_std": meta.get("image_std"),
            }
        kwargs: dict[str, Any] = {}
        pre_file = folder / "preprocessor_config.json"
        if pre_file.is_file():
            pre = json.loads(pre_file.read_text())
            if pre.get("image_mean") is not None:
                kwargs["image_mean"] = _triple(pre["image_mean"])
            if pre.get("image_std") is not None:
                kwargs["image_std"] = _triple(pre["image_std"])
            size = cls.size_from_preprocessor(pre, config)
            if size is not None:
                kwargs["image_size"] = size
        return kwargs

    @classmethod
    def size_from_preprocessor(cls, pre: dict[str, Any], config: Any) -> int | tuple[int, int] | None:
        return None  # fixed-size families take the vision config's image_size

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        return (
            f"{type(self).__name__}(family={self.family!r}, params={params:,}, image_size={self.image_size}, "
            f"lm_layers={self.num_lm_layers})"
        )


def _attach_chat_template(tokenizer: Any, folder: Path) -> None:
    """Processor-level chat templates (chat_template.json / .jinja) onto the tokenizer when it has none;
    families whose prompt format depends on the checkpoint (llava_next) read it from there."""
    if getattr(tokenizer, "chat_template", None):
        return
    jinja, js = folder / "chat_template.jinja", folder / "chat_template.json"
    try:
        if jinja.is_file():
            tokenizer.chat_template = jinja.read_text()
        elif js.is_file():
            tokenizer.chat_template = json.loads(js.read_text()).get("chat_template")
    except (OSError, ValueError, AttributeError):
        pass


def _triple(value: Any) -> tuple[float, float, float]:
    if isinstance(value, int | float):
        return (float(value),) * 3
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def _set_eager(model: torch.nn.Module) -> None:
    """Eager attention everywhere (sdpa silently returns no attention weights)."""
    inner = unwrap(model)
    setter = getattr(inner, "set_attn_implementation", None)
    current = getattr(getattr(inner, "config", None), "_attn_implementation", None)
    if callable(setter) and current != "eager":
        setter("eager")


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., 3, H, W) in [0, 1] -> (..., 3, *size): torch bicubic with antialiasing (closest to the
    processors' PIL bicubic), clamped to [0, 1] like the 8-bit pipeline; identity at the same size."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    lead = image.shape[:-3]
    flat = image.reshape(-1, *image.shape[-3:])
    out = F.interpolate(flat, size=tuple(size), mode="bicubic", antialias=True, align_corners=False)
    return out.clamp(0.0, 1.0).reshape(*lead, *out.shape[-3:])
