"""What one request may ask of the server: body size, images per request, pixels, JSON depth.

One frozen :class:`ServingLimits` (from ``python -m kerascnn serve``'s flags, or given to
:class:`~.server.ModelServer`) reaches the REST and gRPC front ends through
:class:`~.core.ServingCore`, so both refuse the same requests with the same words: every refusal
is INVALID_ARGUMENT (HTTP 400; an oversized REST body is 413) and names the limit and its flag.
Everything here is checked *before* the work it bounds: the JSON depth before parsing, the batch
before the model runs, an image's size from its header before it is decoded.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from .errors import invalid

__all__ = ["ServingLimits", "image_header", "json_depth"]


@dataclass(frozen=True)
class ServingLimits:
    """Per-request limits; each is a positive integer."""

    #: largest REST body or gRPC message, in bytes (64 MiB)
    max_request_bytes: int = 64 << 20
    #: most examples (dimension 0 of the inputs) in one predict request
    max_request_batch: int = 256
    #: most decoded pixels per image (width x height x frames), read from the header (4096 x 4096)
    max_image_pixels: int = 4096 * 4096
    #: deepest nesting of arrays and objects in a JSON body
    max_json_depth: int = 100

    FLAGS: ClassVar[dict] = {"max_request_bytes": "--max-request-bytes",
                             "max_request_batch": "--max-request-batch",
                             "max_image_pixels": "--max-image-pixels",
                             "max_json_depth": "--max-json-depth"}

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{self.FLAGS[f.name]} must be a positive integer, got {value!r}")

    @classmethod
    def from_args(cls, args) -> "ServingLimits":
        """The limits of parsed ``serve`` arguments (see :func:`~.server.add_arguments`)."""
        return cls(**{name: getattr(args, name) for name in cls.FLAGS})

    # --- checks ---------------------------------------------------------------------------------

    def check_json_depth(self, body: bytes) -> None:
        """Refuse a JSON body nested deeper than ``max_json_depth`` (before it is parsed)."""
        depth = json_depth(body, stop_above=self.max_json_depth)
        if depth > self.max_json_depth:
            raise invalid(f"JSON Parse error: the document nests arrays and objects more than "
                          f"{self.max_json_depth} levels deep, the server's limit "
                          f"(--max-json-depth)")

    def check_batch(self, inputs: dict[str, np.ndarray]) -> None:
        """Refuse a request with more than ``max_request_batch`` examples in any input."""
        for name, arr in sorted(inputs.items()):
            if arr.ndim and arr.shape[0] > self.max_request_batch:
                raise invalid(f"input '{name}' holds a batch of {arr.shape[0]} (dimension 0) but "
                              f"the server accepts at most {self.max_request_batch} per request "
                              "(--max-request-batch); send the examples in several requests")

    def check_images(self, inputs: dict[str, np.ndarray]) -> None:
        """Refuse encoded images in string inputs that would decode to too many pixels.

        Only the header is read. Bytes that are no JPEG, PNG, GIF, BMP or WebP pass unchanged
        (the model's decoder answers for them); bytes with an image signature whose dimensions
        cannot be read are refused, since the decoder's own reading of them is then unknown.
        """
        for name, arr in sorted(inputs.items()):
            if arr.dtype != object:
                continue
            for i, value in enumerate(arr.ravel().tolist()):
                if not isinstance(value, (bytes, bytearray, memoryview)):
                    continue
                header = image_header(bytes(value), stop_above=self.max_image_pixels)
                if header is None:
                    continue
                kind, width, height, frames = header
                if width is None:
                    raise invalid(f"element {i} of input '{name}' starts like a {kind} image but "
                                  "its dimensions cannot be read from its header (truncated, or "
                                  "too long to check before decoding)")
                pixels = width * height * frames
                if pixels > self.max_image_pixels:
                    size = f"{width}x{height}" + (f"x{frames} frames" if frames > 1 else "")
                    more = "at least " if frames > 1 and kind == "GIF" else ""
                    raise invalid(f"element {i} of input '{name}' is a {size} {kind} image, which "
                                  f"decodes to {more}{pixels} pixels: more than the server's "
                                  f"limit of {self.max_image_pixels} pixels per image "
                                  "(--max-image-pixels); send a smaller image")


# --- JSON depth -----------------------------------------------------------------------------------

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_CHUNK = 1 << 22
_STEP = np.zeros(256, np.int8)
_STEP[[0x5B, 0x7B]], _STEP[[0x5D, 0x7D]] = 1, -1   # [ { open, ] } close


def json_depth(body: bytes, stop_above: int | None = None) -> int:
    """Deepest nesting of ``[`` and ``{`` in a JSON text, brackets inside strings not counted.

    A linear scan (NumPy, in chunks) that never recurses, so it is safe on any input; for
    malformed text it still returns a bound on what a parser would have to nest. With
    ``stop_above``, it may return early once the depth exceeds that value.
    """
    if b"[" not in body and b"{" not in body:
        return 0
    if b'"' in body:
        body = _JSON_STRING.sub(b'""', body)
    data = np.frombuffer(body, np.uint8)
    depth = deepest = 0
    for start in range(0, len(data), _CHUNK):
        chunk = data[start:start + _CHUNK]
        level = np.cumsum(_STEP[chunk], dtype=np.int32) + depth
        if level.size:
            deepest = max(deepest, int(level.max()))
            depth = int(level[-1])
        if stop_above is not None and deepest > stop_above:
            break
    return deepest


# --- image headers --------------------------------------------------------------------------------

_MAX_SEGMENTS = 1 << 14        # JPEG markers before the frame header, WebP chunks
_MAX_GIF_BLOCKS = 1 << 20      # GIF blocks and sub-blocks
_NOT_FF = re.compile(rb"[^\xff]")


def image_header(data: bytes, stop_above: int | None = None):
    """``(format, width, height, frames)`` from the header of an encoded image, or None.

    The formats are those TensorFlow's ``decode_image`` recognises, by the same signatures: JPEG,
    PNG, GIF, BMP and WebP. ``width`` and ``height`` are None when the bytes start like an image
    but the header cannot be read. ``frames`` counts GIF and animated WebP frames (TensorFlow's
    decoders read them all); a GIF is counted only until ``width * height * frames`` exceeds
    ``stop_above``. Headers that would take more than a few thousand markers, chunks or blocks to
    walk (no encoder writes those) count as unreadable.
    """
    if data[:3] == b"\xff\xd8\xff":
        return ("JPEG", *_jpeg_size(data), 1)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) >= 24 and data[12:16] == b"IHDR":
            return ("PNG", *struct.unpack_from(">II", data, 16), 1)
        return ("PNG", None, None, 1)
    if data[:4] == b"GIF8":
        return ("GIF", *_gif_size(data, stop_above))
    if data[:2] == b"BM":
        return ("BMP", *_bmp_size(data), 1)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ("WebP", *_webp_size(data, stop_above))
    return None


def _jpeg_size(data: bytes):
    """Width and height from the first SOF marker, skipping segments as libjpeg does."""
    pos, n = 2, len(data)
    for _ in range(_MAX_SEGMENTS):
        if pos + 1 >= n:
            break
        if data[pos] != 0xFF:  # libjpeg skips stray bytes up to the next marker
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
        match = _NOT_FF.search(data, pos + 1)  # fill bytes: any run of 0xFF before the marker
        if match is None:
            break
        pos = match.start() - 1
        marker = data[pos + 1]
        if marker in (0x00, 0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xD9, 0xDA) or pos + 4 > n:  # end of image, or scan data before any frame
            break
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > n:
                break
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return width, height
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return None, None


def _gif_size(data: bytes, stop_above: int | None):
    if len(data) < 13:
        return None, None, 1
    width, height = struct.unpack_from("<HH", data, 6)
    flags, pos, n = data[10], 13, len(data)
    if flags & 0x80:
        pos += 3 << ((flags & 7) + 1)
    frames = steps = 0
    while pos < n:
        block = data[pos]
        if block == 0x2C:  # image descriptor (+ local colour table), LZW code size, data
            if pos + 10 > n:
                break
            local = data[pos + 9]
            pos += 10 + ((3 << ((local & 7) + 1)) if local & 0x80 else 0) + 1
            frames += 1
            if stop_above is not None and width * height * frames > stop_above:
                break
        elif block == 0x21:  # extension: label, then sub-blocks
            pos += 2
        else:  # trailer (0x3B) or garbage: the decoder stops here too
            break
        while pos < n:  # sub-blocks: a length byte, that many bytes; 0 ends them
            size = data[pos]
            pos += 1 + size
            steps += 1
            if size == 0:
                break
        if steps > _MAX_GIF_BLOCKS:  # 64 MiB in full 255-byte sub-blocks is 263,000 of them
            return None, None, 1
    return width, height, max(frames, 1)


def _bmp_size(data: bytes):
    if len(data) < 26:
        return None, None
    header = struct.unpack_from("<I", data, 14)[0]
    if header == 12:  # BITMAPCOREHEADER: 16-bit dimensions
        width, height = struct.unpack_from("<HH", data, 18)
    else:
        width, height = struct.unpack_from("<ii", data, 18)
    return abs(width), abs(height)  # a negative height means top-down rows


def _webp_size(data: bytes, stop_above: int | None):
    """Canvas size and frame count from the RIFF chunks (VP8, VP8L or VP8X + ANMF)."""
    pos, n = 12, len(data)
    width = height = None
    frames = 0
    for _ in range(_MAX_SEGMENTS):
        if pos + 8 > n:
            break
        fourcc, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if fourcc == b"VP8X" and body + 10 <= n:
            width = 1 + int.from_bytes(data[body + 4:body + 7], "little")
            height = 1 + int.from_bytes(data[body + 7:body + 10], "little")
        elif fourcc == b"VP8 " and width is None and body + 10 <= n:
            w, h = struct.unpack_from("<HH", data, body + 6)
            width, height = w & 0x3FFF, h & 0x3FFF
        elif fourcc == b"VP8L" and width is None and body + 5 <= n:
            bits = struct.unpack_from("<I", data, body + 1)[0]
            width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        elif fourcc == b"ANMF":
            frames += 1
            if stop_above is not None and width and height and width * height * frames > stop_above:
                break
        pos = body + size + (size & 1)
    else:
        return None, None, 1
    return width, height, max(frames, 1)
