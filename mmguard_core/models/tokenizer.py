"""An offline word-level tokenizer for tiny test/zoo models.

Real checkpoints bring their own tokenizer; tiny randomly initialised models need one that
is built from a word list without touching the network. It is a `tokenizers` WordLevel model
(lowercase normaliser, whitespace + punctuation pre-tokeniser) wrapped in the transformers
fast-tokenizer class, so `return_offsets_mapping` works and it saves/loads with
`save_pretrained` / `from_pretrained` from a local folder.

One vocabulary serves every family: it carries the special tokens of all families (image
placeholders, chat-turn markers) and the words of every family's prompt template.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

UNK = "[UNK]"
PAD = "[PAD]"
BOS = "<bos>"
EOS = "<eos>"

# Special tokens the families' templates and model configs refer to (never split, never lowercased).
FAMILY_SPECIAL_TOKENS: dict[str, list[str]] = {
    "llava": ["<image>"],
    "llava_next": ["<image>"],
    "paligemma": ["<image>"],
    "qwen2_vl": [
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ],
    "idefics3": [
        "<fake_token_around_image>",
        "<image>",
        "<end_of_utterance>",
        "<global-img>",
        *[f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)],
    ],
    "gemma3": [
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
    ],
    "internvl": ["<img>", "</img>", "<IMG_CONTEXT>", "<|im_start|>", "<|im_end|>"],
}

# Words of the prompt templates (lower case; the normaliser lowercases the text).
TEMPLATE_WORDS: list[str] = [
    "user",
    "assistant",
    "system",
    "you",
    "are",
    "a",
    "helpful",
    "model",
    "answer",
    "caption",
    "describe",
    "the",
    "image",
    "question",
]

PUNCTUATION: list[str] = list(string.punctuation)


def all_special_tokens() -> list[str]:
    """Every family special token, de-duplicated, in a fixed order."""
    seen: dict[str, None] = {}
    for tokens in FAMILY_SPECIAL_TOKENS.values():
        for token in tokens:
            seen.setdefault(token, None)
    return list(seen)


def build_word_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer whose vocabulary is: [UNK], [PAD], <bos>, <eos>, every family's
    special tokens, punctuation, the template words, then `words` (lower-cased, de-duplicated, in
    the order given). Ids are deterministic for a given word list.

    Calling it with `add_special_tokens=True` prepends <bos> (as Llama/Gemma tokenizers do); the
    adapters tokenize with `add_special_tokens=False` and spell <bos> in their templates.
    """
    base = [UNK, PAD, BOS, EOS]
    specials = all_special_tokens()
    vocab: dict[str, int] = {}
    for token in base + specials + PUNCTUATION + TEMPLATE_WORDS:
        vocab.setdefault(token, len(vocab))
    for word in words:
        for piece in _split(word):
            vocab.setdefault(piece, len(vocab))

    backend = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False, single_word=False) for t in base + specials]
    )
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNK,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        extra_special_tokens={"image_token": "<image>"},
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    return tokenizer


def _split(word: str) -> list[str]:
    """The pieces the pre-tokeniser would make of `word` (lower-cased)."""
    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return [piece for piece, _ in pre.pre_tokenize_str(word.lower()) if piece]
