"""The crops ``smil infer`` cuts: its crop modes and the ``--bboxes`` file of boxes per frame.

Kept apart from :mod:`smil.evaluate.infer` (which needs torch) so that the command line can offer
the crop modes without importing torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from smil.data.crop import CropBox, full_frame_box, square_box
from smil.data.images import read_bytes
from smil.errors import DataError

CROP_MODES = ("full", "center", "bbox")



def _parse_box(value: Any, path: Path, where: str) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise DataError(f"expected [xmin, ymin, xmax, ymax] (4 finite numbers) or null, got {value!r}",
                        path=path, field=where)
    x0, y0, x1, y1 = (float(v) for v in value)
    if x1 < x0 or y1 < y0:
        raise DataError(f"expected xmax ≥ xmin and ymax ≥ ymin, got {value!r}", path=path, field=where)
    return x0, y0, x1, y1


class BoxTable:
    """Per-frame boxes of one view: a list (one entry per frame) or a dict keyed by frame number or
    image file name. ``None`` entries mean "no box: use the full frame"."""

    def __init__(self, spec: Any, path: Path, where: str):
        self.path, self.where = path, where
        if isinstance(spec, list):
            self.by_index = {i: _parse_box(v, path, f"{where}[{i}]") for i, v in enumerate(spec)}
            self.by_name: dict[str, Any] = {}
        elif isinstance(spec, dict):
            self.by_index, self.by_name = {}, {}
            for k, v in spec.items():
                box = _parse_box(v, path, f"{where}{'.' if where else ''}{k}")
                if str(k).isdigit():
                    self.by_index[int(k)] = box
                else:
                    self.by_name[str(k)] = box
        else:
            raise DataError("expected a list of boxes (one per frame) or an object keyed by frame number or "
                            "image file name", path=path, field=where or None)

    def get(self, frame: int, name: str | None) -> tuple[float, float, float, float] | None:
        if name is not None and name in self.by_name:
            return self.by_name[name]
        if frame in self.by_index:
            return self.by_index[frame]
        what = f"frame {frame}" + (f" ({name})" if name else "")
        raise DataError(f"no box for {what}; give one per frame (null = full frame)", path=self.path,
                        field=self.where or None)


def load_bboxes(path: str | Path, view_names: Sequence[str], session: bool) -> dict[str, BoxTable]:
    """Read ``--bboxes``: for one view a list/dict of boxes; for a session ``{camera: list/dict}``."""
    path = Path(path)
    try:
        spec = json.loads(read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", path=path) from None
    if not session:
        return {view_names[0]: BoxTable(spec, path, "")}
    if not isinstance(spec, dict):
        raise DataError(f"a session needs an object keyed by camera name ({', '.join(view_names)})", path=path)
    missing = [n for n in view_names if n not in spec]
    if missing:
        raise DataError(f"no boxes for camera(s) {missing}; the session's cameras are {list(view_names)}, "
                        f"the file has {sorted(spec)}", path=path)
    return {n: BoxTable(spec[n], path, n) for n in view_names}


def crop_box(mode: str, image_size: tuple[int, int], bbox: tuple[float, float, float, float] | None,
             padding: float) -> CropBox:
    """The square crop of a ``(W, H)`` frame for crop ``mode`` (a ``bbox`` of None = full frame)."""
    W, H = image_size
    if mode == "center":
        s = min(W, H)
        return CropBox((W - s) // 2, (H - s) // 2, s)
    if mode == "bbox" and bbox is not None:
        return square_box(bbox, (W, H), padding=padding, border="shift")
    return full_frame_box((W, H))
