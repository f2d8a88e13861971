"""Uploaded photo bytes -> an RGB uint8 array, or a ``PhotoError`` saying, with its HTTP status, what is wrong.

Only JPEG, PNG and WebP reach a decoder; the size checks read the header first, so a decompression bomb is
refused before a single pixel is decoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import sys
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from pipelines.params import Params

# The Pillow formats that reach a decoder. A JPEG holding extra pictures (MPF: phones' depth or gain maps) opens
# as MPO; its first picture, the one every viewer shows, is the photo.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
ACCEPTED_TEXT = "JPEG, PNG or WebP"
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_DATA_URL = re.compile(r"data:([^,]*),", re.ASCII)
_IMAGE_DATA_URL = re.compile(r"image/[\w.+-]+;base64", re.ASCII | re.IGNORECASE)
_TRUNCATED_MESSAGES = ("image file is truncated", "Truncated File Read")   # Pillow's OSError texts


def _pil_open(fp, formats=None) -> Image.Image:
    """Pillow's own ``Image.open``: ultralytics replaces ``PIL.Image.open`` on import with a wrapper that, on an
    unidentified file, tries to pip-install pi-heif (at request time, offline here) and then raises something
    other than ``UnidentifiedImageError`` -- a non-image would then answer 422 instead of 415. The wrapper keeps
    the original as ``_image_open``; it is used whenever the patch is in place."""
    opener = Image.open
    if getattr(opener, "__module__", "").startswith("ultralytics"):
        opener = getattr(sys.modules[opener.__module__], "_image_open", opener)
    return opener(fp, formats=formats)


class PhotoError(Exception):
    """A photo the service refuses: ``status`` is the HTTP status, ``code`` a stable machine-readable name."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.message}


def missing_field(name: str) -> PhotoError:
    """The 400 for a request that lacks the field ``name``."""
    return PhotoError(400, "missing_field", f"the request has no {name!r} field")


def photo_limits(params: Params) -> dict[str, int]:
    """The keyword limits of ``decode_photo`` as params.yaml sets them."""
    return {"max_bytes": params.serving.max_upload_bytes, "max_pixels": params.serving.max_pixels,
            "min_side": params.validation.min_side, "max_side": params.validation.max_side}


