"""Differentiable soft silhouettes of triangle meshes, in plain PyTorch (CPU and CUDA).

Conventions (see ``docs/conventions.md`` and ``docs/rendering.md``):

* Cameras are OpenCV pinholes: ``x_cam = R · X + t``, pixel ``(u, v) = K · x_cam / z``; the centre
  of the top-left pixel is ``(0, 0)``, and image element ``[row i, column j]`` is the pixel centred
  at ``(u, v) = (j, i)``.
* ``image_size`` is ``(H, W)`` and the result has shape ``(B, H, W)``, like a torch image.
* ``sigma`` is in **squared pixels**.

Method (SoftRas aggregation, Liu et al. 2019). For pixel centre ``p`` and projected triangle ``f``
let ``d`` be the distance from ``p`` to the triangle's boundary, in pixels. The triangle covers the
pixel with probability ``D_f = sigmoid(±d² / σ)`` (``+`` inside, ``−`` outside) and the silhouette
is ``1 − Π_f (1 − D_f)``, accumulated in log space as ``Σ_f log(1 − D_f)``. Coverage below
``cutoff`` (``ε``) is dropped continuously, ``D'_f = max(D_f − ε, 0) / (1 − ε)``, so a triangle
touches only pixels within ``r = sqrt(σ · ln((1 − ε)/ε))`` pixels of it (``r ≈ 3.03`` px for
``σ = 1``, ``ε = 1e-4``) and the image does not depend on how the work is split.

Work and memory. Faces behind the camera (any vertex at ``z ≤ near``), outside the image and,
optionally, facing away from the camera are culled. Each remaining face is evaluated only at the
pixel centres of its screen bounding box grown by ``r`` and clipped to the image; boxes wider or
taller than ``box_size`` are split into tiles. Tiles are sorted by shape and packed into chunks of
at most ``max_pairs_per_chunk`` (pixel, face) pairs, each a dense ``(3 edges, h, w, tiles)`` block.
Nothing of size pixels × faces is ever stored: the forward pass keeps the per-pixel log-sum and the
backward pass recomputes each chunk, so peak memory is ``O(B·H·W + faces + max_pairs_per_chunk)``
whatever the mesh and image size.

Faces crossing the camera plane are dropped, not clipped. A vertex exactly on the camera plane
(``z = 0``) gives non-finite gradients through the projection even though its faces are culled.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from smil.errors import ConfigError, ShapeMismatchError
from smil.geometry.camera import project

__all__ = ["SoftSilhouetteRenderer", "soft_radius", "soft_silhouette"]

DEFAULT_MAX_PAIRS = {"cpu": 1 << 16, "other": 1 << 20}  # CPU: stay in cache; GPU: fewer launches
_MIN_FILL = 0.7  # chunks keep at least 70 % of their padded (pixel, tile) pairs real


def soft_radius(sigma: float, cutoff: float = 1e-4) -> float:
    """Distance in pixels beyond which a lone triangle's coverage is below ``cutoff`` (dropped)."""
    return math.sqrt(sigma * math.log((1.0 - cutoff) / cutoff))


