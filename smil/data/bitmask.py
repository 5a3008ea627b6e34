"""Binary masks as packed bits, and the 1-bit PNG files that hold them.

A binary mask (255 = animal, 0 = background) is stored as a 1-bit greyscale PNG whose rows are all
unfiltered: the file's image data is then one deflate stream of the rows packed 8 pixels per byte
(``np.packbits(mask, axis=1)``), each row led by a zero filter byte. Any PNG reader opens it (a 1-bit
image decodes to 0/255); this module reads and writes it without a general PNG codec:

- :func:`packed_mask_rows` reads the packed rows with one inflate (None for any other PNG);
- :func:`encode_bilevel_png` writes them with one run-length deflate at level 1 (``Z_RLE``: runs of
  equal bytes are all a mask has to compress; about 4× faster than OpenCV's PNG encoder here for a
  256² mask, and zlib works with Python's GIL released);
- :class:`PackedMask` keeps a mask packed so that preprocessing finds its bounding box on the packed
  rows and unpacks only the rows a crop needs.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from smil.errors import DataError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_BILEVEL_IHDR_TAIL = bytes([1, 0, 0, 0, 0])  # bit depth 1, greyscale, deflate, adaptive filters, no interlace
_IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


class PackedMask:
    """A binary mask ``(H, W)`` held as ``rows``: ``(H, ceil(W / 8))`` ``uint8``, 8 pixels per byte,
    most significant bit first (``np.packbits(mask > 0, axis=1)``)."""

    __slots__ = ("rows", "width")

    def __init__(self, rows: np.ndarray, width: int):
        self.rows = np.ascontiguousarray(rows)  # contiguous rows unpack about 2.5× faster
        self.width = int(width)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.shape[0], self.width

    def bbox(self) -> tuple[float, float, float, float] | None:
        """``(xmin, ymin, xmax, ymax)`` pixel centres of the set pixels, or None when there are none
        (the same as ``smil.data.crop.mask_bbox`` of the unpacked mask)."""
        # OpenCV's one-pass bounding box of the non-zero bytes, then the first and last set bit of
        # the first and last byte columns (most significant bit = leftmost pixel)
        bx, y, bw, h = cv2.boundingRect(self.rows)
        if bw == 0:
            return None
        rows = self.rows[y : y + h]
        first, last = int(np.bitwise_or.reduce(rows[:, bx])), int(np.bitwise_or.reduce(rows[:, bx + bw - 1]))
        x0 = 8 * bx + 8 - first.bit_length()
        x1 = 8 * (bx + bw) - (last & -last).bit_length()
        return float(x0), float(y), float(x1), float(y + h - 1)

    def unpack(self, y0: int = 0, y1: int | None = None) -> np.ndarray:
        """Rows ``y0:y1`` (clamped to the mask) as a ``uint8`` mask: 255 = set, 0 = not."""
        bits = np.unpackbits(self.rows[max(y0, 0) : y1], axis=1, count=self.width)
        return np.multiply(bits, np.uint8(255), out=bits)


def packed_mask_rows(data: bytes | np.ndarray, path: str | Path = "<dataset>") -> tuple[np.ndarray, int] | None:
    """The rows of a 1-bit greyscale, non-interlaced PNG whose rows are all unfiltered (what
    :func:`encode_bilevel_png` writes), still packed 8 pixels per byte as in
    ``np.packbits(mask, axis=1)``: ``(rows (H, ceil(W / 8)) uint8, W)``. None for any other image,
    which a general PNG decoder then reads. A damaged file of this kind (bad chunk CRC, bad deflate
    stream, wrong length) is a :class:`DataError`."""
    buf = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if len(buf) < 33 or not buf.startswith(_PNG_SIGNATURE) or buf[12:16] != b"IHDR" or buf[24:29] != _BILEVEL_IHDR_TAIL:
        return None
    w, h = struct.unpack_from(">II", buf, 16)
    idat: list[bytes] = []
    pos, ended = 8, False
    while pos + 12 <= len(buf) and not ended:
        (length,), tag = struct.unpack_from(">I", buf, pos), buf[pos + 4 : pos + 8]
        body_end = pos + 8 + length
        if body_end + 4 > len(buf):
            break
        if tag == b"IDAT":
            body = buf[pos + 8 : body_end]
            if zlib.crc32(tag + body) != struct.unpack_from(">I", buf, body_end)[0]:
                raise DataError("cannot decode mask PNG (IDAT checksum mismatch)", path=path)
            idat.append(body)
        ended = tag == b"IEND"
        pos = body_end + 4
    stride = 1 + (w + 7) // 8
    try:
        raw = zlib.decompress(b"".join(idat), bufsize=h * stride) if ended and idat else b""
    except zlib.error:
        raw = b""
    if w == 0 or h == 0 or len(raw) != h * stride:
        raise DataError("cannot decode mask PNG (truncated or corrupt)", path=path)
    if raw[::stride].count(0) != h:
        return None  # filtered rows (another writer): a general decoder undoes the filters
    return np.frombuffer(raw, dtype=np.uint8).reshape(h, stride)[:, 1:], w


def encode_bilevel_png(mask: np.ndarray) -> bytes:
    """A 1-bit greyscale PNG of ``mask`` (``(H, W)``; non-zero = set) with unfiltered rows."""
    h, w = mask.shape
    rows = np.zeros((h, 1 + (w + 7) // 8), dtype=np.uint8)
    rows[:, 1:] = np.packbits(mask, axis=1)
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    return b"".join((_PNG_SIGNATURE, _chunk(b"IHDR", struct.pack(">II", w, h) + _BILEVEL_IHDR_TAIL),
                     _chunk(b"IDAT", deflate.compress(rows.data) + deflate.flush()), _IEND))


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
