"""Unreal Engine conventions → the project's OpenCV camera and right-handed world (numpy).

Unreal Engine (the renderer behind replicAnt) uses a **left-handed** world in **centimetres**:
x forward, y right, z up. Its matrices are row-major ``FMatrix`` objects that act on *row* vectors
(``v' = v · M``); a JSON dump lists them as four planes ``xPlane … wPlane`` (the rows), each with
components ``x, y, z, w`` (the columns).

What this module converts, once, at ingest:

* **World frame**: ``X_world = F · X_unreal`` with ``F = diag(1, -1, 1)`` (flip y). The result is
  right-handed (x forward, y left, z up), in the same unit (centimetres: ``world_unit_m = 0.01``).
* **Camera extrinsics** from the ``View Matrix`` ``V``: Unreal's view space is x right, y up,
  z forward, with ``X_view = V[:3, :3]ᵀ · X_unreal + V[3, :3]``. OpenCV's camera frame is x right,
  y down, z forward, so ``x_cam = F · X_view`` and ``R = F · V[:3, :3]ᵀ · F``, ``t = F · V[3, :3]``
  (``x_cam = R · X_world + t``; ``det R = +1``).
* **Intrinsics** from the projection ``P = V⁻¹ · VP`` (``VP`` = ``View Projection Matrix``):
  ``fx = P00 · W/2``, ``fy = P11 · H/2``, ``cx = W/2 · (1 + P20) − ½``, ``cy = H/2 · (1 − P21) − ½``.
  Without a ``VP``, from the ``FOV`` field, which is Unreal's **horizontal** field of view in
  degrees: ``fx = fy = (W/2) / tan(FOV/2)``, ``cx = W/2 − ½``, ``cy = H/2 − ½`` (square pixels).
  Both agree on every replicAnt fixture (``P00 = 1/tan(FOV/2)``).
* **Pixels**: Unreal screen positions measure from the top-left *corner* of the image
  (pixel ``i`` spans ``[i, i+1)``); OpenCV puts the *centre* of the top-left pixel at ``(0, 0)``, so
  ``u_opencv = u_unreal − ½`` (likewise ``v``).
* **Rotations**: an Unreal rotation matrix ``M`` (from an ``FQuat`` ``(x, y, z, w)``, which rotates
  vectors with the usual Hamilton formula) becomes ``F · M · F`` in the right-handed world.
* **Camera pose from ``Location`` + ``Rotation``** (pitch, yaw, roll in degrees; Unreal's
  ``FRotationMatrix``), used when a file has no ``View Matrix``.
"""

from __future__ import annotations

import math

import numpy as np

#: Unreal (left-handed, y right) ↔ right-handed world (y left); also Unreal view-y-up ↔ OpenCV y-down.
FLIP_Y = np.diag([1.0, -1.0, 1.0])

#: Pixel-centre offset: OpenCV pixel coordinates are Unreal screen coordinates minus this.
PIXEL_CENTER_OFFSET = 0.5

_PLANES = ("xPlane", "yPlane", "zPlane", "wPlane")
_COMPONENTS = ("x", "y", "z", "w")


def planes_to_matrix(planes: dict[str, dict[str, float]]) -> np.ndarray:
    """An Unreal ``FMatrix`` dumped as ``{xPlane: {x, y, z, w}, …, wPlane: {…}}`` → ``(4, 4)`` rows.

    Raises ``KeyError`` (with the missing plane or component name) or ``TypeError``/``ValueError`` for a
    malformed entry; the reader turns those into a :class:`~smil.errors.DataError` naming the field.
    """
    return np.array([[float(planes[p][c]) for c in _COMPONENTS] for p in _PLANES], dtype=np.float64)


def points_to_world(points: np.ndarray) -> np.ndarray:
    """Unreal positions ``(..., 3)`` → right-handed world positions (flip y), same unit."""
    return np.asarray(points, dtype=np.float64) * np.array([1.0, -1.0, 1.0])


def pixels_to_opencv(uv: np.ndarray) -> np.ndarray:
    """Unreal screen positions ``(..., 2)`` (corner origin) → OpenCV pixels (centre origin)."""
    return np.asarray(uv, dtype=np.float64) - PIXEL_CENTER_OFFSET


