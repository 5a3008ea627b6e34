"""Image and mask I/O for preprocessing and dataset reading.

Conventions:

- Images are ``uint8`` arrays ``(H, W, 3)`` in **RGB** order in memory. OpenCV's BGR order exists only
  inside this module, at the encode/decode boundary.
- EXIF orientation tags are ignored: pixel ``(x, y)`` of the decoded array is pixel ``(x, y)`` of the
  file, which is what keypoint annotations refer to.
- A manifest image reference is ``{"path": file}`` or ``{"video": file, "frame": i}`` (absolute, see
  :func:`smil.data.manifest.resolve_reference`); a mask reference is ``{"path": file, "value": id}``.
- Masks are ``uint8`` arrays ``(H, W)`` with 255 = animal, 0 = background. In an instance-ID image
  (replicAnt's ``*_ID.png``) the id of a pixel is its value for a single-channel image, and
  ``R + 256·G + 65536·B`` for a colour image (alpha ignored); ``value`` selects one id, ``value: None``
  takes every non-zero pixel.
- Reduced decoding (``reduce`` 2, 4 or 8) uses libjpeg's scaled DCT for JPEG files: reduced pixel ``i``
  covers source pixels ``[r·i, r·i + r)``, so ``x_reduced = (x_source + 0.5) / r - 0.5``.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from smil.errors import DataError

_REDUCED_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
REDUCE_FACTORS = tuple(_REDUCED_FLAGS)


def read_bytes(path: str | Path) -> bytes:
    """Read a file's bytes; a missing or unreadable file is a :class:`DataError` naming it."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError("image file not found", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read image file ({exc.strerror})", path=path) from None


def is_jpeg(data: bytes | np.ndarray) -> bool:
    """True when ``data`` starts with the JPEG start-of-image marker."""
    return bytes(data[:2]) == b"\xff\xd8"


def decode_image(
    data: bytes | np.ndarray, *, reduce: int = 1, path: str | Path = "<bytes>", rgb: bool = True
) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, …) to RGB ``uint8`` ``(H, W, 3)``.

    ``reduce`` > 1 decodes at 1/reduce of the size (fast for JPEG, see the module docstring). A corrupt
    or truncated file is a :class:`DataError` naming ``path``. ``rgb=False`` keeps OpenCV's BGR order,
    for code that only crops and re-encodes with :func:`encode_jpeg` ``(rgb=False)``.
    """
    if reduce not in _REDUCED_FLAGS:
        raise ValueError(f"reduce must be one of {REDUCE_FACTORS}, got {reduce}")
    raw = bytes(data) if not isinstance(data, bytes) else data
    img = None
    if raw:
        img = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), _REDUCED_FLAGS[reduce] | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise DataError("cannot decode image (corrupt, truncated or not an image)", path=path)
    # Older libjpeg builds fill a truncated JPEG with grey and only warn: require the end-of-image marker.
    if is_jpeg(raw) and raw.rfind(b"\xff\xd9") < 0:
        raise DataError("truncated JPEG (no end-of-image marker)", path=path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if rgb else img


def encode_jpeg(image: np.ndarray, quality: int = 90, *, rgb: bool = True) -> bytes:
    """Encode an RGB ``uint8`` image as JPEG bytes; :func:`decode_image` gives the same RGB back.

    ``rgb=False``: ``image`` is in OpenCV's BGR order (as decoded with ``rgb=False``).
    """
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if rgb else image
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise DataError("JPEG encoding failed", field="image")
    return buf.tobytes()


def decode_jpeg(data: bytes | np.ndarray, path: str | Path = "<dataset>") -> np.ndarray:
    """Decode JPEG bytes from a dataset to RGB ``uint8`` ``(H, W, 3)``."""
    return decode_image(data, path=path)


def encode_png_mask(mask: np.ndarray) -> bytes:
    """Encode a single-channel ``uint8`` mask as PNG bytes (lossless)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(mask, dtype=np.uint8))
    if not ok:
        raise DataError("PNG encoding failed", field="mask")
    return buf.tobytes()


