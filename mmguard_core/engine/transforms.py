"""Expectation over transformations (EOT): the attacker's resizing, cropping and re-encoding
applied during optimisation, so the noise is shaped to survive them rather than hoped to.

Each transform maps a batch of images (B, 3, H, W) in [0, 1] to the same shape, differentiably
(JPEG by a straight-through estimator: the forward pass sees the real codec, gradients pass as identity).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return float(low + (high - low) * torch.rand((), generator=gen))


def random_resize(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Down- or up-scale and back: the attacker's processor resizing to its own input size."""
    h, w = x.shape[-2:]
    scale = _uniform(gen, 0.5, 1.5)
    size = (max(4, round(h * scale)), max(4, round(w * scale)))
    small = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def random_crop(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop of 80-100 % of each side, resized back (random-resized-crop augmentation, shifts)."""
    h, w = x.shape[-2:]
    frac = _uniform(gen, 0.8, 1.0)
    ch, cw = max(2, round(h * frac)), max(2, round(w * frac))
    top = int(torch.randint(0, h - ch + 1, (), generator=gen))
    left = int(torch.randint(0, w - cw + 1, (), generator=gen))
    crop = x[..., top : top + ch, left : left + cw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


def random_blur(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    sigma = _uniform(gen, 0.3, 1.2)
    radius = 2
    coords = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    kx = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    ky = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(F.conv2d(padded, kx, groups=channels), ky, groups=channels)


def random_noise(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    sigma = _uniform(gen, 0.0, 0.03)
    noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device) * sigma
    return (x + noise).clamp(0, 1)


def random_jpeg(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Real JPEG at a random quality 50-95; straight-through gradient."""
    quality = int(torch.randint(50, 96, (), generator=gen))
    arrays = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        decoded.append(np.asarray(Image.open(buffer).convert("RGB")))
    jpeg = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255
    return x + (jpeg - x).detach()


TRANSFORMS: dict[str, Transform] = {
    "resize": random_resize,
    "crop": random_crop,
    "blur": random_blur,
    "noise": random_noise,
    "jpeg": random_jpeg,
}


def apply_random(x: torch.Tensor, names: Sequence[str], gen: torch.Generator, p_identity: float = 0.25) -> torch.Tensor:
    """One transformation drawn from `names` (or none, with probability p_identity)."""
    if not names or float(torch.rand((), generator=gen)) < p_identity:
        return x
    name = names[int(torch.randint(0, len(names), (), generator=gen))]
    return TRANSFORMS[name](x, gen)
