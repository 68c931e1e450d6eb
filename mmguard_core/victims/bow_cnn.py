"""A small non-transformer VQA model: CNN image encoder + bag-of-words question encoder + an answer
classifier over the closed answer set of the training data.

It is the black-box victim furthest from the surrogate ensemble (no attention, no tokenizer, no
pretraining): trained from scratch on the released data. Questions are encoded as hashed
bag-of-words (so words unseen in training still map somewhere), images are resized to 32 x 32.
Deterministic for a seed on CPU.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmguard_core.engine.grouping import normalise_answer
from mmguard_core.models.base import Prompt

_WORD_RE = re.compile(r"[a-z0-9']+")
IMAGE_SIZE = 32
BUCKETS = 1024


def question_words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def _bucket(word: str) -> int:
    return zlib.crc32(word.encode("utf-8")) % BUCKETS


class BowCNN(nn.Module):
    def __init__(self, num_answers: int, width: int = 32, embed: int = 64) -> None:
        super().__init__()
        self.image_encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.question_encoder = nn.EmbeddingBag(BUCKETS, embed, mode="mean")
        self.head = nn.Sequential(nn.Linear(2 * width + embed, 128), nn.ReLU(), nn.Linear(128, num_answers))

    def forward(self, pixels: torch.Tensor, word_ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.image_encoder(pixels), self.question_encoder(word_ids, offsets)], dim=1))


class BowCNNVictim:
    """Trained from scratch at `finetune`; `accuracy` before any training is 0 (no answer set yet)."""

    pretrained = False

    def __init__(self, name: str = "cnn", device: str = "cpu") -> None:
        self.name = name
        self.device = torch.device(device)
        self.answers: list[str] = []
        self.model: BowCNN | None = None

    # ------------------------------------------------------------------ inputs
    def _pixels(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        resized = [F.interpolate(img.float()[None], size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                                 align_corners=False, antialias=True)[0] for img in images]
        return (torch.stack(resized).to(self.device) - 0.5) / 0.25

    def _words(self, prompts: Sequence[Prompt]) -> tuple[torch.Tensor, torch.Tensor]:
        ids: list[int] = []
        offsets: list[int] = []
        for prompt in prompts:
            offsets.append(len(ids))
            words = question_words(prompt.question) or ["<empty>"]
            ids.extend(_bucket(w) for w in words)
        return (torch.tensor(ids, dtype=torch.long, device=self.device),
                torch.tensor(offsets, dtype=torch.long, device=self.device))

    def _logits(self, images, prompts) -> torch.Tensor:
        assert self.model is not None
        ids, offsets = self._words(prompts)
        return self.model(self._pixels(images), ids, offsets)

    # ------------------------------------------------------------------ interface
    def finetune(self, images: Sequence[torch.Tensor], prompts: Sequence[Prompt], *, epochs: float, lr: float,
                 batch_size: int, recipe: str = "full", freeze_vision: bool = False, seed: int = 0,
                 augment: Callable | None = None) -> None:
        """Train from scratch (the answer set is the training answers). `recipe` must be "full"
        (no LoRA for a model without a language model); `freeze_vision` keeps the random conv features."""
        if recipe != "full":
            raise ValueError(f"victim {self.name}: recipe {recipe!r} does not apply (use full)")
        if len(images) != len(prompts):
            raise ValueError(f"finetune: {len(images)} images but {len(prompts)} prompts")
        from mmguard_core.models.training import _call_augment

        self.answers = sorted({normalise_answer(p.answer) for p in prompts})
        index = {a: i for i, a in enumerate(self.answers)}
        targets = torch.tensor([index[normalise_answer(p.answer)] for p in prompts], dtype=torch.long)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = BowCNN(len(self.answers)).to(self.device)
        if freeze_vision:
            for p in self.model.image_encoder.parameters():
                p.requires_grad_(False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr)
        n = len(images)
        steps = int(math.ceil(epochs * n / batch_size))
        shuffle = torch.Generator().manual_seed(int(seed))
        aug_gen = torch.Generator().manual_seed(int(seed) + 7919)
        buffer: list[int] = []
        self.model.train()
        for _ in range(steps):
            while len(buffer) < min(batch_size, n):
                buffer.extend(torch.randperm(n, generator=shuffle).tolist())
            batch, buffer = buffer[: min(batch_size, n)], buffer[min(batch_size, n):]
            batch_images = [images[i] for i in batch]
            if augment is not None:
                batch_images = _call_augment(augment, batch_images, aug_gen)
            logits = self._logits(batch_images, [prompts[i] for i in batch])
            loss = F.cross_entropy(logits, targets[batch].to(self.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        self.model.eval()

    @torch.no_grad()
    def predict(self, images: Sequence[torch.Tensor], prompts: Sequence[Prompt]) -> list[str]:
        if self.model is None or not self.answers:
            return [""] * len(images)
        out: list[str] = []
        for start in range(0, len(images), 128):
            logits = self._logits(images[start:start + 128], prompts[start:start + 128])
            out.extend(self.answers[int(i)] for i in logits.argmax(dim=1))
        return out

    def accuracy(self, images: Sequence[torch.Tensor], prompts: Sequence[Prompt]) -> float:
        if not len(images):
            return 0.0
        predictions = self.predict(list(images), list(prompts))
        hits = sum(p == normalise_answer(q.answer) for p, q in zip(predictions, prompts, strict=True))
        return hits / len(images)
