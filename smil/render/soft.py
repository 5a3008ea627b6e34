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
at most ``max_pairs_per_chunk`` (pixel, face) pairs, each a dense ``(3 edges, h, w, tiles)`` block
padded to its largest tile; the chunks minimise ``CHUNK_COST_PAIRS × chunks + padded pairs`` (a
chunk costs about 80 operator calls: on a GPU, where they dominate, a few large chunks; on a CPU,
little padding). Planning reads the device once per call (a histogram of tile shapes). A compiled
caller traces everything before that read (projection, culling, the histogram); the chunks
themselves can be compiled too (``compile_options``), with dynamic shapes.
Nothing of size pixels × faces is ever stored: the forward pass keeps the per-pixel log-sum and the
per-tile edge data, and the backward pass recomputes each chunk, so peak memory is
``O(B·H·W + faces + max_pairs_per_chunk)`` whatever the mesh and image size.

Faces crossing the camera plane are dropped, not clipped. A vertex exactly on the camera plane
(``z = 0``) gives non-finite gradients through the projection even though its faces are culled;
images left out with ``image_mask`` give none.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from smil.errors import ConfigError, ShapeMismatchError
from smil.geometry.camera import project

__all__ = ["SoftSilhouetteRenderer", "soft_radius", "soft_silhouette"]

DEFAULT_MAX_PAIRS = {"cpu": 1 << 16, "other": 1 << 22}  # CPU: stay in cache; GPU: fewer launches
#: What one more chunk costs, in padded (pixel, tile) pairs of work: about 80 operator calls per
#: chunk (forward and backward) against tens of nanoseconds per pair on a CPU core, and about a
#: third of a nanosecond on a GPU, where the step is bound by kernel launches.
CHUNK_COST_PAIRS = {"cpu": 1 << 12, "other": 1 << 21}
_PACK_WINDOW = 64  # a chunk spans at most this many distinct tile shapes


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
    image_mask: torch.Tensor | None = None,
    check_faces: bool = True,
    compile_options: Mapping[str, Any] | None = None,
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
            at about 64 bytes per pair in float32 (the buffers are sized to the largest chunk
            drawn). Default 2¹⁶ on CPU (4 MiB, cache-sized), 2²² on other devices (256 MiB at
            most, fewer kernel launches).
        image_mask: optional ``(B,)`` booleans; an image where it is ``False`` is left empty and
            no gradient reaches its vertices or camera (which may then be degenerate). Drawing a
            subset this way needs no host-device synchronisation, unlike indexing the batch.
        check_faces: check that every face index lies in ``[0, V)`` (a read from the device);
            ``False`` for faces known to be valid, such as a loaded body model's.
        compile_options: evaluate the chunks through ``torch.compile(dynamic=True,
            **compile_options)`` (e.g. ``{}`` or ``{"backend": "aot_eager"}``): a few fused kernels per
            chunk instead of about 80 operators, for GPUs, where a step is bound by launches. One
            graph serves every chunk shape. No CUDA graphs (``mode="reduce-overhead"`` is refused:
            the shapes change every call). On a CPU the eager chunks, written into reused buffers,
            are faster (see ``docs/rendering.md``). The result is the same up to rounding.

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
    B = _check_inputs(vertices, faces, K, R, t, check_faces)
    out_dtype = vertices.dtype
    if vertices.dtype not in (torch.float32, torch.float64):
        vertices = vertices.float()
    faces = faces.to(device=vertices.device, dtype=torch.long)
    K, R, t = (x.to(device=vertices.device, dtype=vertices.dtype) for x in (K, R, t))
    draw = None
    if image_mask is not None:
        draw = _check_image_mask(image_mask, B, vertices.device)
        # Images left out stay in the graph without a gradient: a degenerate camera's projection
        # (depth 0) would otherwise send 0 · ∞ = NaN back to the shared inputs.
        vertices, K, R, t = (_gate(x, draw, n) for x, n in ((vertices, 2), (K, 2), (R, 2), (t, 1)))

    # Up to the plan's read from the device, every shape is known in advance: a compiled caller
    # traces this part into its own graph; the rest runs as it is (see _render).
    uv, z = project(vertices, K, R, t, return_depth=True)  # (B, V, 2), (B, V)
    with torch.no_grad():
        uvz = torch.cat([uv, z.unsqueeze(-1)], -1)  # (B, V, 3)
        corners = uvz.index_select(1, faces.flatten()).view(B, faces.shape[0], 3, 3)  # (B, F, corner, uvz)
        keep, boxes = _cull(corners, H, W, soft_radius(sigma, cutoff), near, backface_culling)
        if draw is not None:
            keep &= draw[:, None]
        census = _TileCensus.of(keep, boxes, box_size)
    settings = (H, W, B, sigma, cutoff, box_size, max_pairs_per_chunk)
    return _render(uv, faces, census, settings, compile_options, out_dtype)


