"""Image perturbations: the shared (per-group) pattern and the per-sample refinement.

The shared pattern lives on a coarse grid (image size / noise_scale) and is upsampled bilinearly to
each image's own resolution (the per-sample noise too, on its own grid, when `sample_noise_scale` > 1):
smooth noise survives the attacker's resizing, cropping and shifts far better than pixel-level noise
(method.md: 2-pixel shifts cut sample-wise protection to ~0.4), and one pattern serves images of any
size. Bilinear upsampling never leaves the grid's [min, max], so the L-inf bound of the grid holds on
every image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def grid_shape(images: Sequence[torch.Tensor], noise_scale: int) -> tuple[int, int]:
    heights = sorted(img.shape[-2] for img in images)
    widths = sorted(img.shape[-1] for img in images)
    return _coarser(heights[len(heights) // 2], widths[len(widths) // 2], noise_scale)


def sample_grid(image: torch.Tensor, scale: int) -> tuple[int, int]:
    """The (h, w) grid one image's own noise lives on: the image's size, or `scale` times coarser."""
    h, w = image.shape[-2:]
    return (h, w) if scale == 1 else _coarser(h, w, scale)


def _coarser(h: int, w: int, scale: int) -> tuple[int, int]:
    return max(2, round(h / scale)), max(2, round(w / scale))


def upsample(pattern: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, gh, gw) -> (3, H, W)."""
    return F.interpolate(pattern[None], size=size, mode="bilinear", align_corners=False)[0]


def init_patterns(num: int, grid: tuple[int, int], bound: float, gen: torch.Generator) -> torch.Tensor:
    """Random sign patterns at half the bound: a start that is already a (weak) class-wise code."""
    signs = torch.randint(0, 2, (num, 3, *grid), generator=gen).float() * 2 - 1
    return signs * bound * 0.5


def compose(image: torch.Tensor, shared: torch.Tensor | None, own: Sequence[torch.Tensor] | None) -> torch.Tensor:
    """clip(x + up(shared) + sum of up(own parts), 0, 1) for one (3, H, W) image: the per-sample noise
    is one part or more, each on its own grid (the image's, or a coarser one) -- a smooth part and a
    pixel-level one add up."""
    out = image
    size = tuple(image.shape[-2:])
    if shared is not None:
        out = out + upsample(shared, size)
    for part in own or ():
        out = out + (part if tuple(part.shape[-2:]) == size else upsample(part, size))
    return out.clamp(0, 1)


def pgd_step(delta: torch.Tensor, grad: torch.Tensor, step: float, bound: float) -> None:
    """One error-MINIMISING signed step, projected onto the L-inf ball (in place)."""
    with torch.no_grad():
        delta -= step * grad.sign()
        delta.clamp_(-bound, bound)