def decode_photo(data: bytes, *, max_bytes: int, max_pixels: int, min_side: int, max_side: int) -> np.ndarray:
    """The photo as a writable RGB uint8 array (H, W, 3), EXIF orientation applied; ``PhotoError`` otherwise.

    A photo above Pillow's own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is refused too, so its
    DecompressionBombWarning can never let a photo through.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: truncated uploads would pass as photos")
    if not data:
        raise PhotoError(400, "empty_photo", "the photo is empty (0 bytes)")
    if len(data) > max_bytes:
        raise PhotoError(413, "photo_too_large", f"the photo is {len(data)} bytes; the limit is {max_bytes} bytes")
    try:
        img = _pil_open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))        # Pillow refused it before we saw its header
        raise PhotoError(422, "photo_too_many_pixels", f"the photo has {found.group(1) + ' ' if found else 'too many '}"
                         f"pixels; the limit is {min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)} pixels") from None
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except Exception as exc:
        raise _undecodable(data, exc) from None
    with img:
        _check_header(img, max_pixels, min_side, max_side)
        try:
            img.load()
            rgb = _to_rgb(ImageOps.exif_transpose(img))
        except Exception as exc:
            raise _undecodable(data, exc) from None
    return rgb


def decode_photo_b64(text: str, *, max_bytes: int, max_pixels: int, min_side: int, max_side: int) -> np.ndarray:
    """``decode_photo`` of base64 text, optionally a ``data:image/<type>;base64,`` URL; 400 ``bad_base64`` if invalid."""
    return decode_photo(b64_bytes(text, max_bytes=max_bytes), max_bytes=max_bytes, max_pixels=max_pixels,
                        min_side=min_side, max_side=max_side)


def b64_bytes(text: str, *, max_bytes: int) -> bytes:
    """The file bytes of base64 text (or a ``data:image/<type>;base64,`` URL); 400 ``bad_base64`` / 413 if too large."""
    if not isinstance(text, str):
        raise PhotoError(400, "bad_base64", f"the photo must be a base64 string, not {type(text).__name__}")
    payload = "".join(text.split())
    if url := _DATA_URL.match(payload):
        if not _IMAGE_DATA_URL.fullmatch(url.group(1)):
            raise PhotoError(400, "bad_base64",
                             f"a data URL photo must start 'data:image/<type>;base64,', not {url.group(0)[:60]!r}")
        payload = payload[url.end():]
    if len(payload) > 4 * (max_bytes // 3 + 1):
        raise PhotoError(413, "photo_too_large",
                         f"the photo is about {len(payload) * 3 // 4} bytes; the limit is {max_bytes} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PhotoError(400, "bad_base64", f"the photo is not valid base64: {exc}") from None


def archive_photo(data: bytes, archive: Path) -> Path:
    """Keep ``data`` under ``archive`` named by its SHA-256 (``ab/abcd….jpg``); written once, atomically."""
    digest = hashlib.sha256(data).hexdigest()
    suffix = {"JPEG": ".jpg", "PNG": ".png", "WebP": ".webp"}.get(_signature(data) or "", ".img")
    path = archive / digest[:2] / f"{digest}{suffix}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def _check_header(img: Image.Image, max_pixels: int, min_side: int, max_side: int) -> None:
    """Refuse from the header alone: too many pixels, a side out of range, an animation."""
    width, height = img.size
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    if width * height > limit:
        raise PhotoError(422, "photo_too_many_pixels",
                         f"the photo is {width}x{height} = {width * height} pixels; the limit is {limit} pixels")
    if max(width, height) > max_side:
        raise PhotoError(422, "photo_too_large_dimensions",
                         f"the photo is {width}x{height}; no side may exceed {max_side} px")
    if min(width, height) < min_side:
        raise PhotoError(422, "photo_too_small", f"the photo is {width}x{height}; each side must be at least {min_side} px")
    if img.format in ("PNG", "WEBP") and getattr(img, "n_frames", 1) > 1:
        raise PhotoError(422, "animated_photo", f"the photo is an animated {img.format} of {img.n_frames} frames: "
                         "a listing photo is one frame; an animation could hide content in later frames")


def _to_rgb(img: Image.Image) -> np.ndarray:
    """RGB uint8: 16-bit grey keeps its high byte (as Pillow does for 48-bit RGB), alpha is composited on white."""
    if img.mode.startswith("I;16"):
        grey = (np.array(img).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.array(img.convert("RGB"), dtype=np.uint8)


def _unidentified(data: bytes) -> PhotoError:
    """Why Pillow found no accepted format: a damaged accepted file, another image format, or no image."""
    fmt = _signature(data)
    if fmt:
        if _truncated(data, None):
            return _truncated_error(data)
        return PhotoError(422, "undecodable_photo", f"the file starts like a {fmt} but its header is unreadable")
    other = _other_format(data)
    if other:
        return PhotoError(415, "unsupported_format", f"{other} photos are not accepted; send {ACCEPTED_TEXT}")
    return PhotoError(415, "not_an_image", f"the file is not an image; send {ACCEPTED_TEXT}")


def _undecodable(data: bytes, exc: Exception) -> PhotoError:
    """422: ``truncated_photo`` when the file ends early, ``undecodable_photo`` for any other decoding failure."""
    if _truncated(data, exc):
        return _truncated_error(data)
    return PhotoError(422, "undecodable_photo", f"the photo cannot be decoded: {type(exc).__name__}: {exc}")


def _truncated_error(data: bytes) -> PhotoError:
    return PhotoError(422, "truncated_photo", f"the photo is truncated: its data ends early after {len(data)} bytes; "
                      "upload the whole file")


def _truncated(data: bytes, exc: Exception | None) -> bool:
    """Pillow ran out of data, or a WebP is shorter than the size its RIFF header declares."""
    if isinstance(exc, OSError) and str(exc).startswith(_TRUNCATED_MESSAGES):
        return True
    return _signature(data) == "WebP" and int.from_bytes(data[4:8], "little") + 8 > len(data)


def _signature(data: bytes) -> str | None:
    """The accepted format whose magic bytes ``data`` starts with, else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def _other_format(data: bytes) -> str | None:
    """The name of an image format we do not accept (whatever Pillow identifies, or HEIF), else None."""
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "HEIF"
    try:
        with _pil_open(io.BytesIO(data)) as img:   # header only: nothing is decoded
            return img.format
    except Exception:
        return None
