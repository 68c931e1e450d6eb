"""Reading and writing images with numpy and Pillow only (no torch here).

Reading: JPEG, PNG and WEBP only (Pillow's `formats=` allow-list), EXIF orientation
applied, a pixel cap checked on the header before anything is decoded (Pillow's
DecompressionBombWarning is turned into an error too), every mode brought to RGB
with the alpha channel, if any, returned separately.

Writing: PNG only (lossless), so the L-inf bound computed on 8-bit values holds on
the saved bytes; `quantize_with_bound` makes the 8-bit values that keep it.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000  # ~8K x 6K; a 100 MP phone photo needs a higher cap


class ImageReadError(ValueError):
    """An image file cannot be used; the message says why (the caller adds the file name)."""


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    mode: str  # Pillow mode as stored in the file (e.g. "RGB", "P", "LA", "CMYK")
    format: str  # "JPEG", "PNG" or "WEBP"

    @property
    def has_alpha(self) -> bool:
        return self.mode in ("RGBA", "LA", "PA", "RGBa", "La")


def _open(path: str | os.PathLike[str], max_pixels: int | None) -> Image.Image:
    """Open (header only) with the format allow-list and the pixel cap."""
    cap = DEFAULT_MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    # Pillow's own guard warns over Image.MAX_IMAGE_PIXELS: an error, unless our cap is higher
    # (then our check below decides; Pillow still refuses over twice its limit).
    pillow_cap = Image.MAX_IMAGE_PIXELS
    bomb_action = "error" if pillow_cap is None or cap <= pillow_cap else "ignore"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(bomb_action, Image.DecompressionBombWarning)
            image = Image.open(path, formats=list(IMAGE_FORMATS))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"image too large (decompression bomb guard): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError("not a readable JPEG, PNG or WEBP image") from exc
    except FileNotFoundError as exc:
        raise ImageReadError("file not found") from exc
    except IsADirectoryError as exc:
        raise ImageReadError("is a folder, not an image file") from exc
    except PermissionError as exc:
        raise ImageReadError("permission denied") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(f"image is truncated or corrupt ({exc})") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise ImageReadError(f"image has an empty size {width}x{height}")
    if width * height > cap:
        image.close()
        raise ImageReadError(
            f"image too large: {width}x{height} = {width * height} pixels, over the cap of {cap} pixels"
        )
    return image


def probe_image(path: str | os.PathLike[str], *, max_pixels: int | None = None, decode: bool = True) -> ImageInfo:
    """Check that `path` is a usable image; with `decode` the whole image is decoded, so a
    truncated or corrupt file is caught. Raises ImageReadError."""
    image = _open(path, max_pixels)
    try:
        info = ImageInfo(image.width, image.height, image.mode, image.format or "")
        if decode:
            try:
                image.load()
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise ImageReadError(f"image is truncated or corrupt ({exc})") from exc
        return info
    finally:
        image.close()


def _to_rgb_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow mode -> (uint8 (H, W, 3), uint8 (H, W) alpha or None)."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    elif mode == "PA":
        image = image.convert("RGBA")
        mode = "RGBA"
    elif mode in ("RGBa", "La"):  # premultiplied alpha
        image = image.convert("RGBA" if mode == "RGBa" else "LA")
        mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8).copy(), None
    if mode == "RGBA":
        array = np.asarray(image, dtype=np.uint8)
        return array[..., :3].copy(), array[..., 3].copy()
    if mode == "LA":
        array = np.asarray(image, dtype=np.uint8)
        gray = array[..., 0]
        return np.repeat(gray[..., None], 3, axis=2), array[..., 1].copy()
    if mode in ("L", "1"):
        gray = np.asarray(image.convert("L"), dtype=np.uint8)
        return np.repeat(gray[..., None], 3, axis=2), None
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grey PNG: keep the top 8 bits (rounded)
        wide = np.asarray(image).astype(np.float64)
        gray = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2), None
    # CMYK, YCbCr, LAB, HSV, F, ...: let Pillow convert
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy(), None


def read_image_uint8(
    path: str | os.PathLike[str], *, max_pixels: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(rgb uint8 (H, W, 3), alpha uint8 (H, W) or None), EXIF orientation applied.

    This is the 8-bit original that `quantize_with_bound` bounds against. Animated
    files give their first frame. Raises ImageReadError."""
    image = _open(path, max_pixels)
    try:
        try:
            image.load()
            oriented = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageReadError(f"image is truncated or corrupt ({exc})") from exc
        rgb, alpha = _to_rgb_alpha(oriented if oriented is not None else image)
    finally:
        image.close()
    return np.ascontiguousarray(rgb), (None if alpha is None else np.ascontiguousarray(alpha))


