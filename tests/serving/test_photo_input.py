"""pipelines.serve.photo_input on real images made here with Pillow and numpy: every refusal has its status and code."""

from __future__ import annotations

import base64
import io
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

import ultralytics  # noqa: F401  -- the service imports it: its PIL.Image.open patch must not change any answer
from pipelines.params import load_params
from pipelines.serve.photo_input import PhotoError, decode_photo, decode_photo_b64, missing_field, photo_limits

LIMITS = photo_limits(load_params())
RNG = np.random.default_rng(3)
NOISE = RNG.integers(0, 256, (96, 128, 3), dtype=np.uint8)     # H=96, W=128: non-square catches a transposition


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand (IHDR, one IDAT, IEND): layouts Pillow cannot write, and headers that lie."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def refused(data: bytes, **limits) -> PhotoError:
    with pytest.raises(PhotoError) as info:
        decode_photo(data, **{**LIMITS, **limits})
    return info.value


def gradient16(width: int = 256, height: int = 64) -> np.ndarray:
    """uint16 ramp over the whole 0..65535 range, one value per column."""
    return np.tile(np.linspace(0, 65535, width).round().astype(np.uint16), (height, 1))


# --- photos that decode ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,kw", [("PNG", {}), ("WEBP", {"lossless": True})])
def test_lossless_formats_decode_exactly(fmt, kw):
    out = decode_photo(encode(Image.fromarray(NOISE), fmt, **kw), **LIMITS)
    assert out.shape == (96, 128, 3) and out.dtype == np.uint8 and out.flags.writeable
    np.testing.assert_array_equal(out, NOISE)


def test_jpeg_decodes_to_rgb_in_order():
    flat = np.zeros((96, 128, 3), np.uint8)
    flat[:, :64] = (200, 30, 40)
    flat[:, 64:] = (20, 180, 90)
    out = decode_photo(encode(Image.fromarray(flat), "JPEG", quality=95), **LIMITS)
    assert out.shape == (96, 128, 3) and out.dtype == np.uint8
    assert np.abs(out[10, 10].astype(int) - (200, 30, 40)).max() <= 6
    assert np.abs(out[10, 120].astype(int) - (20, 180, 90)).max() <= 6


def test_16_bit_grey_png_is_scaled_not_clipped():
    ramp = gradient16()
    img = Image.fromarray(ramp)
    assert img.mode == "I;16"
    out = decode_photo(encode(img, "PNG"), **LIMITS)
    expected = (ramp >> 8).astype(np.uint8)
    assert out.shape == (64, 256, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 1], out[..., 2])
    assert out[0, 0, 0] == 0 and out[0, 128, 0] == 128 and out[0, -1, 0] == 255   # mid-grey stays mid-grey
    assert np.all(np.diff(out[0, :, 0].astype(int)) >= 0) and len(np.unique(out)) == 256


def test_48_bit_rgb_png_matches_16_bit_grey():
    ramp = gradient16()
    rgb16 = np.stack([ramp, ramp[:, ::-1], np.full_like(ramp, 32896)], axis=2)   # 32896 = 128 * 257
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb16)
    out = decode_photo(png_bytes(256, 64, 16, 2, rows), **LIMITS)
    grey = decode_photo(encode(Image.fromarray(ramp), "PNG"), **LIMITS)
    np.testing.assert_array_equal(out[..., 0], grey[..., 0])
    np.testing.assert_array_equal(out[..., 1], grey[:, ::-1, 0])
    assert np.all(out[..., 2] == 128)


def test_transparency_is_composited_on_white():
    rgba = np.zeros((64, 96, 4), np.uint8)
    rgba[..., :3] = (0, 0, 200)
    rgba[:, :32, 3] = 0            # transparent -> white
    rgba[:, 32:64, 3] = 255        # opaque -> the colour
    rgba[:, 64:, 3] = 128          # half -> halfway to white
    out = decode_photo(encode(Image.fromarray(rgba, "RGBA"), "PNG"), **LIMITS)
    assert out.shape == (64, 96, 3)
    assert tuple(out[5, 5]) == (255, 255, 255)
    assert tuple(out[5, 40]) == (0, 0, 200)
    assert np.abs(out[5, 80].astype(int) - (127, 127, 228)).max() <= 1


