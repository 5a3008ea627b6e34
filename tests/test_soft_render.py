"""Soft silhouettes: exact gradients, agreement with hard rasterisation, conventions, invariances."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from smil.body.io import load_model
from smil.errors import SmilError
from smil.render.raster import rasterize
from smil.render.soft import SoftSilhouetteRenderer, soft_radius, soft_silhouette

F64 = torch.float64


def rot_x(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=F64)


def rot_y(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=F64)


def pinhole(f: float, cx: float, cy: float) -> torch.Tensor:
    return torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], dtype=F64)


def icosphere(subdivisions: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit sphere, closed, outward (right-hand) winding."""
    p = (1 + 5**0.5) / 2
    verts = [[-1, p, 0], [1, p, 0], [-1, -p, 0], [1, -p, 0], [0, -1, p], [0, 1, p],
             [0, -1, -p], [0, 1, -p], [p, 0, -1], [p, 0, 1], [-p, 0, -1], [-p, 0, 1]]
    faces = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
             [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
             [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    verts = [list(np.asarray(v, float) / np.linalg.norm(v)) for v in verts]
    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}

        def mid(a: int, b: int) -> int:
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = (np.asarray(verts[a]) + np.asarray(verts[b])) / 2
                verts.append(list(m / np.linalg.norm(m)))
                cache[key] = len(verts) - 1
            return cache[key]

        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        faces = new
    return torch.tensor(verts, dtype=F64), torch.tensor(faces)


def tetrahedron() -> tuple[torch.Tensor, torch.Tensor]:
    verts = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=F64) - 0.3
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return verts, faces


