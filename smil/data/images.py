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
- Network input: datasets and inference ship images as channel-first RGB ``uint8`` ``(…, 3, H, W)``
  (:func:`to_channels_first`); :func:`normalise_images` turns them into the network's float32 input
  (ImageNet mean and standard deviation) on whatever device they are, in one place
  (``smil.train.loop.run_model``).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from smil.data.bitmask import PackedMask, encode_bilevel_png, packed_mask_rows
from smil.errors import DataError, ShapeMismatchError

if TYPE_CHECKING:
    import torch

_REDUCED_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
REDUCE_FACTORS = tuple(_REDUCED_FLAGS)

#: ImageNet per-channel (RGB) mean and standard deviation of [0, 1] pixel values: the network's input.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# uint8 value v → (v / 255 - mean) / std = v · scale + offset
_UINT8_SCALE = tuple(1.0 / (255.0 * s) for s in IMAGENET_STD)
_UINT8_OFFSET = tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))


def read_bytes(path: str | Path) -> bytes:
    """Read a file's bytes; a missing or unreadable file is a :class:`DataError` naming it."""
    try:
        with open(path, "rb", buffering=0) as fh:  # unbuffered: one read of the whole file, no pathlib
            return fh.readall()
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


def _bilevel_png_bits(data: bytes | np.ndarray, path: str | Path) -> np.ndarray | None:
    """``(H, W)`` ``uint8`` 0/1 of a PNG :func:`packed_mask_rows` reads; None for any other image."""
    packed = packed_mask_rows(data, path)
    return None if packed is None else np.unpackbits(packed[0], axis=1, count=packed[1])


def encode_png_mask(mask: np.ndarray, *, binary: bool | None = None) -> bytes:
    """Encode a single-channel ``uint8`` mask as PNG bytes (lossless).

    A binary mask (every value 0 or 255) is written as a 1-bit PNG with unfiltered rows (about half
    the bytes of OpenCV's default 1-bit PNG); it decodes to the same 0/255 array in any PNG reader,
    about 4× faster with :func:`decode_png_mask` (training loaders decode one per item). Any other
    mask stays 8-bit. ``binary=True``: the caller knows every value is 0 or 255 (a thresholded mask),
    so the check is skipped."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if m.ndim != 2:
        raise ShapeMismatchError(f"mask: expected (H, W), got {m.shape}")
    if binary is None:
        binary = m.size and cv2.countNonZero(m) == cv2.countNonZero(cv2.compare(m, 255, cv2.CMP_EQ))
    if binary:
        return encode_bilevel_png(m)
    ok, buf = cv2.imencode(".png", m)
    if not ok:
        raise DataError("PNG encoding failed", field="mask")
    return buf.tobytes()


def decode_png_mask(data: bytes | np.ndarray, path: str | Path = "<dataset>") -> np.ndarray:
    """Decode PNG mask bytes to ``uint8`` ``(H, W)`` (a 1-bit PNG gives 0/255)."""
    bits = _bilevel_png_bits(data, path)
    if bits is not None:
        return np.multiply(bits, np.uint8(255))
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    mask = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if buf.size else None
    if mask is None:
        raise DataError("cannot decode mask PNG", path=path)
    return mask


def decode_mask_bits(data: bytes | np.ndarray, out: np.ndarray, path: str | Path = "<dataset>") -> np.ndarray:
    """Decode PNG mask bytes into ``out`` (``uint8`` ``(H, W)``) as 0/1 (pixel > 127: 1)."""
    bits = _bilevel_png_bits(data, path)
    if bits is None:
        bits = decode_png_mask(data, path) > 127
    if bits.shape != out.shape:
        raise DataError(f"mask is {bits.shape[1]}×{bits.shape[0]}, expected {out.shape[1]}×{out.shape[0]}",
                        path=path)
    out[...] = bits
    return out


def load_mask(ref: dict[str, Any]) -> np.ndarray:
    """Load a mask reference ``{"path", "value"}`` as ``uint8`` ``(H, W)``, 255 = animal."""
    path = _mask_path(ref)
    return _decode_mask(read_bytes(path), ref.get("value"), path)


def load_mask_packed(ref: dict[str, Any]) -> PackedMask | np.ndarray:
    """:func:`load_mask`, but a 1-bit PNG with unfiltered rows (what ``smil synth`` and
    :func:`encode_png_mask` write) selected by ``value`` 255 or None comes back as its
    :class:`PackedMask`, without unpacking."""
    path = _mask_path(ref)
    data = read_bytes(path)
    value = ref.get("value")
    if value is None or int(value) == 255:
        packed = packed_mask_rows(data, path)
        if packed is not None:
            return PackedMask(*packed)
    return _decode_mask(data, value, path)


def _mask_path(ref: dict[str, Any]) -> str:
    path = ref.get("path")
    if path is None:
        raise DataError("a mask reference needs a 'path'", field="mask")
    return path


def _decode_mask(raw: bytes, value: Any, path: str) -> np.ndarray:
    data = np.frombuffer(raw, dtype=np.uint8)
    ids = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if ids is None:
        raise DataError("cannot decode mask image (corrupt or not an image)", path=path)
    if ids.ndim == 3:  # BGR(A): id = R + 256 G + 65536 B
        ids = (
            ids[..., 2].astype(np.int64)
            + (ids[..., 1].astype(np.int64) << 8)
            + (ids[..., 0].astype(np.int64) << 16)
        )
    if ids.dtype == np.uint8 and (value is None or 0 <= int(value) <= 255):  # one OpenCV pass, 255/0 out
        return cv2.compare(ids, 0 if value is None else int(value), cv2.CMP_NE if value is None else cv2.CMP_EQ)
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


def to_channels_first(image: np.ndarray, out: np.ndarray | None = None, *, bgr: bool = False) -> np.ndarray:
    """``uint8`` (H,W,3) → RGB ``uint8`` (3,H,W) in one copy; ``bgr=True``: ``image`` is in OpenCV's BGR
    order (the channel swap is part of the copy). ``out``: an optional (3,H,W) ``uint8`` array to fill."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ShapeMismatchError(f"image: expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if out is None:
        out = np.empty((3, *image.shape[:2]), dtype=np.uint8)
    planes = [out[2], out[1], out[0]] if bgr else [out[0], out[1], out[2]]
    # cv2.split writes into the planes: ~5× faster than numpy's strided transpose copy
    for res, plane in zip(cv2.split(image, planes), planes):
        if res is not plane:  # OpenCV allocated instead of writing in place
            plane[...] = res
    return out


def normalise_images(images: "torch.Tensor") -> "torch.Tensor":
    """RGB ``uint8`` ``(…, 3, H, W)`` → the network's float32 input, ``(v / 255 - mean) / std`` with the
    ImageNet mean and standard deviation, on the device ``images`` are on.

    Computed in float32 whatever autocast is active (elementwise ops are not autocast), so the network
    sees what it would see from float32 images normalised on the host.
    """
    import torch  # here, so that preprocessing (which uses this module) does not import torch

    if images.dtype != torch.uint8:
        raise ShapeMismatchError(f"images: expected uint8 RGB (network input contract), got {images.dtype}")
    if images.dim() < 3 or images.shape[-3] != 3:
        raise ShapeMismatchError(f"images: expected (..., 3, H, W), got {tuple(images.shape)}")
    x = images.float()  # a fresh tensor: normalised in place
    for c in range(3):  # scalar arguments: no host-to-device copy, so no device synchronisation
        x.select(-3, c).mul_(_UINT8_SCALE[c]).add_(_UINT8_OFFSET[c])
    return x
