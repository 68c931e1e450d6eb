"""Which samples share a noise pattern and a trigger.

Closed-set answers (VQA with repeating answers) group by normalised answer: one pattern per
answer is what transferred to unrelated victims in the probes (method.md). Captions and
open-ended answers have no classes, so samples are grouped by k-means over a small colour
layout of the image (cf. "Unlearnable Clusters"): similar-looking images share a pattern,
which is the shortcut a victim picks up instead of the content.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

FEATURE_GRID = 4  # image features: mean colour on a 4 x 4 grid (48 numbers)


def normalise_answer(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".!?").split())


def image_features(images: Sequence[torch.Tensor]) -> np.ndarray:
    feats = [F.adaptive_avg_pool2d(img[None].float(), FEATURE_GRID).flatten().numpy() for img in images]
    return np.stack(feats).astype(np.float64)


def choose_structure(requested: str, answers: Sequence[str]) -> str:
    """'auto' -> 'answer' when answers repeat enough to act as classes, else 'cluster'."""
    if requested != "auto":
        return requested
    counts = Counter(normalise_answer(a) for a in answers)
    repeated = sum(c for c in counts.values() if c >= 2)
    few_classes = len(counts) <= max(2, len(answers) // 4)
    return "answer" if few_classes and repeated >= 0.8 * len(answers) else "cluster"


def kmeans(features: np.ndarray, k: int, seed: int, iterations: int = 25) -> np.ndarray:
    """Deterministic k-means++ init + Lloyd iterations; returns centroids (k', D), k' <= k."""
    rng = np.random.default_rng(seed)
    n = len(features)
    k = max(1, min(k, n))
    centroids = [features[rng.integers(n)]]
    for _ in range(1, k):
        dist = np.min(((features[:, None, :] - np.stack(centroids)[None]) ** 2).sum(-1), axis=1)
        if dist.sum() <= 0:
            break
        centroids.append(features[rng.choice(n, p=dist / dist.sum())])
    centres = np.stack(centroids)
    for _ in range(iterations):
        labels = assign_nearest(features, centres)
        updated = np.stack(
            [features[labels == j].mean(0) if np.any(labels == j) else centres[j] for j in range(len(centres))]
        )
        if np.allclose(updated, centres):
            break
        centres = updated
    return centres


def assign_nearest(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return ((features[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)


@dataclass
class Grouping:
    """A rule that maps a sample to its group; built on the whole dataset, applied per shard."""

    structure: str  # "answer" | "cluster"
    keys: list[str]  # answer text per group, or "cluster-<j>"
    centroids: np.ndarray | None = None

    @classmethod
    def fit(cls, structure: str, answers: Sequence[str], images: Sequence[torch.Tensor],
            num_clusters: int, seed: int) -> Grouping:
        if structure == "answer":
            keys = sorted({normalise_answer(a) for a in answers})
            return cls("answer", keys)
        centroids = kmeans(image_features(images), num_clusters, seed)
        return cls("cluster", [f"cluster-{j}" for j in range(len(centroids))], centroids)

    def assign(self, answers: Sequence[str], images: Sequence[torch.Tensor]) -> list[int]:
        if self.structure == "answer":
            index = {key: j for j, key in enumerate(self.keys)}
            out = []
            for answer in answers:
                key = normalise_answer(answer)
                if key not in index:
                    raise ValueError(f"answer {answer!r} was not seen when the shared patterns were learned")
                out.append(index[key])
            return out
        assert self.centroids is not None
        return assign_nearest(image_features(images), self.centroids).tolist()

    def to_dict(self) -> dict:
        return {
            "structure": self.structure,
            "keys": self.keys,
            "centroids": None if self.centroids is None else self.centroids.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Grouping:
        centroids = None if data.get("centroids") is None else np.asarray(data["centroids"], dtype=np.float64)
        return cls(data["structure"], list(data["keys"]), centroids)
