"""How much memory decoding an image will take, read from its header alone.

A few bytes can declare a huge image: a 1.5 MB JPEG may say 20000x20000 pixels, and
``tf.io.decode_jpeg`` then allocates 1.2 GB (plus libjpeg's own buffers) before it finds
out that the data is short. A serving graph that decodes its string input (the seed
``mobilenet_v2_test`` does) has no way to bound that, so :mod:`serving.limits` reads the
headers of string inputs before the call and refuses images whose decoded size is over
the request's budget.

Only the formats TensorFlow's image ops decode are recognised (``decode_jpeg``,
``decode_png``, ``decode_gif``, ``decode_bmp``, and ``decode_image`` which dispatches to
them); anything else is "not an image" (None). Every figure is an upper bound of what
TensorFlow allocates for the output (at the largest channel count a graph may ask for),
plus the decoder's whole-image buffers where it keeps them (progressive JPEG coefficients,
every GIF frame). The headers are parsed by hand: a few dozen bytes, no decoder runs.
"""

from __future__ import annotations

import struct

# JPEG start-of-frame markers (ITU T.81 B.1.1.3): baseline, extended, progressive, lossless,
# with and without arithmetic coding. Not SOF: C4 (DHT), C8 (JPG), CC (DAC).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7,
                          0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_BMP_DIB_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})


class ImageInfo:
    """An image's format, declared size and the bytes decoding it allocates (upper bound)."""

    __slots__ = ("format", "width", "height", "frames", "decoded_bytes")

    def __init__(self, fmt: str, width: int, height: int, decoded_bytes: int,
                 frames: int = 1):
        self.format = fmt
        self.width = width
        self.height = height
        self.frames = frames
        self.decoded_bytes = decoded_bytes

    def describe(self) -> str:
        """``"JPEG image of 20000x20000 pixels"`` (with the frame count for animations)."""
        frames = f", {self.frames} frames" if self.frames > 1 else ""
        return f"{self.format} image of {self.width}x{self.height} pixels{frames}"


def image_info(data: bytes) -> ImageInfo | None:
    """The image ``data`` declares, or None when it is not a JPEG, PNG, GIF or BMP header."""
    if len(data) < 8:
        return None
    head = data[:2]
    try:
        if head == b"\xff\xd8":
            return _jpeg(data)
        if data[:8] == _PNG_SIGNATURE:
            return _png(data)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return _gif(data)
        if head == b"BM":
            return _bmp(data)
    except (struct.error, IndexError):
        return None  # truncated header: the decoder refuses it before allocating
    return None


def _jpeg(data: bytes) -> ImageInfo | None:
    pos = 2
    end = len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker in (0x01, 0xD8):  # no length field
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _SOF_MARKERS:
            _precision, height, width, components = struct.unpack_from(">BHHB", data, pos + 4)
            # A height of 0 is defined later (DNL marker): assume the largest possible.
            height = height or 0xFFFF
            pixels = width * height
            # Output at the most channels a graph can ask for (decode_jpeg channels=3 turns
            # grey into RGB; CMYK stays 4); progressive images keep every DCT coefficient
            # (2 bytes per sample) until the last scan.
            decoded = pixels * max(components, 3)
            if marker in _PROGRESSIVE:
                decoded += pixels * components * 2
            return ImageInfo("JPEG", width, height, decoded)
        pos += 2 + length
    return None


def _png(data: bytes) -> ImageInfo | None:
    length, kind, width, height, depth = struct.unpack_from(">I4sIIB", data, 8)
    if kind != b"IHDR" or length < 13:
        return None
    # decode_png can return up to 4 channels (RGBA), 2 bytes each for 16-bit images.
    decoded = width * height * 4 * (2 if depth == 16 else 1)
    return ImageInfo("PNG", width, height, decoded)


def _gif(data: bytes) -> ImageInfo | None:
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    pos = 13
    if flags & 0x80:
        pos += 3 << ((flags & 0x07) + 1)
    frames = 0
    raster = 0  # giflib keeps every frame's raster (one byte per pixel) while decoding
    end = len(data)
    while pos < end:
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then data sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor
            frame_w, frame_h, frame_flags = struct.unpack_from("<HHB", data, pos + 5)
            frames += 1
            raster += frame_w * frame_h
            pos += 10
            if frame_flags & 0x80:
                pos += 3 << ((frame_flags & 0x07) + 1)
            pos = _skip_sub_blocks(data, pos + 1)  # after the LZW minimum code size
        else:
            break  # corrupt: what was counted so far is what a decoder would reach
    frames = max(frames, 1)
    # decode_gif returns [frames, height, width, 3] at the canvas size.
    decoded = frames * width * height * 3 + raster
    return ImageInfo("GIF", width, height, decoded, frames)


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    end = len(data)
    while pos < end:
        size = data[pos]
        pos += 1 + size
        if size == 0:
            break
    return pos


def _bmp(data: bytes) -> ImageInfo | None:
    if len(data) < 26:
        return None
    (reserved,) = struct.unpack_from("<I", data, 6)
    (dib_size,) = struct.unpack_from("<I", data, 14)
    if reserved != 0 or dib_size not in _BMP_DIB_SIZES:
        return None  # text that happens to start with "BM"
    if dib_size == 12:
        width, height = struct.unpack_from("<HH", data, 18)
    else:
        width, height = struct.unpack_from("<ii", data, 18)
    width, height = abs(width), abs(height)
    return ImageInfo("BMP", width, height, width * height * 4)