def test_grey_palette_la_and_cmyk_become_rgb():
    grey = Image.fromarray(NOISE[..., 0])
    out = decode_photo(encode(grey, "PNG"), **LIMITS)
    np.testing.assert_array_equal(out, np.repeat(NOISE[..., :1], 3, axis=2))

    pal = Image.fromarray(NOISE).quantize(16)
    out = decode_photo(encode(pal, "PNG"), **LIMITS)
    np.testing.assert_array_equal(out, np.array(pal.convert("RGB")))

    pal.info["transparency"] = 0                                   # palette entry 0 transparent -> white
    out = decode_photo(encode(pal, "PNG", transparency=0), **LIMITS)
    index = np.array(pal)
    assert (out[index == 0] == 255).all()
    np.testing.assert_array_equal(out[index != 0], np.array(pal.convert("RGB"))[index != 0])

    la = Image.fromarray(np.dstack([NOISE[..., 0], np.full((96, 128), 255, np.uint8)]), "LA")
    np.testing.assert_array_equal(decode_photo(encode(la, "PNG"), **LIMITS)[..., 1], NOISE[..., 0])

    cmyk = Image.new("CMYK", (96, 64), (0, 255, 255, 0))           # pure red in CMYK
    out = decode_photo(encode(cmyk, "JPEG", quality=95), **LIMITS)
    assert out.shape == (64, 96, 3)
    assert out[30, 40, 0] > 240 and out[30, 40, 1] < 15 and out[30, 40, 2] < 15


def test_exif_orientation_is_applied():
    arr = np.zeros((64, 128, 3), np.uint8)
    arr[:32, :32] = (255, 0, 0)                                   # red top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6                                              # "rotate 90 degrees clockwise to display"
    out = decode_photo(encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif), **LIMITS)
    assert out.shape == (128, 64, 3)
    assert out[10, -10, 0] > 200 and out[10, 10, 0] < 40          # red is now top-right


def test_mpo_jpeg_with_extra_pictures_gives_its_first_picture():
    first, second = Image.new("RGB", (128, 96), (200, 30, 40)), Image.new("RGB", (128, 96), (0, 255, 0))
    data = encode(first, "MPO", save_all=True, append_images=[second], quality=95)
    assert Image.open(io.BytesIO(data)).format == "MPO"
    out = decode_photo(data, **LIMITS)
    assert out.shape == (96, 128, 3)
    assert np.abs(out.astype(int) - (200, 30, 40)).max() <= 6


# --- refusals ------------------------------------------------------------------------------------------------------

def test_empty_and_too_large():
    err = refused(b"")
    assert (err.status, err.code) == (400, "empty_photo")
    data = encode(Image.fromarray(NOISE), "PNG")
    err = refused(data, max_bytes=1000)
    assert (err.status, err.code) == (413, "photo_too_large")
    assert str(len(data)) in err.message and "1000" in err.message
    assert err.to_json() == {"error": "photo_too_large", "detail": err.message}


@pytest.mark.parametrize("data", [b"hello, this is a listing description\n" * 10,
                                  b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n",
                                  RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes()])
def test_not_an_image(data):
    err = refused(data)
    assert (err.status, err.code) == (415, "not_an_image")
    assert all(name in err.message for name in ("JPEG", "PNG", "WebP"))


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_image_formats_are_unsupported(fmt):
    err = refused(encode(Image.fromarray(NOISE), fmt))
    assert (err.status, err.code) == (415, "unsupported_format")
    assert fmt in err.message and "JPEG" in err.message


def test_heif_is_named():
    heic = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    err = refused(heic)
    assert (err.status, err.code, "HEIF" in err.message) == (415, "unsupported_format", True)


@pytest.mark.parametrize("fmt,kw", [("JPEG", {"quality": 90}), ("PNG", {}), ("WEBP", {"quality": 80})])
@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated(fmt, kw, keep):
    data = encode(Image.fromarray(NOISE), fmt, **kw)
    err = refused(data[: int(len(data) * keep)])
    assert (err.status, err.code) == (422, "truncated_photo")
    assert "truncated" in err.message


def test_jpeg_cut_inside_its_header_is_truncated():
    err = refused(encode(Image.fromarray(NOISE), "JPEG")[:200])
    assert (err.status, err.code) == (422, "truncated_photo")


def test_corrupt_data_is_undecodable():
    data = bytearray(encode(Image.fromarray(NOISE), "PNG"))
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    err = refused(bytes(data))
    assert (err.status, err.code) == (422, "undecodable_photo")
    err = refused(png_bytes(128, 96, 8, 2, b"")[:30])               # a PNG signature, then a cut IHDR
    assert (err.status, err.code) == (422, "undecodable_photo") and "PNG" in err.message