def hard_mask(verts: torch.Tensor, faces: torch.Tensor, K, R, t, size_hw) -> np.ndarray:
    """Pixel centres covered by the projected triangles (the project's z-buffer rasteriser)."""
    cam = (verts @ R.T + t).numpy()
    H, W = size_hw
    return rasterize(cam, faces.numpy(), K.numpy(), (W, H)).mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def stick(fixtures_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    model = load_model(fixtures_dir / "models" / "SMILy_STICK.pkl")
    return torch.tensor(model["v_template"], dtype=F64), torch.tensor(model["f"].astype(np.int64))


# --------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("sigma, box_size, max_pairs", [(1.0, 32, 1 << 16), (0.3, 4, 64)])
def test_gradients_match_finite_differences(sigma: float, box_size: int, max_pairs: int) -> None:
    verts, faces = tetrahedron()
    torch.manual_seed(0)
    verts = (verts + 0.01 * torch.randn_like(verts))[None].requires_grad_()
    K = pinhole(20.0, 11.5, 9.5)[None].requires_grad_()
    R = rot_y(0.4)[None]
    t = torch.tensor([[0.05, -0.02, 3.0]], dtype=F64, requires_grad=True)
    weight = torch.rand(1, 20, 24, dtype=F64)  # a generic loss, so every pixel's gradient counts

    def loss(v, K, t):
        sil = soft_silhouette(v, faces, K, R, t, (20, 24), sigma=sigma, box_size=box_size,
                              max_pairs_per_chunk=max_pairs)
        return (sil * weight).sum()

    assert torch.autograd.gradcheck(loss, (verts, K, t), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradients_flow_through_a_batch_of_float32_cameras() -> None:
    verts, faces = icosphere(2)
    verts = verts.float()[None].repeat(2, 1, 1).requires_grad_()
    K = pinhole(40.0, 15.5, 15.5).float()
    t = torch.tensor([[0.0, 0.0, 3.0], [0.2, 0.0, 3.0]], requires_grad=True)
    sil = soft_silhouette(verts, faces, K, torch.eye(3), t, (32, 32))
    assert sil.dtype == torch.float32
    sil.sum().backward()
    assert torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0
    assert torch.isfinite(t.grad).all() and t.grad[:, 2].lt(0).all()  # farther away → smaller


# --------------------------------------------------------------------------------------------
# Agreement with the hard rasteriser


def test_sharp_silhouette_of_stick_insect_matches_hard_mask(stick) -> None:
    verts, faces = stick
    K, R, t = pinhole(307.2, 127.5, 127.5), rot_x(0.5), torch.tensor([0.0, 0.0, 2.5], dtype=F64)
    sil = soft_silhouette(verts[None], faces, K, R, t, (256, 256), sigma=1e-3)[0].numpy()
    mask = hard_mask(verts, faces, K, R, t, (256, 256))
    assert mask.sum() > 2000
    assert iou(sil > 0.5, mask) >= 0.98


def test_sharp_silhouette_of_sphere_matches_hard_mask_with_and_without_culling() -> None:
    verts, faces = icosphere(3)
    K, R, t = pinhole(150.0, 60.0, 67.5), rot_y(0.3), torch.tensor([0.1, -0.05, 3.0], dtype=F64)
    mask = hard_mask(verts, faces, K, R, t, (128, 128))
    for culling in (False, True):
        sil = soft_silhouette(verts[None], faces, K, R, t, (128, 128), sigma=1e-2, backface_culling=culling)
        assert iou(sil[0].numpy() > 0.5, mask) >= 0.98


def test_backface_culling_keeps_a_closed_mesh_outline() -> None:
    from scipy.ndimage import distance_transform_edt

    verts, faces = icosphere(3)
    K, R, t = pinhole(50.0, 31.5, 31.5), rot_x(0.2), torch.tensor([0.0, 0.0, 3.0], dtype=F64)
    full = soft_silhouette(verts[None], faces, K, R, t, (64, 64))[0]
    culled = soft_silhouette(verts[None], faces, K, R, t, (64, 64), backface_culling=True)[0]
    assert (culled <= full + 1e-12).all()  # fewer faces never add coverage
    mask = hard_mask(verts, faces, K, R, t, (64, 64))
    outside = torch.from_numpy(distance_transform_edt(~mask) > soft_radius(1.0) + 1)
    assert (full[outside] == 0).all() and (culled[outside] == 0).all()
    assert iou(culled.numpy() > 0.5, full.numpy() > 0.5) >= 0.95
    # Inside, the faces (≈ 2 px here) are small against σ, so one layer saturates less than two.
    inside = torch.from_numpy(distance_transform_edt(mask) > 3)
    assert full[inside].min() > 0.99 and culled[inside].min() > 0.75


# --------------------------------------------------------------------------------------------
# What the values mean


def test_lone_triangle_follows_the_sigmoid_of_squared_pixel_distance() -> None:
    # A big triangle whose left edge is the vertical line u = 20.3 (pixels), in a 40 × 64 image.
    K = pinhole(100.0, 0.0, 0.0)
    z = 10.0
    pixels = torch.tensor([[20.3, -100.0], [20.3, 300.0], [400.0, 100.0]], dtype=F64)
    verts = torch.cat([pixels * z / 100.0, torch.full((3, 1), z, dtype=F64)], 1)
    faces = torch.tensor([[0, 1, 2]])
    sigma, eps = 0.7, 1e-4
    sil = soft_silhouette(verts[None], faces, K, torch.eye(3, dtype=F64), torch.zeros(3, dtype=F64), (40, 64),
                          sigma=sigma, cutoff=eps)[0]
    for col in range(14, 28):
        d = col - 20.3  # signed distance to the edge, + inside
        D = 1 / (1 + math.exp(-math.copysign(d * d, d) / sigma))
        expected = max(D - eps, 0.0) / (1 - eps)
        assert sil[20, col].item() == pytest.approx(expected, abs=1e-9)
    assert 20.3 - 16 > soft_radius(sigma, eps)
    assert sil[20, 16].item() == 0.0  # beyond the support radius: exactly zero


def test_rows_are_image_v_and_columns_are_image_u_in_a_non_square_image() -> None:
    # A small triangle around the pixel centre (u, v) = (30, 10) of a 20 × 40 (H × W) image.
    z = 5.0
    K, R, t = pinhole(50.0, 0.0, 0.0), torch.eye(3, dtype=F64), torch.zeros(3, dtype=F64)
    offsets = torch.tensor([[-2.2, -1.3], [2.1, -1.2], [0.1, 2.4]], dtype=F64)
    tri2d = torch.tensor([[30.0, 10.0]], dtype=F64) + offsets
    verts = torch.cat([tri2d * z / 50.0, torch.full((3, 1), z, dtype=F64)], 1)
    face = torch.tensor([[0, 1, 2]])
    sil = soft_silhouette(verts[None], face, K, R, t, (20, 40), sigma=0.5)[0]
    assert sil.shape == (20, 40)
    mask = hard_mask(verts, face, K, R, t, (20, 40))
    assert mask.sum() >= 8 and mask[10, 30] and sil[10, 30] > 0.9
    assert iou(sil.numpy() > 0.5, mask) == 1.0


def test_output_is_a_probability_and_keeps_the_dtype(stick) -> None:
    verts, faces = stick
    K, R, t = pinhole(100.0, 47.5, 47.5), rot_x(1.0), torch.tensor([0.0, 0.0, 2.5], dtype=F64)
    for dtype in (torch.float32, F64):
        sil = soft_silhouette(verts[None].to(dtype), faces, K, R, t, (96, 96), sigma=2.0)
        assert sil.dtype == dtype and sil.shape == (1, 96, 96)
        assert sil.min() >= 0.0 and sil.max() <= 1.0
        assert sil.max() > 0.99 and (sil == 0).float().mean() > 0.3  # solid inside, empty far away


def test_mesh_behind_the_camera_renders_empty_with_zero_gradient() -> None:
    verts, faces = icosphere(2)
    verts = verts[None].clone().requires_grad_()
    K = pinhole(50.0, 15.5, 15.5)
    sil = soft_silhouette(verts, faces, K, torch.eye(3, dtype=F64), torch.tensor([0.0, 0.0, -3.0], dtype=F64),
                          (32, 32))
    assert sil.shape == (1, 32, 32) and (sil == 0).all()
    sil.sum().backward()
    assert (verts.grad == 0).all()


def test_mesh_outside_the_image_and_empty_faces_render_empty() -> None:
    verts, faces = icosphere(1)
    K = pinhole(50.0, 15.5, 15.5)
    far_right = torch.tensor([10.0, 0.0, 3.0], dtype=F64)
    assert (soft_silhouette(verts[None], faces, K, torch.eye(3, dtype=F64), far_right, (32, 32)) == 0).all()
    none = torch.zeros(0, 3, dtype=torch.long)
    assert (soft_silhouette(verts[None], none, K, torch.eye(3, dtype=F64), far_right, (32, 32)) == 0).all()


def test_degenerate_triangles_stay_finite() -> None:
    verts = torch.tensor([[[-0.5, 0.0, 3.0], [0.5, 0.0, 3.0], [0.5, 0.0, 3.0], [0.0, 0.5, 3.0]]],
                         dtype=F64, requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [0, 1, 1], [0, 1, 3]])  # a zero-length edge, a segment, a triangle
    sil = soft_silhouette(verts, faces, pinhole(30.0, 15.5, 15.5), torch.eye(3, dtype=F64),
                          torch.zeros(3, dtype=F64), (32, 32))
    sil.sum().backward()
    assert torch.isfinite(sil).all() and torch.isfinite(verts.grad).all()
    assert sil.max() > 0.9


# --------------------------------------------------------------------------------------------
# Invariances


def test_batch_equals_separate_renders(stick) -> None:
    verts, faces = stick
    verts2 = torch.stack([verts, verts * 1.1 + 0.05])
    K = torch.stack([pinhole(150.0, 63.5, 63.5), pinhole(120.0, 60.0, 70.0)])
    R = torch.stack([rot_x(0.5), rot_y(0.7) @ rot_x(1.2)])
    t = torch.tensor([[0.0, 0.0, 2.5], [0.1, 0.0, 3.0]], dtype=F64)
    both = soft_silhouette(verts2, faces, K, R, t, (96, 128))
    for b in range(2):
        alone = soft_silhouette(verts2[b : b + 1], faces, K[b], R[b], t[b], (96, 128))
        assert torch.allclose(both[b], alone[0], atol=1e-12)


def test_tiling_and_chunking_do_not_change_the_image_or_gradient(stick) -> None:
    verts, faces = stick
    cube_v = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=F64) * 0.4
    cube_f = torch.tensor([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                           [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    K, R, t = pinhole(60.0, 31.5, 31.5), rot_y(0.5) @ rot_x(0.4), torch.tensor([0.0, 0.1, 2.0], dtype=F64)
    for v, f in ((verts, faces), (cube_v, cube_f)):  # tiny faces; faces far bigger than the tiles
        results = []
        for box_size, max_pairs in ((32, 1 << 16), (8, 1024), (5, 1 << 20)):
            vv = v[None].clone().requires_grad_()
            sil = soft_silhouette(vv, f, K, R, t, (64, 64), box_size=box_size, max_pairs_per_chunk=max_pairs)
            (sil * torch.linspace(0, 1, 64)).sum().backward()
            results.append((sil.detach(), vv.grad))
        for sil, grad in results[1:]:
            assert (sil - results[0][0]).abs().max() <= 1e-6
            assert torch.allclose(grad, results[0][1], rtol=1e-9, atol=1e-9 * results[0][1].abs().max())


def value_reads(fn) -> int:
    """Values read back from tensors (``item``) in one call of ``fn``, compiled graphs' guards included."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.name == "aten::_local_scalar_dense" for e in prof.events())


def test_compiled_chunks_draw_the_same_image_and_gradient_with_one_graph_for_every_chunk_shape(stick) -> None:
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    graphs: list[int] = []

    def count(gm, example_inputs):  # aot_eager that counts the graphs it is given
        graphs.append(len(gm.graph.nodes))
        return make_boxed_func(gm.forward)

    backend = aot_autograd(fw_compiler=count)
    verts, faces = stick
    K, R = pinhole(60.0, 31.5, 31.5), rot_y(0.5) @ rot_x(0.4)
    # Small tiles and chunks: chunks of many shapes (tile heights, widths and counts) in each call.
    settings = dict(box_size=8, max_pairs_per_chunk=1024)
    torch._dynamo.reset()
    for n, shift in enumerate((0.1, -0.05, 0.2)):  # each camera gives other chunks
        t = torch.tensor([0.0, shift, 2.0], dtype=F64)
        results = []
        for compile_options in (None, {"backend": backend}):
            vv = verts[None].clone().requires_grad_()
            sil = soft_silhouette(vv, faces, K, R, t, (64, 64), compile_options=compile_options, **settings)
            (sil * torch.linspace(0, 1, 64)).sum().backward()
            results.append((sil.detach(), vv.grad))
        (eager, eager_grad), (compiled, compiled_grad) = results
        if n == 2:  # the settings are constants of the graphs: calling them reads nothing back
            reads = [value_reads(lambda: soft_silhouette(verts[None].clone().requires_grad_(), faces, K, R, t,
                                                         (64, 64), compile_options=options, **settings).sum()
                                 .backward()) for options in (None, {"backend": backend})]
            assert reads[1] == reads[0], reads
        assert float(eager.amax()) > 0.5
        assert (compiled - eager).abs().max() <= 1e-12
        assert torch.allclose(compiled_grad, eager_grad, rtol=1e-9, atol=1e-12 * eager_grad.abs().max())
        if n == 0:
            first = len(graphs)
            assert first == 2, graphs  # drawing and summing
    assert len(graphs) == first  # no recompilation for other chunk shapes


@pytest.mark.parametrize("backface_culling", [False, True])
def test_a_compiled_caller_traces_the_renderer_up_to_its_plan(stick, backface_culling) -> None:
    """Projection, culling and the tile census (shapes known in advance) become a graph of their own;
    only the planning read and what follows it run untraced. Same image and gradient."""
    verts, faces = stick
    K, R, t = pinhole(60.0, 31.5, 31.5), rot_y(0.5) @ rot_x(0.4), torch.tensor([0.0, 0.1, 2.0], dtype=F64)
    weight = torch.linspace(0, 1, 64, dtype=F64)

    def loss(v: torch.Tensor, draw: torch.Tensor) -> torch.Tensor:
        sil = soft_silhouette(v * 1.0, faces, K, R, t, (64, 64), image_mask=draw, check_faces=False,
                              backface_culling=backface_culling)
        return (sil * weight).sum()

    vv, draw = torch.stack([verts, verts * 1.1]), torch.tensor([True, False])
    explained = torch._dynamo.explain(loss)(vv, draw)
    # the caller's graph breaks at the call; soft_silhouette's own graph breaks at the planning
    assert explained.graph_break_count == 2
    assert max(len(g.graph.nodes) for g in explained.graphs) > 50  # projection, culling, census
    results = []
    for fn in (loss, torch.compile(loss, backend="aot_eager")):
        v = vv.clone().requires_grad_()
        value = fn(v, draw)
        value.backward()
        results.append((value.detach(), v.grad))
    assert float(results[0][0]) > 0 and torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_chunks_that_fail_to_compile_are_drawn_eagerly_with_a_warning() -> None:
    def broken(gm, example_inputs):
        raise RuntimeError("no code generator here")

    verts, faces = icosphere(1)
    K, t = pinhole(40.0, 15.5, 15.5), torch.tensor([0.0, 0.0, 3.0], dtype=F64)
    results = []
    for options in (None, {"backend": broken}):
        v = verts[None].clone().requires_grad_()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sil = soft_silhouette(v, faces, K, torch.eye(3, dtype=F64), t, (32, 32), compile_options=options)
            (sil * torch.linspace(0, 1, 32, dtype=F64)).sum().backward()
        results.append((sil.detach(), v.grad, [str(w.message) for w in caught]))
    assert results[0][2] == []
    assert any("compiling the chunks failed" in m and "no code generator here" in m for m in results[1][2])
    assert any("chunks' gradients failed" in m for m in results[1][2])
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_compiled_chunks_refuse_cuda_graphs() -> None:
    verts, faces = tetrahedron()
    with pytest.raises(SmilError, match="without CUDA graphs"):
        soft_silhouette(verts[None], faces, pinhole(30.0, 15.5, 15.5), torch.eye(3, dtype=F64),
                        torch.tensor([0.0, 0.0, 3.0], dtype=F64), (32, 32),
                        compile_options={"mode": "reduce-overhead"})


def test_module_wrapper_matches_the_function() -> None:
    verts, faces = icosphere(2)
    K, t = pinhole(40.0, 15.5, 15.5), torch.tensor([0.0, 0.0, 3.0], dtype=F64)
    renderer = SoftSilhouetteRenderer((32, 32), sigma=0.5, backface_culling=True)
    assert "sigma=0.5" in repr(renderer)
    out = renderer(verts[None], faces, K, torch.eye(3, dtype=F64), t)
    ref = soft_silhouette(verts[None], faces, K, torch.eye(3, dtype=F64), t, (32, 32), 0.5,
                          backface_culling=True)
    assert torch.equal(out, ref)


def test_image_mask_leaves_images_empty_and_keeps_their_cameras_out_of_the_gradient(stick) -> None:
    verts, faces = stick
    vv = torch.stack([verts, verts]).requires_grad_()
    K = torch.stack([pinhole(150.0, 63.5, 63.5), torch.zeros(3, 3, dtype=F64)])  # image 1: degenerate
    R = torch.stack([rot_x(0.5), torch.zeros(3, 3, dtype=F64)])
    t = torch.tensor([[0.0, 0.0, 2.5], [0.0, 0.0, 0.0]], dtype=F64)  # every vertex at depth 0
    sil = soft_silhouette(vv, faces, K, R, t, (96, 128), image_mask=torch.tensor([True, False]), check_faces=False)
    (sil * torch.linspace(0, 1, 128)).sum().backward()
    v0 = verts[None].clone().requires_grad_()
    alone = soft_silhouette(v0, faces, K[:1], R[:1], t[:1], (96, 128))
    (alone * torch.linspace(0, 1, 128)).sum().backward()
    sil = sil.detach()
    assert torch.allclose(sil[0], alone[0].detach(), atol=1e-12) and float(sil[1].abs().max()) == 0.0
    assert torch.isfinite(vv.grad).all() and float(vv.grad[1].abs().max()) == 0.0
    assert torch.allclose(vv.grad[0], v0.grad[0], rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu() -> None:
    verts, faces = icosphere(3)
    K, R, t = pinhole(100.0, 31.5, 31.5), rot_x(0.2), torch.tensor([0.0, 0.0, 3.0], dtype=F64)
    weight = torch.linspace(0, 1, 64)
    v_cpu = verts[None].float().requires_grad_()
    cpu = soft_silhouette(v_cpu, faces, K, R, t, (64, 64))
    (cpu * weight).sum().backward()
    v_gpu = verts[None].float().cuda().requires_grad_()
    gpu = soft_silhouette(v_gpu, faces.cuda(), K.cuda(), R.cuda(), t.cuda(), (64, 64))
    (gpu * weight.cuda()).sum().backward()
    assert torch.allclose(gpu.detach().cpu(), cpu.detach(), atol=1e-5)
    assert torch.allclose(v_gpu.grad.cpu(), v_cpu.grad, rtol=1e-4, atol=1e-4 * float(v_cpu.grad.abs().max()))


# --------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "change, field",
    [
        ({"vertices": torch.zeros(4, 3)}, "vertices"),
        ({"faces": torch.zeros(2, 3)}, "faces"),
        ({"faces": torch.tensor([[0, 1, 9]])}, "faces"),
        ({"K": torch.eye(3)[None].repeat(3, 1, 1)}, "K"),
        ({"t": torch.zeros(2)}, "t"),
        ({"image_size": (0, 10)}, "image_size"),
        ({"sigma": 0.0}, "sigma"),
    ],
)
def test_bad_input_names_the_argument(change: dict, field: str) -> None:
    args = {"vertices": torch.zeros(2, 4, 3), "faces": torch.tensor([[0, 1, 2]]), "K": torch.eye(3),
            "R": torch.eye(3), "t": torch.zeros(3), "image_size": (8, 8), "sigma": 1.0}
    args.update(change)
    with pytest.raises(SmilError, match=field):
        soft_silhouette(**args)
