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
from itertools import permutations

import numpy as np
import torch
import torch.nn.functional as F

FEATURE_GRID = 4  # image features: mean colour on a 4 x 4 grid (48 numbers)
# up to this many groups the nearest targets form the cheapest derangement (8! = 40320 orders to try);
# beyond it each group simply takes its nearest other group
MAX_DERANGEMENT_GROUPS = 8


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
    # the targeted noise's target group of each group (None: the next group, g -> g + 1 cyclically)
    targets: list[int] | None = None

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
            "targets": self.targets,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Grouping:
        centroids = None if data.get("centroids") is None else np.asarray(data["centroids"], dtype=np.float64)
        targets = data.get("targets")  # absent in jobs stored before target_choice
        return cls(data["structure"], list(data["keys"]), centroids,
                   None if targets is None else [int(t) for t in targets])

    def target_of(self, group: int) -> int:
        """The group whose answer `group`'s images are pushed towards by the targeted noise."""
        return self.targets[group] if self.targets is not None else (group + 1) % len(self.keys)

    def target_keys(self) -> dict[str, str]:
        """{group key: its target group's key}: what the report shows of the targeted noise's aim."""
        return {key: self.keys[self.target_of(g)] for g, key in enumerate(self.keys)}


def nearest_targets(features: np.ndarray, groups: Sequence[int], num_groups: int) -> list[int]:
    """Each group's target: the group that looks most like it (distance between the groups' mean image
    features), so the bounded noise has the least way to go. Up to MAX_DERANGEMENT_GROUPS groups the
    targets are the derangement (no group its own target, each group the target of one) of least total
    distance: every group's look then stands for a wrong answer in the protected copy. A group without
    samples keeps the next group as its target."""
    if num_groups < 2:
        return list(range(num_groups))
    members = np.asarray(groups)
    present = [g for g in range(num_groups) if (members == g).any()]
    centres = {g: features[members == g].mean(axis=0) for g in present}
    distance = np.full((num_groups, num_groups), np.inf)
    for a in present:
        for b in present:
            if a != b:
                distance[a, b] = float(((centres[a] - centres[b]) ** 2).sum())
    targets = [(g + 1) % num_groups for g in range(num_groups)]
    if len(present) < 2:
        return targets
    if len(present) <= MAX_DERANGEMENT_GROUPS:
        best = min((order for order in permutations(present) if all(a != b for a, b in zip(present, order, strict=True))),
                   key=lambda order: sum(distance[a, b] for a, b in zip(present, order, strict=True)))
        for a, b in zip(present, best, strict=True):
            targets[a] = b
        return targets
    for a in present:
        targets[a] = int(np.argmin(distance[a]))
    return targets