def soft_silhouette(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    K: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    image_size: tuple[int, int],
    sigma: float = 1.0,
    *,
    cutoff: float = 1e-4,
    near: float = 1e-6,
    backface_culling: bool = False,
    box_size: int = 32,
    max_pairs_per_chunk: int | None = None,
) -> torch.Tensor:
    """Soft silhouettes ``(B, H, W)`` in ``[0, 1]`` of a mesh seen by ``B`` pinhole cameras.

    Args:
        vertices: ``(B, V, 3)`` world-frame vertices; float32 or float64 (half precision is
            computed in float32). The result has their dtype.
        faces: ``(F, 3)`` integer vertex indices, shared by the batch.
        K, R, t: ``(B, 3, 3)``, ``(B, 3, 3)``, ``(B, 3)`` OpenCV cameras (world → camera), or one
            unbatched camera ``(3, 3)``, ``(3, 3)``, ``(3,)`` for the whole batch; converted to the
            vertices' dtype and device.
        image_size: ``(H, W)`` in pixels.
        sigma: edge softness in squared pixels: a pixel ``d`` pixels outside a lone triangle gets
            ``sigmoid(−d²/σ)``, one ``d`` pixels inside ``sigmoid(d²/σ)``. Smaller is sharper.
        cutoff: coverage below this is dropped; sets the support radius (:func:`soft_radius`).
        near: faces with a vertex at camera depth ``z ≤ near`` (world units) are culled.
        backface_culling: drop faces whose right-hand-rule normal points away from the camera
            (wound clockwise on screen, y down). Only for closed meshes with outward normals:
            there it halves the work and keeps the outline, but one layer of faces is drawn
            instead of two, so soft values within ``r`` of the outline (and inside, where faces
            are as small as ``√σ``) are lower.
        box_size: face boxes wider or taller than this (pixels) are split into tiles.
        max_pairs_per_chunk: (pixel, face) pairs evaluated at once; bounds the working memory
            at about 64 bytes per pair in float32. Default 2¹⁶ on CPU (4 MiB, cache-sized), 2²⁰
            on other devices (64 MiB, fewer kernel launches).

    Returns:
        ``(B, H, W)`` silhouettes, differentiable with respect to ``vertices``, ``K``, ``R``, ``t``.
    """
    H, W = _check_image_size(image_size)
    if max_pairs_per_chunk is None:
        max_pairs_per_chunk = DEFAULT_MAX_PAIRS["cpu" if vertices.device.type == "cpu" else "other"]
    if not sigma > 0:
        raise ConfigError(f"expected a positive value in squared pixels, got {sigma}", field="sigma")
    if not 0.0 < cutoff < 0.5:
        raise ConfigError(f"expected a coverage in (0, 0.5), got {cutoff}", field="cutoff")
    if box_size < 1 or max_pairs_per_chunk < box_size * box_size:  # (one tile must fit)
        raise ConfigError(
            f"expected box_size ≥ 1 and max_pairs_per_chunk ≥ box_size², got {box_size} and "
            f"{max_pairs_per_chunk}", field="box_size, max_pairs_per_chunk",
        )
    B = _check_inputs(vertices, faces, K, R, t)
    out_dtype = vertices.dtype
    if vertices.dtype not in (torch.float32, torch.float64):
        vertices = vertices.float()
    faces = faces.to(device=vertices.device, dtype=torch.long)
    K, R, t = (x.to(device=vertices.device, dtype=vertices.dtype) for x in (K, R, t))

    uv, z = project(vertices, K, R, t, return_depth=True)  # (B, V, 2), (B, V)
    with torch.no_grad():
        corners = [faces[:, k] for k in range(3)]
        u, v, zz = uv[..., 0].contiguous(), uv[..., 1].contiguous(), z.contiguous()
        keep, boxes = _cull(
            [u.index_select(1, c) for c in corners],
            [v.index_select(1, c) for c in corners],
            [zz.index_select(1, c) for c in corners],
            H, W, soft_radius(sigma, cutoff), near, backface_culling,
        )
        sel = keep.flatten().nonzero().squeeze(1)  # the faces to draw, as indices into (B·F)
        boxes = boxes.view(4, -1).index_select(1, sel)  # (4, N): x0, y0, x1, y1
        batch = torch.div(sel, faces.shape[0], rounding_mode="floor")
        face = sel - batch * faces.shape[0]
    # The differentiable part: the drawn faces' projected corners, (N, 3, 2).
    vid = faces.index_select(0, face)  # (N, 3)
    tri = uv.reshape(-1, 2).index_select(0, (vid + (batch * uv.shape[1])[:, None]).view(-1)).view(-1, 3, 2)
    settings = _Settings(H, W, B, sigma, cutoff, box_size, max_pairs_per_chunk)
    return _SoftSilhouetteFn.apply(tri, boxes, batch, settings).to(out_dtype)


