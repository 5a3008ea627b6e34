"""Hard (non-differentiable) triangle rasterisation in numpy, for rendering images and masks.

Conventions (see ``docs/conventions.md``):

* Inputs are in the **camera frame** of an OpenCV pinhole camera (x right, y down, z forward) with
  intrinsics ``K``; a point projects to ``(u, v) = (fx·x/z + s·y/z + cx, fy·y/z + cy)``.
* Pixel ``(x, y)`` has its centre at integer coordinates; the top-left pixel's centre is ``(0, 0)``.
  A pixel is covered by a triangle when its centre lies inside the projected triangle (edges
  inclusive, so meshes have no cracks along shared edges).
* Depth is the camera-frame ``z`` of the surface (not the distance along the ray), interpolated
  perspective-correctly; background pixels have depth ``inf`` and face id ``-1``.
* Triangles with any vertex at ``z ≤ near`` are dropped (no near-plane clipping): the synthetic
  generator always keeps the whole animal in front of the camera.
* Both sides of a triangle are drawn unless ``cull_back_faces`` is set, so by default the winding
  order does not matter. A front face is counter-clockwise seen from the camera (its right-hand-rule
  normal points towards the camera).

The rasteriser is vectorised per triangle bounding box: triangles are grouped by the power-of-two
size of their pixel bounding box, every group tests all pixel centres of its boxes at once, and the
z-buffer keeps the nearest fragment (ties go to the lowest face index, so the result is
deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from smil.errors import ShapeMismatchError

__all__ = [
    "Rasterization",
    "face_normals",
    "is_closed_outward",
    "is_consistently_oriented",
    "project_points",
    "rasterize",
    "shade_lambert",
    "silhouette_mask",
    "vertex_normals",
    "surface_crossings",
    "visible_points",
    "visible_points_solid",
]

_INSIDE_EPS = 1e-9  # barycentric slack so pixel centres on a shared edge are never lost to rounding


@dataclass
class Rasterization:
    """Per-pixel result of :func:`rasterize` for an image of ``H × W`` pixels."""

    depth: np.ndarray  # (H, W) float64 camera-frame z of the nearest surface; inf = background
    face_id: np.ndarray  # (H, W) int64 index of the nearest face; -1 = background
    bary: np.ndarray  # (H, W, 3) float64 perspective-correct barycentrics of that face; 0 = background

    @property
    def mask(self) -> np.ndarray:
        """``(H, W)`` bool, True where a surface was drawn."""
        return self.face_id >= 0

    @property
    def image_size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return int(self.depth.shape[1]), int(self.depth.shape[0])


def _check_points(points: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ShapeMismatchError(f"{name}: expected shape (N, 3), got {arr.shape}")
    return arr


def _check_K(K: np.ndarray) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ShapeMismatchError(f"K: expected shape (3, 3), got {K.shape}")
    return K


def project_points(points_cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(N, 2)`` and depths ``(N,)`` of camera-frame points ``(N, 3)``.

    Points with ``z ≤ 0`` get NaN pixel coordinates.
    """
    pts = _check_points(points_cam, "points_cam")
    K = _check_K(K)
    z = pts[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        h = pts @ K.T
        uv = h[:, :2] / h[:, 2:3]
    uv[~(z > 0)] = np.nan
    return uv, z


def _next_pow2(n: np.ndarray) -> np.ndarray:
    return np.left_shift(1, np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64))