def decode_png_mask(data: bytes | np.ndarray, path: str | Path = "<dataset>") -> np.ndarray:
    """Decode PNG mask bytes to ``uint8`` ``(H, W)``."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    mask = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if buf.size else None
    if mask is None:
        raise DataError("cannot decode mask PNG", path=path)
    return mask


def load_mask(ref: dict[str, Any]) -> np.ndarray:
    """Load a mask reference ``{"path", "value"}`` as ``uint8`` ``(H, W)``, 255 = animal."""
    path = ref.get("path")
    if path is None:
        raise DataError("a mask reference needs a 'path'", field="mask")
    data = np.frombuffer(read_bytes(path), dtype=np.uint8)
    ids = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if ids is None:
        raise DataError("cannot decode mask image (corrupt or not an image)", path=path)
    if ids.ndim == 3:  # BGR(A): id = R + 256 G + 65536 B
        ids = (
            ids[..., 2].astype(np.int64)
            + (ids[..., 1].astype(np.int64) << 8)
            + (ids[..., 0].astype(np.int64) << 16)
        )
    value = ref.get("value")
    sel = ids != 0 if value is None else ids == int(value)
    return np.where(sel, np.uint8(255), np.uint8(0))


class VideoFrames:
    """Reads frames from videos, keeping one open ``cv2.VideoCapture`` per video.

    Consecutive frames are read without seeking; any other frame is reached with a seek. At most
    ``max_open`` captures stay open (least recently used closed first). Use as a context manager.
    """

    def __init__(self, max_open: int = 16):
        self.max_open = max_open
        self._open: OrderedDict[str, tuple[cv2.VideoCapture, int]] = OrderedDict()

    def read(self, video: str | Path, frame: int, *, rgb: bool = True) -> np.ndarray:
        """Return frame ``frame`` (0-based) of ``video`` as RGB ``uint8`` (BGR with ``rgb=False``)."""
        key = str(video)
        if key in self._open:
            cap, next_frame = self._open.pop(key)
        else:
            if not Path(key).is_file():
                raise DataError("video file not found", path=key)
            cap = cv2.VideoCapture(key)
            if not cap.isOpened():
                raise DataError("cannot open video", path=key)
            next_frame = 0
            while len(self._open) >= self.max_open:
                self._open.popitem(last=False)[1][0].release()
        if frame < 0:
            raise DataError(f"frame index must be >= 0, got {frame}", path=key, field="frame")
        if frame != next_frame:
            cap.set(cv2.CAP_PROP_POS_FRAMES, frame)
        ok, img = cap.read()
        if not ok or img is None:
            cap.release()
            raise DataError(f"cannot read frame {frame} (past the end or undecodable)", path=key, field="frame")
        self._open[key] = (cap, frame + 1)
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if rgb else img

    def close(self) -> None:
        for cap, _ in self._open.values():
            cap.release()
        self._open.clear()

    def __enter__(self) -> "VideoFrames":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_image(
    ref: dict[str, Any], *, videos: VideoFrames | None = None, reduce: int = 1
) -> tuple[np.ndarray, int]:
    """Load an image reference as RGB ``uint8``; return ``(image, reduce_applied)``.

    ``reduce`` is applied only to JPEG files (where the decoder does it for free); video frames and
    other formats come back at full size with ``reduce_applied = 1``.
    """
    if ref.get("path") is not None:
        data = read_bytes(ref["path"])
        r = reduce if is_jpeg(data) else 1
        return decode_image(data, reduce=r, path=ref["path"]), r
    if ref.get("video") is not None:
        if "frame" not in ref:
            raise DataError("a video reference needs a 'frame'", path=ref["video"], field="frame")
        if videos is None:
            with VideoFrames() as own:
                return own.read(ref["video"], int(ref["frame"])), 1
        return videos.read(ref["video"], int(ref["frame"])), 1
    raise DataError("an image reference needs 'path' or 'video'", field="image")