def load_image_with_alpha(
    path: str | os.PathLike[str], *, max_pixels: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(rgb float32 (H, W, 3) in [0, 1], alpha float32 (H, W) in [0, 1] or None)."""
    rgb, alpha = read_image_uint8(path, max_pixels=max_pixels)
    return to_float(rgb), (None if alpha is None else to_float(alpha))


def load_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> np.ndarray:
    """float32 (H, W, 3) in [0, 1], EXIF orientation applied, alpha dropped
    (use load_image_with_alpha or read_image_uint8 to get it)."""
    rgb, _ = read_image_uint8(path, max_pixels=max_pixels)
    return to_float(rgb)


def to_float(array_uint8: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] (exact: k / 255)."""
    return np.asarray(array_uint8, dtype=np.uint8).astype(np.float32) / np.float32(255.0)


def merge_alpha(rgb_uint8: np.ndarray, alpha_uint8: np.ndarray | None) -> np.ndarray:
    """(H, W, 3) + optional (H, W) alpha -> (H, W, 3) or (H, W, 4) uint8, the form ProtectedSample.image takes."""
    rgb = _check_uint8(rgb_uint8, "rgb")
    if alpha_uint8 is None:
        return rgb
    alpha = _check_uint8(alpha_uint8, "alpha")
    if alpha.shape != rgb.shape[:2]:
        raise ValueError(f"alpha shape {alpha.shape} does not match image shape {rgb.shape[:2]}")
    return np.concatenate([rgb, alpha[..., None]], axis=2)


def _check_uint8(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"{what}: expected a uint8 array, got {array.dtype} (use quantize_with_bound first)")
    return array


_PNG_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def _png_image(array_uint8: np.ndarray) -> Image.Image:
    array = _check_uint8(array_uint8, "image")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in _PNG_MODES or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    channels = array.shape[2]
    data = np.ascontiguousarray(array[..., 0] if channels == 1 else array)
    return Image.fromarray(data)


def encode_png(array_uint8: np.ndarray, *, compress_level: int = 6) -> bytes:
    """PNG bytes of a uint8 (H, W[, C]) array; C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA."""
    buffer = io.BytesIO()
    _png_image(array_uint8).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def save_png(array_uint8: np.ndarray, path: str | os.PathLike[str] | BinaryIO, *, compress_level: int = 6) -> None:
    """Save losslessly as PNG (whatever the file name says). Refuses non-uint8 arrays."""
    data = encode_png(array_uint8, compress_level=compress_level)
    if hasattr(path, "write"):
        path.write(data)  # type: ignore[union-attr]
        return
    Path(path).write_bytes(data)


def epsilon_steps(epsilon: float) -> int:
    """floor(epsilon * 255): the largest k with k / 255 <= epsilon (checked in float, so
    linf() of the result never exceeds epsilon; 8/255 gives 8, 0.031372549 gives 7)."""
    if not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    k = min(255, int(math.floor(epsilon * 255.0)))
    if k < 255 and (k + 1) / 255.0 <= epsilon:
        k += 1
    if k > 0 and k / 255.0 > epsilon:
        k -= 1
    return k


def quantize_with_bound(original_uint8: np.ndarray, perturbed_float: np.ndarray, epsilon: float) -> np.ndarray:
    """8-bit image for `perturbed_float` (values in [0, 1]) whose L-inf distance to
    `original_uint8` is at most floor(epsilon * 255) / 255 <= epsilon, on the saved bytes.

    Rounds to the nearest 8-bit value, then clips to original +- floor(eps * 255) and to
    [0, 255]. NaN pixels fall back to the original value. Shapes must match.
    """
    original = _check_uint8(original_uint8, "original")
    perturbed = np.asarray(perturbed_float, dtype=np.float64)
    if perturbed.shape != original.shape:
        raise ValueError(f"shape mismatch: original {original.shape}, perturbed {perturbed.shape}")
    k = epsilon_steps(epsilon)
    base = original.astype(np.int16)
    scaled = np.rint(np.clip(perturbed * 255.0, -1.0, 256.0))  # NaN stays NaN here
    scaled = np.where(np.isnan(scaled), base, scaled).astype(np.int16)
    low = np.maximum(base - k, 0)
    high = np.minimum(base + k, 255)
    return np.clip(scaled, low, high).astype(np.uint8)
