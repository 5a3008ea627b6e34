"""Map a source's keypoint names (replicAnt keypoints, SLEAP nodes) onto body-model joint names.

Two ways, chosen by the user:

* **Exact names** (no table): joint ``j`` takes the source keypoint with the same name.
* **A CSV table** with the header ``source,joint`` (columns in either order, extra columns ignored,
  blank lines and lines starting with ``#`` skipped): each row feeds joint ``joint`` from keypoint
  ``source``. The table is the whole mapping: joints it does not list get no keypoint. An empty
  ``source`` cell states explicitly that a joint has none. A ``joint`` that is not one of the target
  joint names, or a joint listed twice, is a :class:`~smil.errors.DataError` naming the table, the
  line and the name. One source may feed several joints.

Joints without a source keypoint are *missing*: readers give them visibility 0 (and NaN
coordinates) and report them, with the source keypoints that feed no joint, in the manifest
header's ``info``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from smil.errors import DataError

__all__ = ["build_joint_mapping", "joint_sources", "read_joint_map"]


def read_joint_map(path: str | Path, joint_names: Sequence[str]) -> dict[str, str | None]:
    """Read a ``source,joint`` CSV table; return ``{joint: source or None}`` for the joints it lists."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError("joint map not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read joint map ({exc})", path=path) from None
    rows = [
        (lineno, row)
        for lineno, row in enumerate(csv.reader(text.splitlines()), start=1)
        if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#")
    ]
    if not rows:
        raise DataError("empty joint map (expected a header 'source,joint' and one row per joint)", path=path)
    header_line, header = rows[0]
    names = [c.strip().lower() for c in header]
    if "source" not in names or "joint" not in names:
        raise DataError(
            f"line {header_line}: expected a header with columns 'source' and 'joint', got {header}",
            path=path,
        )
    i_src, i_joint = names.index("source"), names.index("joint")
    known = set(joint_names)
    table: dict[str, str | None] = {}
    for lineno, row in rows[1:]:
        if len(row) <= max(i_src, i_joint):
            raise DataError(f"line {lineno}: expected columns 'source' and 'joint', got {row}", path=path)
        source, joint = row[i_src].strip(), row[i_joint].strip()
        if joint not in known:
            raise DataError(
                f"line {lineno}: unknown joint name '{joint}' (the body model's joints are "
                f"{_preview(joint_names)})",
                path=path,
                field="joint",
            )
        if joint in table:
            raise DataError(f"line {lineno}: joint '{joint}' is listed twice", path=path, field="joint")
        table[joint] = source or None
    return table


def joint_sources(joint_names: Sequence[str], table: str | Path | None = None) -> list[str | None]:
    """The source keypoint name feeding each target joint (``None`` = no source), in joint order."""
    if table is None:
        return list(joint_names)
    mapping = read_joint_map(table, joint_names)
    return [mapping.get(j) for j in joint_names]


def build_joint_mapping(
    source_names: Sequence[str], joint_names: Sequence[str], table: str | Path | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Index of the source keypoint feeding each joint, and a JSON-able report.

    Returns ``(index, report)``: ``index`` is ``(J,)`` int64, ``-1`` where a joint has no source
    keypoint; ``report`` holds ``table`` (the CSV path or ``None`` for exact names),
    ``missing_joints`` (target joints without a source keypoint), ``unused_source_keypoints`` (source
    names feeding no joint) and ``table_sources_not_found`` (table sources absent from the source).
    """
    sources = joint_sources(joint_names, table)
    position = {name: i for i, name in enumerate(source_names)}
    index = np.array([position.get(s, -1) if s is not None else -1 for s in sources], dtype=np.int64)
    used = {s for s in sources if s is not None}
    report = {
        "table": None if table is None else str(table),
        "missing_joints": [j for j, i in zip(joint_names, index, strict=True) if i < 0],
        "unused_source_keypoints": [s for s in source_names if s not in used],
        "table_sources_not_found": sorted({s for s in used if s not in position})
        if table is not None
        else [],
    }
    return index, report


def _preview(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown}, … ({len(names)} in all)" if len(names) > limit else shown
