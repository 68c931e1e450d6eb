"""Image perturbations: the shared (per-group) pattern and the per-sample refinement.

The shared pattern lives on a coarse grid (image size / noise_scale) and is upsampled bilinearly to
each image's own resolution: smooth noise survives the attacker's resizing, cropping and shifts far
better than pixel-level noise (method.md: 2-pixel shifts cut sample-wise protection to ~0.4), and one
pattern serves images of any size. Bilinear upsampling never leaves the grid's [min, max], so the
L-inf bound of the grid holds on every image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def grid_shape(images: Sequence[torch.Tensor], noise_scale: int) -> tuple[int, int]:
    heights = sorted(img.shape[-2] for img in images)
    widths = sorted(img.shape[-1] for img in images)
    h, w = heights[len(heights) // 2], widths[len(widths) // 2]
    return max(2, round(h / noise_scale)), max(2, round(w / noise_scale))


def upsample(pattern: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, gh, gw) -> (3, H, W)."""
    return F.interpolate(pattern[None], size=size, mode="bilinear", align_corners=False)[0]


def init_patterns(num: int, grid: tuple[int, int], bound: float, gen: torch.Generator) -> torch.Tensor:
    """Random sign patterns at half the bound: a start that is already a (weak) class-wise code."""
    signs = torch.randint(0, 2, (num, 3, *grid), generator=gen).float() * 2 - 1
    return signs * bound * 0.5


def compose(image: torch.Tensor, shared: torch.Tensor | None, own: torch.Tensor | None) -> torch.Tensor:
    """clip(x + up(shared) + own, 0, 1) for one (3, H, W) image."""
    out = image
    if shared is not None:
        out = out + upsample(shared, tuple(image.shape[-2:]))
    if own is not None:
        out = out + own
    return out.clamp(0, 1)


def pgd_step(delta: torch.Tensor, grad: torch.Tensor, step: float, bound: float) -> None:
    """One error-MINIMISING signed step, projected onto the L-inf ball (in place)."""
    with torch.no_grad():
        delta -= step * grad.sign()
        delta.clamp_(-bound, bound)
