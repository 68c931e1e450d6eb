"""An image-only classifier trained from scratch on the shard's clean samples: a surrogate of
another kind beside the LVLM copies the targeted noise is made on.

The LVLM copies are pretrained transformers fine-tuned on the task; a model an attacker trains
from scratch (the project's `cnn` victim, or any small task model) learns the images another way,
and the noise made on fine-tuned transformers alone reaches it less (the CNN is the one threat
model under its target in most matrices, docs/evaluation.md). Fowl et al. (2021) crafted their
adversarial poisons on a classifier trained from scratch on the clean data; this is that
classifier, deliberately unlike the `cnn` victim (strided 5x5 / 3x3 convolutions with batch norm
and GELU at 48 px, average and max pooling, image only), so that victim stays a black box. A second
architecture, a small patch transformer (`vit`), can stand beside it (`classifier_architectures`):
classifiers of more than one kind, as the LVLM ensemble holds more than one family; a third, a
perceptron on the coarse colour layout (`mlp`), is the simplest reader of all.

It predicts the sample's *group* (the answer for answer-structured data, the image cluster for
captions): the targeted objective asks each image to read as the next group's. It duck-types the
part of `LVLMAdapter` the protection loss uses (`forward(...).loss`, `device`, `dtype`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmguard_core.engine.grouping import normalise_answer
from mmguard_core.models.base import Prompt

INPUT_SIZE = 48
LEARNING_RATE = 3e-3


class GroupClassifier(nn.Module):
    def __init__(self, num_groups: int, width: int = 24) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 5, stride=2, padding=2), nn.BatchNorm2d(width), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.GELU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.GELU(),
        )
        self.head = nn.Linear(4 * width, num_groups)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        maps = self.features(pixels)
        return self.head(torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1))


class PatchClassifier(nn.Module):
    """A small vision transformer (6 px patches of the 48 px image, two pre-norm encoder layers, mean
    pooled): the second architecture, nearer the ViT towers of the LVLM families than the CNN, but
    trained from scratch like it."""

    def __init__(self, num_groups: int, width: int = 64, patch: int = 6, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, width, patch, stride=patch)
        self.position = nn.Parameter(torch.zeros(1, (INPUT_SIZE // patch) ** 2, width))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_groups)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(pixels).flatten(2).transpose(1, 2) + self.position
        return self.head(self.norm(self.encoder(tokens)).mean(dim=1))


class LayoutClassifier(nn.Module):
    """A multilayer perceptron on the image average-pooled to 6 x 6: it sees only the coarse colour
    layout, the simplest feature a model can learn a colour-like task from. Screened beside the
    other two (twenty-seventh session): it lifted the held-out Gemma3 and dropped Idefics3 after the
    rare-word stripper, so no preset names it."""

    def __init__(self, num_groups: int, cells: int = 6, width: int = 128) -> None:
        super().__init__()
        self.cells = cells
        self.mlp = nn.Sequential(nn.Linear(3 * cells * cells, width), nn.GELU(), nn.Linear(width, width), nn.GELU(),
                                 nn.Linear(width, num_groups))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.mlp(F.adaptive_avg_pool2d(pixels, self.cells).flatten(1))


# the architectures `classifier_architectures` names (config.py validates against these keys)
ARCHITECTURES: dict[str, type[nn.Module]] = {"cnn": GroupClassifier, "vit": PatchClassifier,
                                             "mlp": LayoutClassifier}


@dataclass
class ClassifierOutput:
    loss: torch.Tensor  # per sample
    answer_logit: torch.Tensor  # per sample: the raw logit of the answer's group


class ImageClassifierSurrogate:
    """`forward(images, prompts)` scores how far each image reads as the group of the prompt's answer."""

    name = "image-classifier"

    def __init__(self, model: GroupClassifier, group_of_answer: dict[str, int]) -> None:
        self.model = model
        self.group_of_answer = group_of_answer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def labels(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        out = []
        for prompt in prompts:
            group = self.group_of_answer.get(prompt.answer, self.group_of_answer.get(normalise_answer(prompt.answer)))
            if group is None:
                raise ValueError(f"image classifier: answer {prompt.answer!r} belongs to no group it was trained on")
            out.append(group)
        return torch.tensor(out, dtype=torch.long, device=self.device)

    def forward(self, images: Sequence[torch.Tensor], prompts: Sequence[Prompt], attention_layers=()) -> ClassifierOutput:
        logits = self.model(pixels(images).to(self.device))
        labels = self.labels(prompts)
        return ClassifierOutput(F.cross_entropy(logits, labels, reduction="none"),
                                logits.gather(1, labels[:, None])[:, 0])


def pixels(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Differentiable: each (3, H, W) image in [0, 1] resized to INPUT_SIZE and centred."""
    resized = [F.interpolate(img.float()[None], size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                             align_corners=False, antialias=True)[0] for img in images]
    return (torch.stack(resized) - 0.5) / 0.25


def train_group_classifier(images: Sequence[torch.Tensor], groups: Sequence[int], answers: Sequence[str],
                           num_groups: int, steps: int, batch_size: int, seed: int,
                           adversarial_epsilon: float = 0.0,
                           known_groups: dict[str, int] | None = None,
                           architecture: str = "cnn",
                           device: str | torch.device = "cpu") -> ImageClassifierSurrogate:
    """A fresh classifier trained for `steps` AdamW steps on (image, group); with `adversarial_epsilon`
    > 0 each batch is first moved by one FGSM step of 1.25 epsilon from a random start in the epsilon
    ball (as the LVLM copies: models/training.finetune). `known_groups`: further answer texts and
    their groups (a group's key, for groups the training samples do not hold). Trained on the CPU (a
    few seconds), then moved to `device`, where the noise is made. Deterministic for a seed; returned frozen
    in eval mode. The caller's global RNG is left as it was. `architecture`: a key of ARCHITECTURES."""
    group_of_answer: dict[str, int] = dict(known_groups or {})
    for answer, group in zip(answers, groups, strict=True):
        group_of_answer.setdefault(answer, group)
        group_of_answer.setdefault(normalise_answer(answer), group)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ARCHITECTURES[architecture](num_groups)
    data = pixels(images).detach()  # the resize is linear: perturbing the 48 px copy stands in for the image
    labels = torch.tensor(list(groups), dtype=torch.long)
    optimiser = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    n = len(labels)
    order = torch.randperm(n, generator=gen)
    cursor = 0
    scale = 1 / 0.25  # epsilon in [0, 1] pixel units, the data centred and scaled by 1 / 0.25
    model.train()
    for _ in range(steps):
        if cursor + batch_size > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        batch = order[cursor:cursor + batch_size]
        cursor += batch_size
        x, y = data[batch], labels[batch]
        if adversarial_epsilon > 0:
            radius = adversarial_epsilon * scale
            start = (torch.rand(x.shape, generator=gen) * 2 - 1) * radius
            probe = (x + start).requires_grad_(True)
            grad, = torch.autograd.grad(F.cross_entropy(model(probe), y), probe)
            x = (x + (start + 1.25 * radius * grad.sign()).clamp(-radius, radius)).detach()
        loss = F.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if not math.isfinite(float(loss.detach())):
            raise RuntimeError("image classifier: the training loss is not finite")
    model.eval().to(device)
    for param in model.parameters():
        param.requires_grad_(False)
    return ImageClassifierSurrogate(model, group_of_answer)
