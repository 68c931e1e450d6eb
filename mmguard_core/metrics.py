"""Image distance metrics, numpy only (no torch, no scipy): the web API reports them too.

uint8 inputs are read on the 0..255 scale, float inputs on 0..1. `linf` is reported in
[0, 1] units (so it compares directly with epsilon), `psnr` in dB, `ssim` without unit.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["linf", "psnr", "ssim", "gaussian_kernel"]


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Both as float64 on a common scale, plus that scale's data range (255 or 1)."""
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs {y.shape}")
    if x.size == 0:
        raise ValueError("empty images")
    ints_x, ints_y = x.dtype == np.uint8, y.dtype == np.uint8
    if ints_x and ints_y:
        return x.astype(np.float64), y.astype(np.float64), 255.0
    if ints_x or ints_y:  # one 8-bit, one float in [0, 1]
        x = x.astype(np.float64) / (255.0 if ints_x else 1.0)
        y = y.astype(np.float64) / (255.0 if ints_y else 1.0)
        return x, y, 1.0
    return x.astype(np.float64), y.astype(np.float64), 1.0


def linf(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| in [0, 1] units (uint8 inputs are divided by 255)."""
    x, y, data_range = _pair(a, b)
    return float(np.max(np.abs(x - y)) / data_range)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (peak 255 for uint8, 1 for floats); inf when equal."""
    x, y, data_range = _pair(a, b)
    mse = float(np.mean((x - y) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def gaussian_kernel(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian (the 2-D window of SSIM is its outer product)."""
    radius = (size - 1) / 2.0
    taps = np.arange(size, dtype=np.float64) - radius
    kernel = np.exp(-(taps**2) / (2.0 * sigma * sigma))
    return kernel / kernel.sum()


def _filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D image with kernel x kernel."""
    k = kernel.size
    h, w = image.shape
    rows = np.zeros((h - k + 1, w), dtype=np.float64)
    for i in range(k):
        rows += kernel[i] * image[i : i + h - k + 1, :]
    out = np.zeros((h - k + 1, w - k + 1), dtype=np.float64)
    for j in range(k):
        out += kernel[j] * rows[:, j : j + w - k + 1]
    return out


def _ssim_plane(x: np.ndarray, y: np.ndarray, data_range: float, kernel: np.ndarray) -> float:
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_x = _filter_valid(x, kernel)
    mu_y = _filter_valid(y, kernel)
    xx = _filter_valid(x * x, kernel) - mu_x * mu_x
    yy = _filter_valid(y * y, kernel) - mu_y * mu_y
    xy = _filter_valid(x * y, kernel) - mu_x * mu_y
    numerator = (2.0 * mu_x * mu_y + c1) * (2.0 * xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (xx + yy + c2)
    return float(np.mean(numerator / denominator))


def _luminance(image: np.ndarray) -> np.ndarray:
    return image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114


def ssim(a: np.ndarray, b: np.ndarray, *, mode: str = "channels", win_size: int = 11, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004): 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
    K2 = 0.03, mean of the SSIM map over the 'valid' region (no padding) - the reference
    MATLAB ssim_index, and scikit-image's structural_similarity with gaussian_weights=True,
    use_sample_covariance=False.

    Images are (H, W) or (H, W, C). `mode="channels"` averages the per-channel SSIM (alpha
    included when present); `mode="luminance"` compares BT.601 luma of the first 3 channels.
    Needs H, W >= win_size."""
    x, y, data_range = _pair(a, b)
    if x.ndim not in (2, 3):
        raise ValueError(f"ssim: expected (H, W) or (H, W, C), got shape {x.shape}")
    if win_size % 2 != 1 or win_size < 3:
        raise ValueError("ssim: win_size must be odd and >= 3")
    if x.shape[0] < win_size or x.shape[1] < win_size:
        raise ValueError(f"ssim: images must be at least {win_size}x{win_size}, got {x.shape[1]}x{x.shape[0]}")
    kernel = gaussian_kernel(win_size, sigma)
    if x.ndim == 2:
        return _ssim_plane(x, y, data_range, kernel)
    if mode == "luminance":
        if x.shape[2] < 3:
            return _ssim_plane(x[..., 0], y[..., 0], data_range, kernel)
        return _ssim_plane(_luminance(x), _luminance(y), data_range, kernel)
    if mode != "channels":
        raise ValueError(f"ssim: mode must be 'channels' or 'luminance', got {mode!r}")
    return float(np.mean([_ssim_plane(x[..., c], y[..., c], data_range, kernel) for c in range(x.shape[2])]))