class SoftSilhouetteRenderer(nn.Module):
    """The settings of :func:`soft_silhouette`, as a module: ``forward(vertices, faces, K, R, t)``."""

    def __init__(
        self,
        image_size: tuple[int, int],
        sigma: float = 1.0,
        *,
        cutoff: float = 1e-4,
        near: float = 1e-6,
        backface_culling: bool = False,
        box_size: int = 32,
        max_pairs_per_chunk: int | None = None,
    ) -> None:
        super().__init__()
        self.image_size = _check_image_size(image_size)
        self.sigma = float(sigma)
        self.cutoff = float(cutoff)
        self.near = float(near)
        self.backface_culling = bool(backface_culling)
        self.box_size = int(box_size)
        self.max_pairs_per_chunk = max_pairs_per_chunk

    def forward(
        self, vertices: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        return soft_silhouette(
            vertices, faces, K, R, t, self.image_size, self.sigma,
            cutoff=self.cutoff, near=self.near, backface_culling=self.backface_culling,
            box_size=self.box_size, max_pairs_per_chunk=self.max_pairs_per_chunk,
        )

    def extra_repr(self) -> str:
        return (
            f"image_size={self.image_size}, sigma={self.sigma}, cutoff={self.cutoff}, "
            f"near={self.near}, backface_culling={self.backface_culling}"
        )


# --------------------------------------------------------------------------------------------
# Input checks and culling


def _check_image_size(image_size: tuple[int, int]) -> tuple[int, int]:
    try:
        H, W = (int(s) for s in image_size)
    except (TypeError, ValueError):
        raise ShapeMismatchError(f"image_size: expected (H, W) integers, got {image_size!r}") from None
    if H <= 0 or W <= 0:
        raise ShapeMismatchError(f"image_size: expected positive (H, W), got {image_size!r}")
    return H, W


def _check_inputs(
    vertices: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor
) -> int:
    if vertices.ndim != 3 or vertices.shape[-1] != 3 or not vertices.is_floating_point():
        raise ShapeMismatchError(
            f"vertices: expected a float tensor of shape (B, V, 3), "
            f"got {vertices.dtype} {tuple(vertices.shape)}"
        )
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.is_floating_point() or faces.is_complex():
        raise ShapeMismatchError(
            f"faces: expected integer shape (F, 3), got {faces.dtype} {tuple(faces.shape)}"
        )
    B, V = vertices.shape[:2]
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= V):
        raise ShapeMismatchError(f"faces: indices must lie in [0, {V}) for {V} vertices")
    for name, x, trailing in (("K", K, (3, 3)), ("R", R, (3, 3)), ("t", t, (3,))):
        lead = tuple(x.shape[: x.ndim - len(trailing)])
        if tuple(x.shape[x.ndim - len(trailing):]) != trailing or lead not in ((), (B,)):
            dims = ", ".join(str(d) for d in trailing)
            raise ShapeMismatchError(
                f"{name}: expected shape ({B}, {dims}) or ({dims}), got {tuple(x.shape)}"
            )
    return B