def rasterize(
    vertices_cam: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    image_size: tuple[int, int],
    near: float = 1e-6,
    cull_back_faces: bool = False,
) -> Rasterization:
    """Z-buffer rasterisation of a triangle mesh seen by a pinhole camera.

    Args:
        vertices_cam: ``(V, 3)`` vertices in the camera frame.
        faces: ``(F, 3)`` vertex indices.
        K: ``(3, 3)`` intrinsics.
        image_size: ``(width, height)`` in pixels.
        near: triangles with a vertex at ``z ≤ near`` are dropped.
        cull_back_faces: drop triangles whose right-hand-rule normal points away from the camera.
            Exact (and about twice as fast) for meshes that pass :func:`is_closed_outward`, seen
            from outside; leave it off otherwise.

    Returns:
        A :class:`Rasterization` with depth, face id and barycentrics per pixel.
    """
    verts = _check_points(vertices_cam, "vertices_cam")
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ShapeMismatchError(f"faces: expected integer shape (F, 3), got {faces.dtype} {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(verts)):
        raise ShapeMismatchError(f"faces: indices must lie in [0, {len(verts)}) for {len(verts)} vertices")
    K = _check_K(K)
    W, H = int(image_size[0]), int(image_size[1])
    if W <= 0 or H <= 0:
        raise ShapeMismatchError(f"image_size: expected positive (width, height), got {image_size}")

    depth = np.full(H * W, np.inf)
    face_buf = np.full(H * W, -1, dtype=np.int64)
    bary = np.zeros((H * W, 3))

    z_all = np.ascontiguousarray(verts[:, 2])
    with np.errstate(divide="ignore", invalid="ignore"):
        h = verts @ K.T
        u_all = h[:, 0] / z_all
        v_all = h[:, 1] / z_all
    tri_z = z_all[faces]  # (F, 3); 1-D gathers are faster than gathering (V, 2) rows
    x, y = u_all[faces], v_all[faces]
    # Column-wise min/max: reductions over an axis of length 3 are slow in numpy.
    x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
    y0, y1, y2 = y[:, 0], y[:, 1], y[:, 2]
    with np.errstate(invalid="ignore"):
        lo_x, hi_x = np.minimum(np.minimum(x0, x1), x2), np.maximum(np.maximum(x0, x1), x2)
        lo_y, hi_y = np.minimum(np.minimum(y0, y1), y2), np.maximum(np.maximum(y0, y1), y2)
        xmin = np.clip(np.ceil(lo_x), 0, W - 1)
        xmax = np.clip(np.floor(hi_x), 0, W - 1)
        ymin = np.clip(np.ceil(lo_y), 0, H - 1)
        ymax = np.clip(np.floor(hi_y), 0, H - 1)
        area2 = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        keep = (
            (tri_z[:, 0] > near)
            & (tri_z[:, 1] > near)
            & (tri_z[:, 2] > near)
            & (hi_x >= -0.5)
            & (lo_x <= W - 0.5)
            & (hi_y >= -0.5)
            & (lo_y <= H - 0.5)
            & (xmax >= xmin)
            & (ymax >= ymin)
            & (np.abs(area2) > 1e-12)
        )
    if cull_back_faces:
        # Screen-space winding: with y pointing down, a front face (normal towards the camera,
        # counter-clockwise seen from it) has a negative signed area in pixel coordinates.
        keep &= area2 < 0
    idx = np.nonzero(keep)[0]
    if idx.size == 0:
        return Rasterization(depth.reshape(H, W), face_buf.reshape(H, W), bary.reshape(H, W, 3))

    x, y, tri_z, area2 = x[idx], y[idx], tri_z[idx], area2[idx]
    xmin, xmax = xmin[idx].astype(np.int64), xmax[idx].astype(np.int64)
    ymin, ymax = ymin[idx].astype(np.int64), ymax[idx].astype(np.int64)
    # Screen-space barycentrics are affine in the pixel position: b_i = a_i·px + c_i·py + d_i.
    inv = 1.0 / area2
    coef = np.empty((idx.size, 2, 3))
    for i, (j, k) in enumerate(((1, 2), (2, 0))):
        coef[:, i, 0] = (y[:, j] - y[:, k]) * inv
        coef[:, i, 1] = (x[:, k] - x[:, j]) * inv
        coef[:, i, 2] = (x[:, j] * y[:, k] - x[:, k] * y[:, j]) * inv
    inv_z = 1.0 / tri_z

    bw = _next_pow2(xmax - xmin + 1)
    bh = _next_pow2(ymax - ymin + 1)
    key = bw * (4 * max(W, H)) + bh
    order = np.argsort(key, kind="stable")
    uniq, starts = np.unique(key[order], return_index=True)
    ends = np.append(starts[1:], order.size)

    frag_pix, frag_face, frag_b0, frag_b1 = [], [], [], []
    for s, e in zip(starts, ends):
        sel = order[s:e]
        gw, gh = int(bw[sel[0]]), int(bh[sel[0]])
        px = xmin[sel, None, None] + np.arange(gw)[None, None, :]  # (n, 1, gw)
        py = ymin[sel, None, None] + np.arange(gh)[None, :, None]  # (n, gh, 1)
        c = coef[sel]
        b0 = c[:, 0, 0, None, None] * px + c[:, 0, 1, None, None] * py + c[:, 0, 2, None, None]
        b1 = c[:, 1, 0, None, None] * px + c[:, 1, 1, None, None] * py + c[:, 1, 2, None, None]
        # Padding cells beyond a bounding box are outside the triangle, so the barycentric test
        # alone decides; only cells past the image border (boxes clipped there) are dropped below.
        inside = (b0 >= -_INSIDE_EPS) & (b1 >= -_INSIDE_EPS) & (b0 + b1 <= 1.0 + _INSIDE_EPS)
        k = np.flatnonzero(inside)
        if k.size == 0:
            continue
        fi, rem = np.divmod(k, gh * gw)
        ry, rx = np.divmod(rem, gw)
        faces_sel = sel[fi]
        fx = xmin[faces_sel] + rx
        fy = ymin[faces_sel] + ry
        b0, b1 = b0.ravel()[k], b1.ravel()[k]
        if gw > 1 or gh > 1:
            ok = (fx < W) & (fy < H)
            if not ok.all():
                fx, fy, faces_sel, b0, b1 = fx[ok], fy[ok], faces_sel[ok], b0[ok], b1[ok]
        frag_pix.append(fy * W + fx)
        frag_face.append(faces_sel)
        frag_b0.append(b0)
        frag_b1.append(b1)
    if not frag_pix:
        return Rasterization(depth.reshape(H, W), face_buf.reshape(H, W), bary.reshape(H, W, 3))

    pix = np.concatenate(frag_pix)
    fface = np.concatenate(frag_face)  # index into the kept faces
    b0 = np.concatenate(frag_b0)
    b1 = np.concatenate(frag_b1)
    # 1/z is affine in screen space: interpolate it with the screen-space barycentrics.
    iz = inv_z[fface]
    fz = 1.0 / (b0 * iz[:, 0] + b1 * iz[:, 1] + (1.0 - b0 - b1) * iz[:, 2])
    np.minimum.at(depth, pix, fz)
    win = fz == depth[pix]
    pix, fface, b0, b1, iz = pix[win], fface[win], b0[win], b1[win], iz[win]
    none = np.iinfo(np.int64).max
    face_buf[:] = none
    np.minimum.at(face_buf, pix, fface)  # ties in depth go to the lowest face index
    win = fface == face_buf[pix]
    pix, b0, b1, iz = pix[win], b0[win], b1[win], iz[win]
    sb = np.clip(np.stack([b0, b1, 1.0 - b0 - b1], axis=1), 0.0, 1.0) * iz
    bary[pix] = sb / sb.sum(axis=1, keepdims=True)  # perspective-correct: b_i/z_i, normalised
    covered = face_buf != none
    face_buf[covered] = idx[face_buf[covered]]
    face_buf[~covered] = -1
    return Rasterization(depth.reshape(H, W), face_buf.reshape(H, W), bary.reshape(H, W, 3))


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit normals ``(F, 3)`` of the faces, by the right-hand rule on the winding order.

    Degenerate faces get a zero normal.
    """
    v = _check_points(vertices, "vertices")
    tri = v[np.asarray(faces)]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals ``(V, 3)`` (assumes a consistent winding order).

    A vertex used by no face (or whose faces cancel) gets a zero normal.
    """
    v = _check_points(vertices, "vertices")
    faces = np.asarray(faces)
    tri = v[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2·area
    idx = faces.ravel()
    out = np.stack(
        [np.bincount(idx, weights=np.repeat(n[:, c], 3), minlength=len(v)) for c in range(3)], axis=1
    )
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norm, out=np.zeros_like(out), where=norm > 0)


def is_closed_outward(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """True when every connected part of the mesh is closed, consistently wound and outward-facing.

    Closed and consistent: every directed edge ``(a, b)`` occurs exactly once and so does its reverse
    ``(b, a)``. Outward: every connected part has a positive signed volume. For such a mesh, seen
    from outside, back-face culling (``rasterize(..., cull_back_faces=True)``) changes nothing but
    the speed.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    v = _check_points(vertices, "vertices")
    faces = np.asarray(faces, dtype=np.int64)
    if faces.size == 0:
        return False
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    n = len(v)
    key = e[:, 0] * n + e[:, 1]
    rev = e[:, 1] * n + e[:, 0]
    uniq, counts = np.unique(key, return_counts=True)
    if (counts != 1).any() or not np.isin(rev, uniq).all():
        return False
    graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    tri = v[faces]
    vol = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6.0
    part_vol = np.bincount(label[faces[:, 0]], weights=vol)
    used = np.bincount(label[faces[:, 0]]) > 0
    return bool((part_vol[used] > 0).all())


def shade_lambert(
    raster: Rasterization,
    vertices_cam: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    light_dir: np.ndarray,
    ambient: float = 0.3,
    diffuse: float = 0.7,
    smooth: bool = True,
    normals_cam: np.ndarray | None = None,
) -> np.ndarray:
    """Lambertian intensity ``ambient + diffuse · max(0, n · l)`` per pixel, ``(H, W)``; 0 = background.

    Args:
        raster: the result of :func:`rasterize` for the same mesh and camera.
        vertices_cam, faces, K: the mesh and intrinsics that were rasterised.
        light_dir: ``(3,)`` direction *towards* the light, camera frame (normalised here).
        ambient, diffuse: weights of the two terms.
        smooth: interpolate area-weighted vertex normals (Phong-style normals, Lambert lighting)
            instead of using flat face normals.
        normals_cam: optional precomputed ``(V, 3)`` vertex normals in the camera frame (e.g. world
            normals rotated by ``R``, to share them between views); default :func:`vertex_normals`.

    Lighting is two-sided: every normal is flipped to face the viewer, so inconsistent winding or
    open meshes never render black.
    """
    l = np.asarray(light_dir, dtype=np.float64).reshape(3)
    l = l / np.linalg.norm(l)
    K = _check_K(K)
    H, W = raster.depth.shape
    out = np.zeros((H, W))
    m = raster.mask
    if not m.any():
        return out
    f = raster.face_id[m]
    faces = np.asarray(faces)
    fv = faces[f]
    if smooth:
        vn = (
            vertex_normals(vertices_cam, faces)
            if normals_cam is None
            else np.asarray(normals_cam, np.float64)
        )
        b = raster.bary[m]
        n = b[:, 0, None] * vn[fv[:, 0]] + b[:, 1, None] * vn[fv[:, 1]] + b[:, 2, None] * vn[fv[:, 2]]
        norm = np.sqrt(np.einsum("pc,pc->p", n, n))
        bad = norm < 1e-8
        n /= np.where(bad, 1.0, norm)[:, None]
        if bad.any():
            n[bad] = face_normals(vertices_cam, fv[bad])
    else:
        n = face_normals(vertices_cam, fv)
    ys, xs = np.nonzero(m)
    rays = np.stack([xs, ys, np.ones_like(xs)], axis=1).astype(np.float64) @ np.linalg.inv(K).T
    n = np.where((np.einsum("pc,pc->p", n, rays) > 0)[:, None], -n, n)
    out[m] = ambient + diffuse * np.maximum(n @ l, 0.0)
    return out


def silhouette_mask(raster: Rasterization) -> np.ndarray:
    """``(H, W)`` uint8 mask: 255 where the mesh covers the pixel centre, 0 elsewhere."""
    return np.where(raster.mask, np.uint8(255), np.uint8(0))


def visible_points(
    points_cam: np.ndarray,
    depth_buffer: np.ndarray,
    K: np.ndarray,
    tol: float | np.ndarray,
) -> np.ndarray:
    """Depth-test visibility of camera-frame points against a rendered depth buffer.

    A point is visible when it lies in front of the camera, projects into the image (its nearest
    pixel centre is inside the ``H × W`` buffer), and is not behind the rendered surface at that
    pixel by more than ``tol``: ``z_point ≤ depth[pixel] + tol``. Background pixels (``inf``) never
    hide a point. ``tol`` (scalar or ``(N,)``, camera-frame z units) is how far *inside* the
    surface a point may sit and still count as seen: a joint inside a limb needs about the limb's
    radius; anything farther behind the surface is hidden by another part.

    Returns:
        ``(N,)`` bool.
    """
    pts = _check_points(points_cam, "points_cam")
    depth_buffer = np.asarray(depth_buffer, dtype=np.float64)
    if depth_buffer.ndim != 2:
        raise ShapeMismatchError(f"depth_buffer: expected shape (H, W), got {depth_buffer.shape}")
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), (len(pts),))
    H, W = depth_buffer.shape
    uv, z = project_points(pts, K)
    with np.errstate(invalid="ignore"):
        px = np.rint(uv[:, 0])
        py = np.rint(uv[:, 1])
        inside = (z > 0) & (px >= 0) & (px < W) & (py >= 0) & (py < H)
    visible = np.zeros(len(pts), dtype=bool)
    i = np.nonzero(inside)[0]
    d = depth_buffer[py[i].astype(np.int64), px[i].astype(np.int64)]
    visible[i] = z[i] <= d + tol[i]
    return visible


def is_consistently_oriented(vertices: np.ndarray, faces: np.ndarray, min_fraction: float = 0.99) -> bool:
    """True when the winding is consistent and outward, allowing small holes and defects.

    At least ``min_fraction`` of the directed edges ``(a, b)`` must have their reverse ``(b, a)``
    (boundary edges of small holes and a few non-manifold edges are tolerated), and the mesh's
    signed volume must be positive (normals point outwards). This is what
    :func:`visible_points_solid` needs; :func:`is_closed_outward` is the strict version.
    """
    v = _check_points(vertices, "vertices")
    faces = np.asarray(faces, dtype=np.int64)
    if faces.size == 0:
        return False
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    n = len(v)
    paired = np.isin(e[:, 1] * n + e[:, 0], e[:, 0] * n + e[:, 1])
    tri = v[faces]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    return bool(paired.mean() >= min_fraction and volume > 0)


def surface_crossings(
    points_cam: np.ndarray,
    vertices_cam: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    image_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every triangle crossing the camera ray through each point's nearest pixel centre.

    Uses the same coverage rule as :func:`rasterize` (pixel centre inside the projected triangle,
    edges inclusive), so the crossings agree with the rendered image.

    Returns:
        ``(in_frame, point, depth, entering)``: ``in_frame`` ``(N,)`` bool (point in front of the
        camera and its nearest pixel centre inside the image); then one entry per crossing: the
        point's index, the camera-frame depth of the crossing, and whether the ray enters the
        surface there (a front face: right-hand-rule normal towards the camera).
    """
    pts = _check_points(points_cam, "points_cam")
    verts = _check_points(vertices_cam, "vertices_cam")
    faces = np.asarray(faces, dtype=np.int64)
    K = _check_K(K)
    W, H = int(image_size[0]), int(image_size[1])
    uv, z = project_points(pts, K)
    with np.errstate(invalid="ignore"):
        px = np.rint(uv[:, 0])
        py = np.rint(uv[:, 1])
        in_frame = (z > 0) & (px >= 0) & (px < W) & (py >= 0) & (py < H)
    empty = (np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool))
    sel = np.nonzero(in_frame)[0]
    if sel.size == 0 or faces.size == 0:
        return (in_frame, *empty)
    z_all = np.ascontiguousarray(verts[:, 2])
    with np.errstate(divide="ignore", invalid="ignore"):
        h = verts @ K.T
        u_all, v_all = h[:, 0] / z_all, h[:, 1] / z_all
    tri_z = z_all[faces]
    x, y = u_all[faces], v_all[faces]
    x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
    y0, y1, y2 = y[:, 0], y[:, 1], y[:, 2]
    with np.errstate(invalid="ignore"):
        xmin = np.clip(np.ceil(np.minimum(np.minimum(x0, x1), x2)), 0, W - 1)
        xmax = np.clip(np.floor(np.maximum(np.maximum(x0, x1), x2)), -1, W - 1)
        ymin = np.clip(np.ceil(np.minimum(np.minimum(y0, y1), y2)), 0, H - 1)
        ymax = np.clip(np.floor(np.maximum(np.maximum(y0, y1), y2)), -1, H - 1)
        covers = (
            (tri_z[:, 0] > 1e-6)
            & (tri_z[:, 1] > 1e-6)
            & (tri_z[:, 2] > 1e-6)
            & (xmax >= xmin)
            & (ymax >= ymin)
        )
    # Keep the faces whose pixel box holds at least one query pixel (summed-area table lookup).
    qx, qy = px[sel].astype(np.int64), py[sel].astype(np.int64)
    occupied = np.zeros((H, W), np.uint8)
    occupied[qy, qx] = 1
    table = cv2.integral(occupied)  # (H + 1, W + 1): table[y, x] = sum of occupied[:y, :x]
    f_idx = np.nonzero(covers)[0]
    a0, a1 = xmin[f_idx].astype(np.int64), xmax[f_idx].astype(np.int64) + 1
    c0, c1 = ymin[f_idx].astype(np.int64), ymax[f_idx].astype(np.int64) + 1
    count = table[c1, a1] - table[c0, a1] - table[c1, a0] + table[c0, a0]
    f_idx = f_idx[count > 0]
    if f_idx.size == 0:
        return (in_frame, *empty)
    cand = (
        (xmin[f_idx][None] <= qx[:, None])
        & (xmax[f_idx][None] >= qx[:, None])
        & (ymin[f_idx][None] <= qy[:, None])
        & (ymax[f_idx][None] >= qy[:, None])
    )
    pi, fi = np.nonzero(cand)
    fi = f_idx[fi]
    area2 = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    ok = np.abs(area2[fi]) > 1e-12
    pi, fi = pi[ok], fi[ok]
    inv = 1.0 / area2[fi]
    X, Y = qx[pi], qy[pi]
    # Same arithmetic as rasterize(), so coverage agrees bit for bit.
    b0 = (
        ((y1[fi] - y2[fi]) * inv) * X
        + ((x2[fi] - x1[fi]) * inv) * Y
        + (x1[fi] * y2[fi] - x2[fi] * y1[fi]) * inv
    )
    b1 = (
        ((y2[fi] - y0[fi]) * inv) * X
        + ((x0[fi] - x2[fi]) * inv) * Y
        + (x2[fi] * y0[fi] - x0[fi] * y2[fi]) * inv
    )
    b2 = 1.0 - b0 - b1
    hit = (b0 >= -_INSIDE_EPS) & (b1 >= -_INSIDE_EPS) & (b0 + b1 <= 1.0 + _INSIDE_EPS)
    pi, fi, b0, b1, b2 = pi[hit], fi[hit], b0[hit], b1[hit], b2[hit]
    iz = 1.0 / tri_z[fi]
    depth = 1.0 / (b0 * iz[:, 0] + b1 * iz[:, 1] + b2 * iz[:, 2])
    entering = area2[fi] < 0  # see rasterize(cull_back_faces=True)
    return in_frame, sel[pi], depth, entering


def visible_points_solid(
    points_cam: np.ndarray,
    vertices_cam: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    image_size: tuple[int, int],
    tol: float | np.ndarray,
) -> np.ndarray:
    """Visibility of points inside or near a closed, outward-oriented mesh (a solid body).

    A point is visible when it projects into the image and the camera ray, from the first surface
    it meets up to the point, never leaves the solid: walking along the ray, +1 for every surface
    entered (front face) and −1 for every surface left (back face), the running count never drops
    back to 0 before the point. A joint inside a limb is therefore visible through that limb's own
    surface however thick the limb is, also where body parts overlap (the count stays positive);
    a joint behind another part is hidden, because the ray leaves that part first. Crossings less
    than ``tol`` (scalar or ``(N,)``) in front of the point are ignored, so a point lying just
    outside its own surface (a tarsus tip on the far side of its segment) stays visible.

    Needs a consistently, outward-wound mesh (:func:`is_consistently_oriented`); use
    :func:`visible_points` with a depth tolerance otherwise.

    Returns:
        ``(N,)`` bool.
    """
    pts = _check_points(points_cam, "points_cam")
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), (len(pts),))
    in_frame, point, depth, entering = surface_crossings(pts, vertices_cam, faces, K, image_size)
    visible = in_frame.copy()
    before = depth < pts[point, 2] - tol[point]
    point, depth, step = point[before], depth[before], np.where(entering[before], 1, -1)
    if point.size == 0:
        return visible
    order = np.lexsort((-step, depth, point))  # by point, then depth; entering first on ties
    point, step = point[order], step[order]
    starts = np.flatnonzero(np.r_[True, point[1:] != point[:-1]])
    running = np.cumsum(step)
    offset = np.repeat(running[starts] - step[starts], np.diff(np.r_[starts, point.size]))
    lowest = np.minimum.reduceat(running - offset, starts)
    visible[point[starts[lowest <= 0]]] = False
    return visible