def test_bomb_header_is_refused_before_decoding(monkeypatch):
    bomb = png_bytes(50000, 50000, 8, 2, b"\x00" * 100)             # claims 2.5 Gpx, 200 bytes on disk
    assert len(bomb) < 300
    start = time.perf_counter()
    err = refused(bomb)
    assert (err.status, err.code) == (422, "photo_too_many_pixels")   # Pillow's DecompressionBombError
    assert err.message == f"the photo has 2500000000 pixels; the limit is {LIMITS['max_pixels']} pixels"  # ours
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)                # without Pillow's guard: our header check
    err = refused(bomb)
    assert (err.status, err.code) == (422, "photo_too_many_pixels")
    assert "50000x50000" in err.message and str(LIMITS["max_pixels"]) in err.message
    assert time.perf_counter() - start < 1.0                            # nothing was decoded (nor found truncated)


def test_pillow_bomb_warning_ends_as_422(monkeypatch):
    data = encode(Image.fromarray(NOISE), "PNG")                         # 12288 px
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10000)                # warning band: (10000, 20000]
    with pytest.warns(Image.DecompressionBombWarning):
        err = refused(data, max_pixels=10**9)
    assert (err.status, err.code) == (422, "photo_too_many_pixels")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # a server run with -W error
        err = refused(data, max_pixels=10**9)
    assert (err.status, err.code) == (422, "photo_too_many_pixels")


def test_pixel_and_side_limits():
    data = encode(Image.fromarray(NOISE), "PNG")                         # 128 x 96
    err = refused(data, max_pixels=10000)
    assert (err.status, err.code) == (422, "photo_too_many_pixels") and "128x96" in err.message
    err = refused(data, max_side=100)
    assert (err.status, err.code) == (422, "photo_too_large_dimensions") and "100" in err.message
    err = refused(encode(Image.new("RGB", (200, 40)), "PNG"))
    assert (err.status, err.code) == (422, "photo_too_small") and str(LIMITS["min_side"]) in err.message


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animation_is_refused(fmt):
    frames = [Image.fromarray(NOISE), Image.new("RGB", (128, 96), (255, 0, 0))]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **({"lossless": True} if fmt == "WEBP" else {}))
    err = refused(data)
    assert (err.status, err.code) == (422, "animated_photo")
    assert "one frame" in err.message and "2 frames" in err.message


def test_load_truncated_images_set_elsewhere_fails_loudly(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_photo(encode(Image.fromarray(NOISE), "PNG"), **LIMITS)


# --- base64, helpers -------------------------------------------------------------------------------------------------

def test_base64_with_and_without_data_url():
    data = encode(Image.fromarray(NOISE), "PNG")
    text = base64.b64encode(data).decode()
    wrapped = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))   # MIME line breaks are fine
    for payload in (text, wrapped, "data:image/png;base64," + text):
        np.testing.assert_array_equal(decode_photo_b64(payload, **LIMITS), NOISE)


@pytest.mark.parametrize("payload", ["not base64 at all!", "QUJ", "aGVsbG8gd29ybGQ", "data:text/plain;base64,QUJD",
                                     "données", 12345])
def test_bad_base64(payload):
    with pytest.raises(PhotoError) as info:
        decode_photo_b64(payload, **LIMITS)
    assert (info.value.status, info.value.code) == (400, "bad_base64")


def test_base64_of_bad_photos_keeps_their_codes():
    with pytest.raises(PhotoError) as info:
        decode_photo_b64("", **LIMITS)
    assert info.value.code == "empty_photo"
    with pytest.raises(PhotoError) as info:
        decode_photo_b64(base64.b64encode(b"plain text, not a photo").decode(), **LIMITS)
    assert info.value.code == "not_an_image"
    with pytest.raises(PhotoError) as info:                          # refused before the text is decoded
        decode_photo_b64("A" * 4000, **{**LIMITS, "max_bytes": 1000})
    assert (info.value.status, info.value.code) == (413, "photo_too_large")


def test_missing_field_and_limits():
    err = missing_field("photo")
    assert isinstance(err, Exception) and (err.status, err.code) == (400, "missing_field") and "photo" in err.message
    params = load_params()
    assert LIMITS == {"max_bytes": params.serving.max_upload_bytes, "max_pixels": params.serving.max_pixels,
                      "min_side": params.validation.min_side, "max_side": params.validation.max_side}