def _cull(
    u: list[torch.Tensor],
    v: list[torch.Tensor],
    z: list[torch.Tensor],
    H: int,
    W: int,
    radius: float,
    near: float,
    backface_culling: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Faces to draw ``(B, F)`` and their inclusive pixel boxes ``(4, B, F)``: x0, y0, x1, y1.

    ``u``, ``v``, ``z``: pixel coordinates and depth of the three corners, ``(B, F)`` each.
    """
    keep = (torch.minimum(torch.minimum(z[0], z[1]), z[2]) > near) & torch.isfinite(sum(u) + sum(v))
    box = []
    for c, size in ((u, W), (v, H)):
        lo = torch.minimum(torch.minimum(c[0], c[1]), c[2]).sub_(radius).clamp_(0, size).ceil_()
        hi = torch.maximum(torch.maximum(c[0], c[1]), c[2]).add_(radius).clamp_(-1, size - 1).floor_()
        keep &= hi >= lo  # also False where NaN
        box += [lo.nan_to_num_(0), hi.nan_to_num_(-1)]
    if backface_culling:
        keep &= (u[1] - u[0]) * (v[2] - v[0]) - (v[1] - v[0]) * (u[2] - u[0]) <= 0
    return keep, torch.stack([box[0], box[2], box[1], box[3]]).long()


# --------------------------------------------------------------------------------------------
# Work plan: face boxes → tiles → chunks of equally padded tiles


class _Settings:
    """Per-call constants shared by the forward and backward passes."""

    def __init__(
        self, H: int, W: int, B: int, sigma: float, cutoff: float, box_size: int, max_pairs: int
    ) -> None:
        self.H, self.W, self.B = H, W, B
        self.scale = 1.0 / math.sqrt(sigma)  # pixels → units of sqrt(σ), where x = ±d²
        self.cutoff = cutoff
        self.box_size = box_size
        self.max_pairs = max_pairs


class _Plan:
    """Face tiles sorted by shape, and the chunks ``(start, end, h, w)`` that pack them."""

    def __init__(self, boxes: torch.Tensor, batch: torch.Tensor, s: _Settings) -> None:
        size, dev = s.box_size, boxes.device
        lo, hi = boxes[:2], boxes[2:]  # (2, N) each: x, y
        ext = hi - lo + 1  # (2, N): w, h
        face = torch.arange(boxes.shape[1], device=dev)
        if ext.numel() and int(ext.max()) > size:
            ntile = torch.div(ext + size - 1, size, rounding_mode="floor")
            count = ntile[0] * ntile[1]
            face = torch.repeat_interleave(face, count)
            first = (torch.cumsum(count, 0) - count).index_select(0, face)
            k = torch.arange(face.shape[0], device=dev) - first  # tile number within its face
            nx = ntile[0].index_select(0, face)
            sub = torch.stack([k % nx, torch.div(k, nx, rounding_mode="floor")])
            origin = lo.index_select(1, face) + sub * size
            extent = (hi.index_select(1, face) + 1 - origin).clamp_(max=size)
        else:
            origin, extent = lo, ext
        # Sort by height, then width, then position (image, row, column): memory locality for the
        # scatter into the image and the gather from it.
        shape = extent[1] * (size + 1) + extent[0]
        where = (batch.index_select(0, face) * s.H + origin[1]) * s.W + origin[0]
        order = torch.argsort(shape * (s.B * s.H * s.W) + where)
        self.face = face.index_select(0, order)  # (N,) index into the culled faces
        self.origin = origin.index_select(1, order)  # (2, N): x0, y0 of each tile
        self.extent = extent.index_select(1, order)  # (2, N): w, h of each tile
        self.batch = batch.index_select(0, self.face)
        self.chunks = _pack(shape.index_select(0, order), size, s.max_pairs)


def _pack(key: torch.Tensor, size: int, max_pairs: int) -> list[tuple[int, int, int, int]]:
    """Greedy packing of shape-sorted tiles into chunks of at most ``max_pairs`` padded pairs."""
    chunks: list[tuple[int, int, int, int]] = []
    if key.numel() == 0:
        return chunks
    keys, counts = torch.unique_consecutive(key, return_counts=True)
    start = n = h_max = w_max = area = 0
    for k, c in zip(keys.tolist(), counts.tolist()):
        h, w = divmod(k, size + 1)
        while c > 0:
            nh, nw = max(h_max, h), max(w_max, w)
            padded = nh * nw
            take = min(c, max_pairs // padded - n)
            if n and area < _MIN_FILL * n * padded:
                take = 0  # growing the chunk's tile shape would pad its tiles too much
            elif h * w < _MIN_FILL * padded:
                take = min(take, int((area - _MIN_FILL * n * padded) // (_MIN_FILL * padded - h * w)))
            if take <= 0:  # never with n == 0: then padded = h·w ≤ size² ≤ max_pairs
                chunks.append((start, start + n, h_max, w_max))
                start, n, h_max, w_max, area = start + n, 0, 0, 0, 0
                continue
            n, c, area = n + take, c - take, area + take * h * w
            h_max, w_max = nh, nw
    chunks.append((start, start + n, h_max, w_max))
    return chunks


# --------------------------------------------------------------------------------------------
# Pair evaluation. Per-tile tensors are (edge, tile) = (3, N); per-pair tensors are laid out
# (edge, row, column, tile): with the long tile axis innermost, broadcasting arithmetic runs as
# vectorised loops. Chunks are computed in reused buffers (``out=`` and in-place ops), which stay
# in cache and avoid page faults on fresh allocations.
#
# Edge k runs from vertex a to b with unit direction u, length ℓ and unit normal n = (−u_y, u_x),
# which points into a counter-clockwise triangle. With q = p − a, c = n·q (signed, + inside) and
# s = u·q, the closest point of the edge is a + clamp(s, 0, ℓ)·u and
# d² = c² + (s − clamp(s, 0, ℓ))².
# Both c and s are affine in the pixel's column j and row i within a tile.


class _Geometry:
    """Per-tile edge data in local, σ-scaled units (tile origin at 0), vertices made CCW."""

    def __init__(self, tri: torch.Tensor, plan: _Plan, s: _Settings) -> None:
        dt, dev = tri.dtype, tri.device
        xy = tri.index_select(0, plan.face).permute(2, 1, 0).contiguous()  # (2, 3, N)
        vx = (xy[0] - plan.origin[0].to(dt)).mul_(s.scale)  # (3, N), local σ-scaled coordinates
        vy = (xy[1] - plan.origin[1].to(dt)).mul_(s.scale)
        # Make every triangle counter-clockwise in (x, y) by swapping vertices 1 and 2 of the others.
        area2 = (vx[1] - vx[0]) * (vy[2] - vy[0]) - (vy[1] - vy[0]) * (vx[2] - vx[0])
        self.flip = (area2 < 0).to(dt)  # (N,)
        for c in (vx, vy):
            swap = (c[2] - c[1]).mul_(self.flip)
            c[1].add_(swap)
            c[2].sub_(swap)
        ex = torch.roll(vx, -1, 0) - vx  # edge k runs from vertex k to vertex k + 1
        ey = torch.roll(vy, -1, 0) - vy
        self.length = torch.sqrt(ex * ex + ey * ey)
        # A zero-length edge gets u = (1, 0): then c² + s² is the squared distance to its point.
        self.inv_len = 1.0 / self.length.clamp_min(1e-30)
        self.ux = (ex * self.inv_len).add_((self.length == 0).to(dt))
        self.uy = ey * self.inv_len
        self.c0 = vx * self.uy - vy * self.ux  # c = −j·u_y + i·u_x + c0
        self.s0 = -(vx * self.ux + vy * self.uy)  # s = j·u_x + i·u_y + s0
        self.zero = torch.zeros_like(self.length)
        itype = torch.int32 if s.B * s.H * s.W < 2**29 else torch.int64
        self.base = (plan.batch * (s.H * s.W) + plan.origin[1] * s.W + plan.origin[0]).to(itype)
        self.last_x = (plan.extent[0] - 1).to(itype)  # last column and row inside each tile
        self.last_y = (plan.extent[1] - 1).to(itype)
        self.index = torch.arange(s.box_size, device=dev, dtype=itype)[:, None]  # (size, 1)
        self.coord = self.index.to(dt) * s.scale
        self.W = torch.tensor(s.W, dtype=itype, device=dev)
        self.dummy = torch.tensor(s.B * s.H * s.W, dtype=itype, device=dev)  # index past the images


class _Workspace:
    """Reused flat buffers; ``edge(i, shape)`` and ``pair(i, shape)`` are views of buffer ``i``."""

    def __init__(self, max_pairs: int, dtype: torch.dtype, device: torch.device) -> None:
        self.max_pairs, self.dtype, self.device = max_pairs, dtype, device
        self._buffers: dict[tuple[str, int], torch.Tensor] = {}

    def _view(self, kind: str, i: int, size: int, shape: tuple[int, ...]) -> torch.Tensor:
        buf = self._buffers.get((kind, i))
        if buf is None:
            buf = self._buffers[(kind, i)] = torch.empty(size, dtype=self.dtype, device=self.device)
        strides, step = [], 1
        for n in reversed(shape):
            strides.append(step)
            step *= n
        return buf.as_strided(shape, strides[::-1])  # a contiguous view of the buffer's start

    def edge(self, i: int, shape: tuple[int, ...]) -> torch.Tensor:
        return self._view("edge", i, 3 * self.max_pairs, shape)

    def pair(self, i: int, shape: tuple[int, ...]) -> torch.Tensor:
        return self._view("pair", i, self.max_pairs, shape)


class _Chunk:
    """One chunk of tiles ``[a, b)`` on an ``h × w`` pixel grid."""

    def __init__(self, geo: _Geometry, chunk: tuple[int, int, int, int], ws: _Workspace) -> None:
        a, b, h, w = chunk
        self.geo, self.ws, self.a, self.b = geo, ws, a, b
        self.edge_shape, self.pair_shape = (3, h, w, b - a), (h, w, b - a)
        # Flat pixel index of every pair. Rows and columns past a tile's extent (padding) point at
        # a dummy pixel after the last image, whose value is dropped and whose gradient is 0.
        pad_x = torch.sub(geo.index[:w], geo.last_x[a:b]).clamp_(0, 1)  # (w, n), 1 on padding
        pad_y = torch.sub(geo.index[:h], geo.last_y[a:b]).clamp_(0, 1)
        col = torch.addcmul(geo.index[:w], pad_x, geo.dummy)
        row = torch.addcmul(geo.base[a:b], geo.index[:h], geo.W).addcmul_(pad_y, geo.dummy)
        self.pixel = torch.add(row[:, None, :], col[None, :, :]).clamp_(max=geo.dummy).view(-1)

    def distances(self) -> tuple[torch.Tensor, ...]:
        """``c``, ``s − clamp(s, 0, ℓ)``, ``clamp(s, 0, ℓ)``, ``d²`` per edge ``(3, h, w, n)``;
        ``cmin`` (> 0 inside), ``d²min`` and ``x = ±d²min`` per pair ``(h, w, n)``."""
        geo, ws, E, P, a, b = self.geo, self.ws, self.edge_shape, self.pair_shape, self.a, self.b
        j, i = geo.coord[None, : E[2]], geo.coord[None, : E[1]]  # (1, w, 1), (1, h, 1)
        ux, uy = geo.ux[:, None, a:b], geo.uy[:, None, a:b]  # (3, 1, n)
        # Row and column terms, written into contiguous (3, h, n) / (3, w, n) tensors: left to
        # itself, broadcasting picks a tile-outermost layout that slows every op after it.
        row = torch.empty(2, 3, E[1], E[3], dtype=ux.dtype, device=ux.device)  # c, s: (3, h, n)
        col = torch.empty(2, 3, E[2], E[3], dtype=ux.dtype, device=ux.device)  # c, s: (3, w, n)
        torch.addcmul(geo.c0[:, None, a:b], i, ux, out=row[0])
        torch.addcmul(geo.s0[:, None, a:b], i, uy, out=row[1])
        torch.mul(j, uy, out=col[0]).neg_()
        torch.mul(j, ux, out=col[1])
        c = torch.add(row[0, :, :, None], col[0, :, None], out=ws.edge(0, E))
        cmin = torch.minimum(c[0], c[1], out=ws.pair(0, P))
        torch.minimum(cmin, c[2], out=cmin)
        sp = torch.add(row[1, :, :, None], col[1, :, None], out=ws.edge(1, E))
        sc = torch.clamp(sp, geo.zero[:, None, None, a:b], geo.length[:, None, None, a:b], out=ws.edge(2, E))
        sp.sub_(sc)  # the part of s beyond the segment
        d2 = torch.mul(c, c, out=ws.edge(3, E))
        d2.addcmul_(sp, sp)
        d2min = torch.minimum(d2[0], d2[1], out=ws.pair(1, P))
        torch.minimum(d2min, d2[2], out=d2min)
        x = torch.copysign(d2min, cmin, out=ws.pair(2, P))
        return c, sp, sc, d2, cmin, d2min, x


def _neg_log_keep(x: torch.Tensor, cutoff: float) -> torch.Tensor:
    """``−log(1 − D')`` computed in place of ``x = ±d²/σ``: exactly 0 below the cutoff.

    Above the cutoff ``1 − D' = (1 − D)/(1 − ε)`` with ``1 − D = 1/(1 + eˣ)``, hence
    ``−log(1 − D') = log(max((1 − ε)(eˣ + 1), 1))``; the ``max`` is the cutoff.
    """
    return x.exp_().add_(1.0).mul_(1.0 - cutoff).clamp_min_(1.0).log_()


class _SoftSilhouetteFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tri, boxes, batch, s):  # type: ignore[override]
        acc = torch.zeros(s.B * s.H * s.W + 1, dtype=tri.dtype, device=tri.device)  # + dummy
        plan = _Plan(boxes, batch, s)
        if plan.chunks:
            geo = _Geometry(tri, plan, s)
            ws = _Workspace(s.max_pairs, tri.dtype, tri.device)
            for chunk in plan.chunks:
                ch = _Chunk(geo, chunk, ws)
                x = ch.distances()[-1]
                acc.index_add_(0, ch.pixel, _neg_log_keep(x, s.cutoff).view(-1), alpha=-1.0)
        acc = acc[:-1].clamp_max_(0.0)  # Σ_f log(1 − D'_f) per pixel
        ctx.save_for_backward(tri, acc)
        ctx.plan, ctx.settings = plan, s
        return torch.expm1(acc).neg_().add_(0.0).view(s.B, s.H, s.W)  # + 0.0 turns −0 into 0

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        tri, acc = ctx.saved_tensors
        s: _Settings = ctx.settings
        plan: _Plan = ctx.plan
        grad_tri = torch.zeros_like(tri)
        if not plan.chunks:
            return grad_tri, None, None, None
        # silhouette = 1 − exp(acc): dsil/dx_f = exp(acc)·sigmoid(x_f) for pairs above the cutoff.
        gpix = torch.zeros(acc.shape[0] + 1, dtype=tri.dtype, device=tri.device)  # + dummy
        torch.mul(grad_out.reshape(-1).to(tri.dtype), torch.exp(acc), out=gpix[:-1])
        geo = _Geometry(tri, plan, s)
        ws = _Workspace(s.max_pairs, tri.dtype, tri.device)
        sums = torch.empty(4, 3, plan.face.shape[0], dtype=tri.dtype, device=tri.device)
        for chunk in plan.chunks:
            _chunk_sums(_Chunk(geo, chunk, ws), gpix, s.cutoff, sums[:, :, chunk[0] : chunk[1]])
        # Per edge: Σ g·r and Σ g·t·r with r = p − closest = c·n + (s − clamp)·u, t = clamp/ℓ.
        gc, ge, gct, get = sums
        ux, uy = geo.ux, geo.uy
        r = torch.stack([ge * ux - gc * uy, gc * ux + ge * uy])  # (2, 3, N)
        rt = torch.stack([get * ux - gct * uy, gct * ux + get * uy]) * geo.inv_len
        # ∂d²/∂a = −2r(1 − t), ∂d²/∂b = −2rt; vertex k is a of edge k and b of edge k − 1.
        grad = (r - rt + torch.roll(rt, 1, 1)).mul_(-2.0 * s.scale)  # (2, 3, N), CCW vertex order
        swap = (grad[:, 2] - grad[:, 1]).mul_(geo.flip)  # back to the faces' own vertex order
        grad[:, 1].add_(swap)
        grad[:, 2].sub_(swap)
        grad_tri.index_add_(0, plan.face, grad.permute(2, 1, 0))
        return grad_tri, None, None, None


def _chunk_sums(ch: _Chunk, gpix: torch.Tensor, cutoff: float, out: torch.Tensor) -> None:
    """Write the per-edge sums ``Σ g·c``, ``Σ g·e``, ``Σ g·c·clamp``, ``Σ g·e·clamp`` into ``out``.

    ``e = s − clamp(s, 0, ℓ)``; ``g`` is dL/d(d²) on each pair's nearest edge and 0 on the other two;
    ``out`` is ``(4, 3, n)``.
    """
    c, sp, sc, d2, cmin, d2min, x = ch.distances()
    g = gpix.index_select(0, ch.pixel).view(ch.pair_shape)
    # sigmoid(x) > ε ⇔ the pair is above the cutoff; x = ±d² (+ inside) turns dL/dx into dL/d(d²).
    sig = torch.nn.functional.threshold(torch.sigmoid(x, out=ch.ws.pair(3, ch.pair_shape)), cutoff, 0.0, True)
    g.mul_(sig).mul_(cmin.sign_())
    # One-hot nearest edge, the first one on ties: d2min − d2 ≤ 0, so its sign + 1 ∈ {0, 1}.
    nearest = torch.sub(d2min, d2, out=d2).sign_().add_(1.0)
    nearest[1].addcmul_(nearest[1], nearest[0], value=-1.0)
    torch.add(nearest[0], nearest[1], out=nearest[2]).neg_().add_(1.0)
    nearest.mul_(g)
    c.mul_(nearest)
    sp.mul_(nearest)
    torch.sum(c, (1, 2), out=out[0])
    torch.sum(sp, (1, 2), out=out[1])
    torch.sum(c.mul_(sc), (1, 2), out=out[2])
    torch.sum(sp.mul_(sc), (1, 2), out=out[3])