def extrinsics_from_view_matrix(view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unreal ``View Matrix`` ``(4, 4)`` → OpenCV ``R (3, 3)``, ``t (3,)`` (world→camera)."""
    view = np.asarray(view, dtype=np.float64)
    R = FLIP_Y @ view[:3, :3].T @ FLIP_Y
    t = FLIP_Y @ view[3, :3]
    return R, t


def rotator_matrix(pitch_deg: float, yaw_deg: float, roll_deg: float) -> np.ndarray:
    """Unreal ``FRotationMatrix``: rows are the rotated x (forward), y (right), z (up) axes in Unreal
    world coordinates (row-vector convention, ``v_world = v_local · M``)."""
    sp, cp = math.sin(math.radians(pitch_deg)), math.cos(math.radians(pitch_deg))
    sy, cy = math.sin(math.radians(yaw_deg)), math.cos(math.radians(yaw_deg))
    sr, cr = math.sin(math.radians(roll_deg)), math.cos(math.radians(roll_deg))
    return np.array(
        [
            [cp * cy, cp * sy, sp],
            [sr * sp * cy - cr * sy, sr * sp * sy + cr * cy, -sr * cp],
            [-(cr * sp * cy + sr * sy), cy * sr - cr * sp * sy, cr * cp],
        ]
    )


def extrinsics_from_rotator(
    location: np.ndarray, pitch_deg: float, yaw_deg: float, roll_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Camera ``Location`` (Unreal cm) and ``Rotation`` (degrees) → OpenCV ``R``, ``t``.

    The camera looks along its local x; its local y is image-right and z is image-up.
    """
    axes = rotator_matrix(pitch_deg, yaw_deg, roll_deg)  # rows: forward, right, up (Unreal world)
    # OpenCV camera axes (right, down, forward) in Unreal world coordinates, one per row:
    rows_unreal = np.stack([axes[1], -axes[2], axes[0]])
    R = rows_unreal @ FLIP_Y  # acts on right-handed world points: X_unreal = F · X_world
    centre = points_to_world(np.asarray(location, dtype=np.float64))
    t = -R @ centre
    return R, t


def intrinsics_from_projection(
    view: np.ndarray, view_projection: np.ndarray, width: int, height: int
) -> np.ndarray:
    """``K`` from the ``View Matrix`` and ``View Projection Matrix`` of one camera (see module doc)."""
    P = np.linalg.solve(np.asarray(view, dtype=np.float64), np.asarray(view_projection, dtype=np.float64))
    fx = P[0, 0] * width / 2.0
    fy = P[1, 1] * height / 2.0
    cx = width / 2.0 * (1.0 + P[2, 0]) - PIXEL_CENTER_OFFSET
    cy = height / 2.0 * (1.0 - P[2, 1]) - PIXEL_CENTER_OFFSET
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def intrinsics_from_fov(fov_deg: float, width: int, height: int) -> np.ndarray:
    """``K`` from Unreal's horizontal field of view (degrees) and the image size; square pixels."""
    f = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array(
        [
            [f, 0.0, width / 2.0 - PIXEL_CENTER_OFFSET],
            [0.0, f, height / 2.0 - PIXEL_CENTER_OFFSET],
            [0.0, 0.0, 1.0],
        ]
    )


def quaternions_to_world_matrices(q_xyzw: np.ndarray) -> np.ndarray:
    """Unreal ``FQuat`` components ``(..., 4)`` in ``(x, y, z, w)`` order → right-handed world
    rotation matrices ``(..., 3, 3)`` (``F · M · F``); quaternions are normalised first.

    Uses :func:`smil.geometry.rotations.quaternion_to_matrix` (torch, imported here on first use).
    """
    import torch

    from smil.geometry.rotations import quaternion_to_matrix

    q = np.asarray(q_xyzw, dtype=np.float64)
    wxyz = torch.from_numpy(np.concatenate([q[..., 3:4], q[..., :3]], axis=-1))
    return FLIP_Y @ quaternion_to_matrix(wxyz).numpy() @ FLIP_Y