# Never traced by torch.compile (a compiled caller runs it as it is): its work is planned on the host
# from the tile census, whose sizes change every call.
@torch.compiler.disable
def _render(
    uv: torch.Tensor, faces: torch.Tensor, census: _TileCensus, settings: tuple, compile_options: Mapping | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    compiled = chunk_kernels(compile_options)
    s = _Settings(*settings, uv.device)
    plan = _Plan(census, s)
    # The differentiable part: every tile's projected triangle, (T, 3, 2), in the plan's order.
    vid = faces.index_select(0, plan.face)  # (T, 3)
    tri = uv.reshape(-1, 2).index_select(0, (vid + (plan.batch * uv.shape[1])[:, None]).view(-1)).view(-1, 3, 2)
    return _SoftSilhouetteFn.apply(tri, plan, s, compiled).to(out_dtype)


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
    vertices: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
    check_faces: bool = True,
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
    if check_faces and faces.numel() and not _in_range(faces, V):
        raise ShapeMismatchError(f"faces: indices must lie in [0, {V}) for {V} vertices")
    for name, x, trailing in (("K", K, (3, 3)), ("R", R, (3, 3)), ("t", t, (3,))):
        lead = tuple(x.shape[: x.ndim - len(trailing)])
        if tuple(x.shape[x.ndim - len(trailing):]) != trailing or lead not in ((), (B,)):
            dims = ", ".join(str(d) for d in trailing)
            raise ShapeMismatchError(
                f"{name}: expected shape ({B}, {dims}) or ({dims}), got {tuple(x.shape)}"
            )
    return B


def _in_range(faces: torch.Tensor, V: int) -> bool:
    lo, hi = torch.aminmax(faces)
    lo, hi = torch.stack([lo, hi]).tolist()  # one read from the device
    return lo >= 0 and hi < V


def _check_image_mask(image_mask: torch.Tensor, B: int, device: torch.device) -> torch.Tensor:
    if image_mask.shape != (B,) or image_mask.is_floating_point() or image_mask.is_complex():
        raise ShapeMismatchError(
            f"image_mask: expected ({B},) booleans, got {image_mask.dtype} {tuple(image_mask.shape)}"
        )
    return image_mask.to(device=device, dtype=torch.bool)


def _gate(x: torch.Tensor, draw: torch.Tensor, trailing: int) -> torch.Tensor:
    """``x`` where ``draw`` (per image), a constant copy elsewhere; unbatched ``x`` is left as is."""
    if x.ndim == trailing or not x.requires_grad:
        return x
    return torch.where(draw.view(-1, *([1] * trailing)), x, x.detach())


def _cull(
    corners: torch.Tensor, H: int, W: int, radius: float, near: float, backface_culling: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Faces to draw ``(B, F)`` and their inclusive pixel boxes ``(4, B, F)``: x0, y0, x1, y1.

    ``corners``: ``(B, F, 3, 3)``, the pixel coordinates ``u, v`` and depth ``z`` of each face's
    three corners.
    """
    u, v, z = corners.unbind(-1)  # (B, F, 3) each
    keep = (z.amin(-1) > near) & torch.isfinite(corners[..., :2]).all(-1).all(-1)
    box = []
    for c, size in ((u, W), (v, H)):
        lo = c.amin(-1).sub_(radius).clamp_(0, size).ceil_()
        hi = c.amax(-1).add_(radius).clamp_(-1, size - 1).floor_()
        keep &= hi >= lo  # also False where NaN
        box += [lo.nan_to_num_(0), hi.nan_to_num_(-1)]
    if backface_culling:
        u0, u1, u2 = u.unbind(-1)
        v0, v1, v2 = v.unbind(-1)
        keep &= (u1 - u0) * (v2 - v0) - (v1 - v0) * (u2 - u0) <= 0
    return keep, torch.stack([box[0], box[2], box[1], box[3]]).long()


# --------------------------------------------------------------------------------------------
# Work plan: face boxes → tiles → chunks of equally padded tiles


class _Settings:
    """Per-call constants shared by the forward and backward passes."""

    def __init__(
        self, H: int, W: int, B: int, sigma: float, cutoff: float, box_size: int, max_pairs: int,
        device: torch.device,
    ) -> None:
        self.H, self.W, self.B = H, W, B
        self.scale = 1.0 / math.sqrt(sigma)  # pixels → units of sqrt(σ), where x = ±d²
        self.cutoff = cutoff
        self.box_size = box_size
        self.max_pairs = max_pairs
        self.chunk_cost = CHUNK_COST_PAIRS["cpu" if device.type == "cpu" else "other"]


class _TileCensus(NamedTuple):
    """How the faces drawn split into tiles: ``keep`` ``(B·F,)``, each face box's origin ``lo`` and
    extent ``ext`` ``(2, B·F)`` (x, y), its tiles per axis ``ntile`` ``(2, B·F)``, and ``summary``:
    the histogram of tile shapes (index ``h·(box_size + 1) + w``) and the number of faces drawn.
    Shapes known in advance: no read from the device."""

    keep: torch.Tensor
    lo: torch.Tensor
    ext: torch.Tensor
    ntile: torch.Tensor
    summary: torch.Tensor
    faces: int

    @staticmethod
    def of(keep: torch.Tensor, boxes: torch.Tensor, size: int) -> _TileCensus:
        F = keep.shape[1]
        keep = keep.flatten()  # (B·F,)
        lo, hi = boxes[:2].flatten(1), boxes[2:].flatten(1)  # (2, B·F): x, y
        ext = torch.where(keep, hi - lo + 1, 1)  # (2, B·F): w, h
        ntile = torch.div(ext + size - 1, size, rounding_mode="floor")
        last = ext - (ntile - 1) * size  # the last column's width, the last row's height
        full = ntile - 1
        # A face's tiles: full_x·full_y of size × size, full_y of size × last_w (last column),
        # full_x of last_h × size (last row) and one last_h × last_w; shape key h·(size + 1) + w.
        keys = torch.stack([
            torch.full_like(last[0], size * (size + 1) + size), size * (size + 1) + last[0],
            last[1] * (size + 1) + size, last[1] * (size + 1) + last[0],
        ])
        count = torch.stack([full[0] * full[1], full[1], full[0], torch.ones_like(full[0])]) * keep
        hist = torch.zeros((size + 1) ** 2, dtype=count.dtype, device=keep.device)
        hist.index_add_(0, keys.flatten(), count.flatten())
        return _TileCensus(keep, lo, ext, ntile, torch.cat([hist, keep.sum().view(1)]), F)


class _Plan:
    """Face tiles sorted by shape, and the chunks ``(start, end, h, w)`` that pack them.

    The device is read once: the census's histogram of tile shapes (and the number of faces drawn),
    from which the host knows how many tiles there are and packs the chunks; everything else is
    computed on the device with shapes known in advance.
    """

    def __init__(self, census: _TileCensus, s: _Settings) -> None:
        size, dev = s.box_size, census.keep.device
        keep, lo, ext, ntile, F = census.keep, census.lo, census.ext, census.ntile, census.faces
        summary = census.summary.tolist()  # the one read from the device
        shapes, drawn = summary[:-1], summary[-1]
        T = sum(shapes)
        self.chunks = _pack(shapes, size, s.max_pairs, s.chunk_cost)
        tiles = (ntile[0] * ntile[1]) * keep  # (B·F,)
        owner = torch.repeat_interleave(torch.arange(keep.shape[0], device=dev), tiles, output_size=T)
        origin, extent = lo.index_select(1, owner), ext.index_select(1, owner)  # (2, T)
        if T > drawn:  # some faces are split into tiles
            first = (torch.cumsum(tiles, 0) - tiles).index_select(0, owner)
            k = torch.arange(T, device=dev) - first  # tile number within its face
            nx = ntile[0].index_select(0, owner)
            sub = torch.stack([k % nx, torch.div(k, nx, rounding_mode="floor")])
            end = origin + extent
            origin = origin + sub * size
            extent = (end - origin).clamp_(max=size)
        batch = torch.div(owner, F, rounding_mode="floor")
        # Sort by height, then width, then position (image, row, column): memory locality for the
        # scatter into the image and the gather from it.
        shape = extent[1] * (size + 1) + extent[0]
        where = (batch * s.H + origin[1]) * s.W + origin[0]
        order = torch.argsort(shape * (s.B * s.H * s.W) + where)
        owner = owner.index_select(0, order)
        self.batch = batch.index_select(0, order)  # (T,) image of each tile
        self.face = owner - self.batch * F  # (T,) mesh face of each tile
        self.origin = origin.index_select(1, order)  # (2, T): x0, y0 of each tile
        self.extent = extent.index_select(1, order)  # (2, T): w, h of each tile


def _pack(shapes: list[int], size: int, max_pairs: int, chunk_cost: int) -> list[tuple[int, int, int, int]]:
    """Chunks ``(start, end, h, w)`` over the shape-sorted tiles, given the number of tiles of each
    shape (index ``h·(size + 1) + w``).

    A chunk pads its tiles to its largest height and width and holds at most ``max_pairs`` padded
    pairs. Runs of consecutive shapes are chosen by dynamic programming to minimise
    ``chunk_cost × chunks + padded pairs``; a run is cut into chunks of equal tile counts.
    """
    groups = [(divmod(key, size + 1), n) for key, n in enumerate(shapes) if n]
    m = len(groups)
    best, cut = [0.0] + [math.inf] * m, [0] * (m + 1)
    for j in range(1, m + 1):
        h, w, n = groups[j - 1][0][0], 0, 0  # h grows with the key: the run's last group has the largest
        for i in range(j, max(0, j - _PACK_WINDOW), -1):
            w, n = max(w, groups[i - 1][0][1]), n + groups[i - 1][1]
            cost = best[i - 1] + chunk_cost * -(-n // (max_pairs // (h * w))) + n * h * w
            if cost < best[j]:
                best[j], cut[j] = cost, i - 1
    runs, j = [], m
    while j > 0:
        runs.append((cut[j], j))
        j = cut[j]
    chunks: list[tuple[int, int, int, int]] = []
    start = 0
    for i, j in reversed(runs):
        run = groups[i:j]
        n = sum(c for _, c in run)
        h, w = run[-1][0][0], max(hw[1] for hw, _ in run)
        k = -(-n // (max_pairs // (h * w)))
        bounds = [start + n * q // k for q in range(k + 1)]
        chunks += _split(run, start, bounds)
        start += n
    return chunks


def _split(run: list[tuple[tuple[int, int], int]], start: int, bounds: list[int]) -> list[tuple[int, int, int, int]]:
    """The chunks ``[bounds[q], bounds[q + 1])`` of a run of shape groups that begins at tile
    ``start``, each padded to the largest height and width among its own tiles."""
    out = []
    g, pos = 0, start  # current group and the first tile of it
    for a, b in zip(bounds[:-1], bounds[1:]):
        h = w = 0
        while g < len(run) and pos < b:
            (gh, gw), n = run[g]
            h, w = max(h, gh), max(w, gw)
            if pos + n > b:  # the group continues in the next chunk
                break
            pos += n
            g += 1
        out.append((a, b, h, w))
    return out


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


class _Grid:
    """Per call: the chunk grids' row and column indices ``(size, 1)`` (``size = max(box_size, 2)``),
    their σ-scaled coordinates, the image width and size ``H·W`` and the dummy pixel's index past the
    images, as device tensors (no copies from the host in the chunks)."""

    def __init__(self, s: _Settings, dtype: torch.dtype, device: torch.device) -> None:
        itype = torch.int32 if s.B * s.H * s.W < 2**29 else torch.int64
        self.index = torch.arange(max(s.box_size, 2), device=device, dtype=itype)[:, None]
        self.coord = self.index.to(dtype) * s.scale
        self.W = torch.full((), s.W, dtype=itype, device=device)
        self.HW = torch.full((), s.H * s.W, dtype=itype, device=device)
        self.dummy = torch.full((), s.B * s.H * s.W, dtype=itype, device=device)

    def chunk(self, h: int, w: int) -> tuple[torch.Tensor, ...]:
        """An ``h × w`` chunk's grid (see :meth:`_Geometry.tiles`): views."""
        return self.index[:h], self.index[:w], self.coord[:h], self.coord[:w], self.W, self.dummy


class _Geometry:
    """Per-tile edge data in local, σ-scaled units (tile origin at 0), vertices made CCW.

    From the tiles' triangles ``tri (N, 3, 2)``, origins and extents ``(2, N)`` and images ``(N,)``;
    ``W``, ``HW``: the grid's image width and size (device scalars of the index type)."""

    def __init__(
        self, tri: torch.Tensor, origin: torch.Tensor, extent: torch.Tensor, batch: torch.Tensor,
        W: torch.Tensor, HW: torch.Tensor, scale: float,
    ) -> None:
        dt = tri.dtype
        xy = tri.permute(2, 1, 0).contiguous()  # (2, 3, N): the tiles' triangles, in plan order
        vx = (xy[0] - origin[0].to(dt)).mul_(scale)  # (3, N), local σ-scaled coordinates
        vy = (xy[1] - origin[1].to(dt)).mul_(scale)
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
        itype = W.dtype
        self.base = (batch * HW + origin[1] * W + origin[0]).to(itype)
        self.last_x = (extent[0] - 1).to(itype)  # last column and row inside each tile
        self.last_y = (extent[1] - 1).to(itype)

    def tiles(self, grid: tuple[torch.Tensor, ...], a: int | None = None, b: int | None = None) -> _Tiles:
        """The edge data of tiles ``[a, b)`` (all by default), views, on a chunk's ``grid``: row and
        column indices ``(h, 1)``, ``(w, 1)``, their σ-scaled coordinates, the image width and the
        dummy pixel's index."""
        k = slice(a, b)
        return _Tiles(
            self.ux[:, k], self.uy[:, k], self.c0[:, k], self.s0[:, k], self.length[:, k],
            self.zero[:, k], self.base[k], self.last_x[k], self.last_y[k], *grid,
        )

    def gradient(self, sums: torch.Tensor, scale: float) -> torch.Tensor:
        """The loss's gradient ``(N, 3, 2)`` with respect to each tile's triangle, in the faces' own
        vertex order, from the per-edge sums ``(4, 3, N)`` (:func:`_chunk_sums`)."""
        # Per edge: Σ g·r and Σ g·t·r with r = p − closest = c·n + (s − clamp)·u, t = clamp/ℓ.
        gc, ge, gct, get = sums
        ux, uy = self.ux, self.uy
        r = torch.stack([ge * ux - gc * uy, gc * ux + ge * uy])  # (2, 3, N)
        rt = torch.stack([get * ux - gct * uy, gct * ux + get * uy]) * self.inv_len
        # ∂d²/∂a = −2r(1 − t), ∂d²/∂b = −2rt; vertex k is a of edge k and b of edge k − 1.
        grad = (r - rt + torch.roll(rt, 1, 1)).mul_(-2.0 * scale)  # (2, 3, N), CCW vertex order
        swap = (grad[:, 2] - grad[:, 1]).mul_(self.flip)  # back to the faces' own vertex order
        grad[:, 1].add_(swap)
        grad[:, 2].sub_(swap)
        return grad.permute(2, 1, 0)


class _Tiles(NamedTuple):
    """One chunk's edge data, all tensors whose shapes carry the chunk's size: per edge and tile
    ``(3, n)``, per tile ``(n,)``, the grid's row and column indices ``(h, 1)``, ``(w, 1)`` and
    σ-scaled coordinates, the image width and the dummy pixel's index."""

    ux: torch.Tensor
    uy: torch.Tensor
    c0: torch.Tensor
    s0: torch.Tensor
    length: torch.Tensor
    zero: torch.Tensor
    base: torch.Tensor
    last_x: torch.Tensor
    last_y: torch.Tensor
    row_index: torch.Tensor
    col_index: torch.Tensor
    row_coord: torch.Tensor
    col_coord: torch.Tensor
    W: torch.Tensor
    dummy: torch.Tensor


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
    """One chunk of tiles on an ``h × w`` pixel grid. Its per-pair tensors are written into the
    workspace's buffers, or into fresh tensors without one (``ws=None``: the form that
    ``torch.compile`` fuses)."""

    def __init__(self, tiles: _Tiles, ws: _Workspace | None) -> None:
        h, w, n = tiles.row_index.shape[0], tiles.col_index.shape[0], tiles.base.shape[0]
        self.tiles, self.ws = tiles, ws
        self.edge_shape, self.pair_shape = (3, h, w, n), (h, w, n)
        # Flat pixel index of every pair. Rows and columns past a tile's extent (padding) point at
        # a dummy pixel after the last image, whose value is dropped and whose gradient is 0.
        pad_x = torch.sub(tiles.col_index, tiles.last_x).clamp_(0, 1)  # (w, n), 1 on padding
        pad_y = torch.sub(tiles.row_index, tiles.last_y).clamp_(0, 1)
        col = torch.addcmul(tiles.col_index, pad_x, tiles.dummy)
        row = torch.addcmul(tiles.base, tiles.row_index, tiles.W).addcmul_(pad_y, tiles.dummy)
        self.pixel = torch.add(row[:, None, :], col[None, :, :]).clamp_(max=tiles.dummy).view(-1)

    def edge(self, i: int) -> torch.Tensor | None:
        return None if self.ws is None else self.ws.edge(i, self.edge_shape)

    def pair(self, i: int) -> torch.Tensor | None:
        return None if self.ws is None else self.ws.pair(i, self.pair_shape)

    def distances(self) -> tuple[torch.Tensor, ...]:
        """``c``, ``s − clamp(s, 0, ℓ)``, ``clamp(s, 0, ℓ)``, ``d²`` per edge ``(3, h, w, n)``;
        ``cmin`` (> 0 inside), ``d²min`` and ``x = ±d²min`` per pair ``(h, w, n)``."""
        tl, E = self.tiles, self.edge_shape
        j, i = tl.col_coord[None], tl.row_coord[None]  # (1, w, 1), (1, h, 1)
        ux, uy = tl.ux[:, None], tl.uy[:, None]  # (3, 1, n)
        # Row and column terms, written into contiguous (3, h, n) / (3, w, n) tensors: left to
        # itself, broadcasting picks a tile-outermost layout that slows every op after it.
        row = torch.empty(2, 3, E[1], E[3], dtype=ux.dtype, device=ux.device)  # c, s: (3, h, n)
        col = torch.empty(2, 3, E[2], E[3], dtype=ux.dtype, device=ux.device)  # c, s: (3, w, n)
        torch.addcmul(tl.c0[:, None], i, ux, out=row[0])
        torch.addcmul(tl.s0[:, None], i, uy, out=row[1])
        torch.mul(j, uy, out=col[0]).neg_()
        torch.mul(j, ux, out=col[1])
        c = torch.add(row[0, :, :, None], col[0, :, None], out=self.edge(0))
        cmin = torch.minimum(c[0], c[1], out=self.pair(0))
        cmin = torch.minimum(cmin, c[2], out=cmin)
        sp = torch.add(row[1, :, :, None], col[1, :, None], out=self.edge(1))
        sc = torch.clamp(sp, tl.zero[:, None, None], tl.length[:, None, None], out=self.edge(2))
        sp.sub_(sc)  # the part of s beyond the segment
        d2 = torch.mul(c, c, out=self.edge(3))
        d2.addcmul_(sp, sp)
        d2min = torch.minimum(d2[0], d2[1], out=self.pair(1))
        d2min = torch.minimum(d2min, d2[2], out=d2min)
        x = torch.copysign(d2min, cmin, out=self.pair(2))
        return c, sp, sc, d2, cmin, d2min, x


def _neg_log_keep(x: torch.Tensor, cutoff: float) -> torch.Tensor:
    """``−log(1 − D')`` computed in place of ``x = ±d²/σ``: exactly 0 below the cutoff.

    Above the cutoff ``1 − D' = (1 − D)/(1 − ε)`` with ``1 − D = 1/(1 + eˣ)``, hence
    ``−log(1 − D') = log(max((1 − ε)(eˣ + 1), 1))``; the ``max`` is the cutoff.
    """
    return x.exp_().add_(1.0).mul_(1.0 - cutoff).clamp_min_(1.0).log_()


def _draw_chunk(acc: torch.Tensor, tiles: _Tiles, ws: _Workspace | None, cutoff: float) -> None:
    """Add the chunk's ``Σ_f log(1 − D'_f)`` to the flat image ``acc`` (``+ 1`` dummy pixel)."""
    ch = _Chunk(tiles, ws)
    x = ch.distances()[-1]
    acc.index_add_(0, ch.pixel, _neg_log_keep(x, cutoff).view(-1), alpha=-1.0)


class _SoftSilhouetteFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tri, plan, s, compiled):  # type: ignore[override]
        acc = torch.zeros(s.B * s.H * s.W + 1, dtype=tri.dtype, device=tri.device)  # + dummy
        grid = _Grid(s, tri.dtype, tri.device)
        geo = None
        if compiled is None and plan.chunks:
            # The per-tile edge data (a few hundred bytes per tile) is kept for the backward pass.
            geo = _Geometry(tri, plan.origin, plan.extent, plan.batch, grid.W, grid.HW, s.scale)
            ws = _Workspace(_largest(plan.chunks), tri.dtype, tri.device)
            for a, b, h, w in plan.chunks:
                _draw_chunk(acc, geo.tiles(grid.chunk(h, w), a, b), ws, s.cutoff)
        elif compiled is not None:  # each chunk's graph computes its edge data (again in the backward)
            for chunk in plan.chunks:
                compiled.draw(acc, _RawChunk.of(tri, plan, grid, chunk), s.scale, s.cutoff)
        acc = acc[:-1].clamp_max_(0.0)  # Σ_f log(1 − D'_f) per pixel
        ctx.save_for_backward(acc, tri if compiled is not None else None)
        ctx.plan, ctx.settings, ctx.geo, ctx.grid, ctx.compiled = plan, s, geo, grid, compiled
        ctx.tri_shape = tri.shape
        return torch.expm1(acc).neg_().add_(0.0).view(s.B, s.H, s.W)  # + 0.0 turns −0 into 0

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        acc, tri = ctx.saved_tensors
        s: _Settings = ctx.settings
        plan: _Plan = ctx.plan
        if not plan.chunks:
            return acc.new_zeros(ctx.tri_shape), None, None, None
        # silhouette = 1 − exp(acc): dsil/dx_f = exp(acc)·sigmoid(x_f) for pairs above the cutoff.
        gpix = torch.zeros(acc.shape[0] + 1, dtype=acc.dtype, device=acc.device)  # + dummy
        torch.mul(grad_out.reshape(-1).to(acc.dtype), torch.exp(acc), out=gpix[:-1])
        grid: _Grid = ctx.grid
        compiled: _CompiledChunks | None = ctx.compiled
        if compiled is None:
            geo: _Geometry = ctx.geo
            ws = _Workspace(_largest(plan.chunks), acc.dtype, acc.device)
            sums = torch.empty(4, 3, plan.face.shape[0], dtype=acc.dtype, device=acc.device)
            for a, b, h, w in plan.chunks:
                _chunk_sums(geo.tiles(grid.chunk(h, w), a, b), ws, gpix, s.cutoff, sums[:, :, a:b])
            grad = geo.gradient(sums, s.scale)
        else:  # a fresh result per chunk (a graph does not write into its inputs' views)
            grad = torch.cat([compiled.gradient(_RawChunk.of(tri, plan, grid, chunk), gpix, s.scale, s.cutoff)
                              for chunk in plan.chunks])
        return grad, None, None, None  # (N, 3, 2): per tile


def _largest(chunks: list[tuple[int, int, int, int]]) -> int:
    """Padded pairs of the largest chunk: the workspace's size."""
    return max((b - a) * h * w for a, b, h, w in chunks)


def _chunk_sums(
    tiles: _Tiles, ws: _Workspace | None, gpix: torch.Tensor, cutoff: float, out: torch.Tensor | None
) -> torch.Tensor:
    """The per-edge sums ``Σ g·c``, ``Σ g·e``, ``Σ g·c·clamp``, ``Σ g·e·clamp`` ``(4, 3, n)``, written
    into ``out`` when given.

    ``e = s − clamp(s, 0, ℓ)``; ``g`` is dL/d(d²) on each pair's nearest edge and 0 on the other two.
    """
    ch = _Chunk(tiles, ws)
    c, sp, sc, d2, cmin, d2min, x = ch.distances()
    g = gpix.index_select(0, ch.pixel).view(ch.pair_shape)
    # sigmoid(x) > ε ⇔ the pair is above the cutoff; x = ±d² (+ inside) turns dL/dx into dL/d(d²).
    sig = torch.nn.functional.threshold(torch.sigmoid(x, out=ch.pair(3)), cutoff, 0.0, True)
    g.mul_(sig).mul_(cmin.sign_())
    # One-hot nearest edge, the first one on ties: d2min − d2 ≤ 0, so its sign + 1 ∈ {0, 1}.
    nearest = torch.sub(d2min, d2, out=d2).sign_().add_(1.0)
    nearest[1].addcmul_(nearest[1], nearest[0], value=-1.0)
    torch.add(nearest[0], nearest[1], out=nearest[2]).neg_().add_(1.0)
    nearest.mul_(g)
    c.mul_(nearest)
    sp.mul_(nearest)
    if out is None:
        out = torch.empty(4, *ch.edge_shape[::3], dtype=c.dtype, device=c.device)
    torch.sum(c, (1, 2), out=out[0])
    torch.sum(sp, (1, 2), out=out[1])
    torch.sum(c.mul_(sc), (1, 2), out=out[2])
    torch.sum(sp.mul_(sc), (1, 2), out=out[3])
    return out


# --------------------------------------------------------------------------------------------
# Eager or compiled chunks


class _RawChunk(NamedTuple):
    """A chunk's tiles as planned: triangles ``(n, 3, 2)``, origins and extents ``(2, n)`` and images
    ``(n,)`` (views of the call's), its grid (:meth:`_Grid.chunk`, at least 2 × 2: a size of 1 would
    compile a graph of its own) and the image size ``H·W``. Every size is a tensor's: one graph with
    dynamic shapes serves all chunks."""

    tri: torch.Tensor
    origin: torch.Tensor
    extent: torch.Tensor
    batch: torch.Tensor
    grid: tuple[torch.Tensor, ...]
    HW: torch.Tensor

    @staticmethod
    def of(tri: torch.Tensor, plan: _Plan, grid: _Grid, chunk: tuple[int, int, int, int]) -> _RawChunk:
        a, b, h, w = chunk
        return _RawChunk(
            tri[a:b], plan.origin[:, a:b], plan.extent[:, a:b], plan.batch[a:b],
            grid.chunk(max(h, 2), max(w, 2)), grid.HW,
        )

    def geometry(self, scale: float) -> tuple[_Geometry, _Tiles]:
        W = self.grid[4]  # the image width (see _Grid.chunk)
        geo = _Geometry(self.tri, self.origin, self.extent, self.batch, W, self.HW, scale)
        return geo, geo.tiles(self.grid)


def _draw_raw_chunk(acc: torch.Tensor, raw: _RawChunk, scale: float, cutoff: float) -> None:
    """:func:`_draw_chunk` with the chunk's edge data computed here (in the compiled graph)."""
    _draw_chunk(acc, raw.geometry(scale)[1], None, cutoff)


def _raw_chunk_gradient(raw: _RawChunk, gpix: torch.Tensor, scale: float, cutoff: float) -> torch.Tensor:
    """The gradient ``(n, 3, 2)`` of the chunk's triangles, edge data and sums computed here."""
    geo, tiles = raw.geometry(scale)
    return geo.gradient(_chunk_sums(tiles, None, gpix, cutoff, None), scale)


class _CompiledChunks(NamedTuple):
    """The chunks' forward ``draw(acc, raw, scale, cutoff)`` and backward ``gradient(raw, gpix,
    scale, cutoff)``, compiled."""

    draw: Any
    gradient: Any


def _traced_for_every_chunk(compiled: Any) -> Any:
    """``compiled``, traced without duck sizing and with its float arguments (the settings) as
    constants. Duck sizing takes sizes that happen to be equal in the first chunk compiled (a grid of
    3 columns, like the 3 edges; as many rows as columns) for one size, and every chunk where they
    differ compiles another graph (a torch without the setting compiles those graphs, up to its
    recompilation limit, after which it runs eagerly). Floats traced as inputs cost every call a
    guard that makes a tensor of each and reads it back (seen on torch 2.11)."""
    import torch._dynamo.config as dynamo_config
    import torch.fx.experimental._config as shape_config

    floats = {"specialize_float": True} if hasattr(dynamo_config, "specialize_float") else {}
    duck = {"use_duck_shape": False} if hasattr(shape_config, "use_duck_shape") else {}

    def call(*args: Any) -> Any:
        with dynamo_config.patch(**floats), shape_config.patch(**duck):
            return compiled(*args)

    return call


def _or_eagerly(compiled: Any, eager: Any, what: str) -> Any:
    """``compiled``, or ``eager`` (the same function, uncompiled) from the first time the compiler
    fails on it (a warning says why; compilation fails before anything runs)."""
    failed: list[str] = []

    def call(*args: Any) -> Any:
        if not failed:
            try:
                return compiled(*args)
            except torch._dynamo.exc.BackendCompilerFailed as exc:
                cause = getattr(exc, "inner_exception", None) or exc
                failed.append(f"{type(cause).__name__}: {cause}")
                warnings.warn(
                    f"soft_silhouette: compiling the {what} failed, drawing them eagerly from now on "
                    f"({failed[0].splitlines()[0]})", RuntimeWarning, stacklevel=2,
                )
        return eager(*args)

    return call


@functools.lru_cache(maxsize=8)
def _compiled_chunks(options: tuple[tuple[str, Any], ...]) -> _CompiledChunks:
    opts = dict(options)
    return _CompiledChunks(*(
        _or_eagerly(_traced_for_every_chunk(torch.compile(f, dynamic=True, **opts)), f, what)
        for f, what in ((_draw_raw_chunk, "chunks"), (_raw_chunk_gradient, "chunks' gradients"))
    ))


def chunk_kernels(compile_options: Mapping[str, Any] | None) -> _CompiledChunks | None:
    """``None`` (the eager chunks, written into a reused workspace), or the chunks compiled by
    ``torch.compile(dynamic=True, **compile_options)``, cached per options: one graph each for
    every chunk shape (a chunk of one tile compiles one more)."""
    if compile_options is None:
        return None
    mode = compile_options.get("mode")
    if mode not in (None, "default", "max-autotune-no-cudagraphs"):
        raise ConfigError(
            f"expected a torch.compile mode without CUDA graphs for the renderer's chunks, whose shapes "
            f"change every call, got {mode!r}", field="compile_options.mode",
        )
    if "dynamic" in compile_options:
        raise ConfigError("the renderer's chunks always compile with dynamic shapes", field="compile_options.dynamic")
    return _compiled_chunks(tuple(sorted(compile_options.items())))
