"""mmguard_core.metrics: L-inf, PSNR and SSIM against hand-checked and reference values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmguard_core.metrics import gaussian_kernel, linf, psnr, ssim


def _pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic 24x20x3 images (no RNG, so the reference values below never drift)."""
    i, j, c = np.meshgrid(np.arange(24), np.arange(20), np.arange(3), indexing="ij")
    x = ((i * 37 + j * 91 + c * 53 + (i * j) % 7 * 11) % 256).astype(np.uint8)
    y = np.clip(x.astype(int) + ((i * 5 + j * 3 + c) % 17) - 8, 0, 255).astype(np.uint8)
    z = ((i * 13 + j * 29 + c * 7) % 256).astype(np.uint8)
    return x, y, z


def test_linf() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    assert linf(a, b) == 0.0
    b[1, 2, 0] = 8
    b[0, 0, 1] = 3
    assert linf(a, b) == pytest.approx(8 / 255)
    assert linf(b, a) == pytest.approx(8 / 255)
    assert linf(a / 255.0, b / 255.0) == pytest.approx(8 / 255)  # floats are in [0, 1]
    assert linf(a, b / 255.0) == pytest.approx(8 / 255)  # mixed
    with pytest.raises(ValueError, match="shape mismatch"):
        linf(a, b[:2])


def test_psnr() -> None:
    a = np.full((8, 8), 100, np.uint8)
    assert psnr(a, a) == math.inf
    b = a.copy()
    b[:4] += 10  # MSE = 50
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 50))
    assert psnr(a / 255.0, b / 255.0) == pytest.approx(psnr(a, b))
    x, y, _ = _pair()
    assert psnr(x, y) == pytest.approx(34.44961419100608, abs=1e-9)  # scikit-image 0.26


def test_gaussian_kernel() -> None:
    kernel = gaussian_kernel(11, 1.5)
    assert kernel.shape == (11,) and kernel.sum() == pytest.approx(1.0)
    assert kernel[5] == kernel.max() and kernel[0] == pytest.approx(kernel[10])
    assert kernel[4] / kernel[5] == pytest.approx(math.exp(-1 / (2 * 1.5**2)))


def test_ssim_identity_and_symmetry() -> None:
    x, y, _ = _pair()
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert ssim(x, y) == pytest.approx(ssim(y, x), abs=1e-12)
    assert ssim(x, y) < 1.0


@pytest.mark.parametrize(("c1", "c2"), [(100, 100), (100, 120), (0, 255), (30, 200)])
def test_ssim_constant_images_closed_form(c1: int, c2: int) -> None:
    """Constant images: variances and covariance are 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1)."""
    a = np.full((16, 16), c1, np.uint8)
    b = np.full((16, 16), c2, np.uint8)
    k1 = (0.01 * 255) ** 2
    expected = (2 * c1 * c2 + k1) / (c1**2 + c2**2 + k1)
    assert ssim(a, b) == pytest.approx(expected, rel=1e-9)


def test_ssim_matches_reference_values() -> None:
    """Values from skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255) on the same images (scikit-image 0.26)."""
    x, y, z = _pair()
    assert ssim(x, y) == pytest.approx(0.9977938766395315, abs=1e-9)
    assert ssim(x[..., 0], y[..., 0]) == pytest.approx(0.997731770221572, abs=1e-9)
    assert ssim(x, z) == pytest.approx(-0.04584332157765809, abs=1e-9)


def test_ssim_direct_2d_window_agrees() -> None:
    """The separable filter equals a plain 2-D Gaussian window evaluated at every valid position."""
    x, y, _ = _pair()
    a, b = x[..., 1].astype(np.float64), y[..., 1].astype(np.float64)
    g = gaussian_kernel()
    window = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for r in range(a.shape[0] - 10):
        for c in range(a.shape[1] - 10):
            pa, pb = a[r : r + 11, c : c + 11], b[r : r + 11, c : c + 11]
            ma, mb = (window * pa).sum(), (window * pb).sum()
            va = (window * (pa - ma) ** 2).sum()
            vb = (window * (pb - mb) ** 2).sum()
            cov = (window * (pa - ma) * (pb - mb)).sum()
            values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    assert ssim(x[..., 1], y[..., 1]) == pytest.approx(float(np.mean(values)), abs=1e-10)


def test_ssim_modes_and_scales() -> None:
    x, y, _ = _pair()
    assert ssim(x / 255.0, y / 255.0) == pytest.approx(ssim(x, y), abs=1e-9)
    luma = ssim(x, y, mode="luminance")
    assert 0.9 < luma <= 1.0
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x[:8], y[:8])
    with pytest.raises(ValueError, match="mode"):
        ssim(x, y, mode="rgb")
