"""Hard rasteriser: coverage, z-buffer, barycentrics, shading, masks and depth-test visibility."""

from __future__ import annotations

import numpy as np
import pytest

from smil.errors import ShapeMismatchError
from smil.render.raster import (
    face_normals,
    is_closed_outward,
    is_consistently_oriented,
    project_points,
    rasterize,
    shade_lambert,
    silhouette_mask,
    surface_crossings,
    visible_points,
    visible_points_solid,
)

K = np.array([[60.0, 0.0, 23.5], [0.0, 60.0, 19.5], [0.0, 0.0, 1.0]])
SIZE = (48, 40)


def uv_sphere(centre, radius, n_lat=12, n_lon=18):
    """A closed UV sphere with outward (right-hand) winding."""
    verts = [[0.0, 0.0, 1.0]]
    for i in range(1, n_lat):
        th = np.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * np.pi * j / n_lon
            verts.append([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)])
    verts.append([0.0, 0.0, -1.0])
    faces = []
    ring = lambda i, j: 1 + (i - 1) * n_lon + (j % n_lon)  # noqa: E731
    for j in range(n_lon):
        faces.append([0, ring(1, j), ring(1, j + 1)])
    for i in range(1, n_lat - 1):
        for j in range(n_lon):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            faces += [[a, c, b], [b, c, d]]
    last = len(verts) - 1
    for j in range(n_lon):
        faces.append([last, ring(n_lat - 1, j + 1), ring(n_lat - 1, j)])
    return np.asarray(verts) * radius + np.asarray(centre, float), np.asarray(faces, dtype=np.int64)


def brute_force(verts, faces, K, size):
    """Nearest ray–triangle hit per pixel centre (Möller–Trumbore), depth = camera z."""
    W, H = size
    ys, xs = np.mgrid[0:H, 0:W]
    rays = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3).astype(float) @ np.linalg.inv(K).T
    depth = np.full(len(rays), np.inf)
    face = np.full(len(rays), -1)
    for fi, (a, b, c) in enumerate(verts[faces]):
        e1, e2 = b - a, c - a
        p = np.cross(rays, e2)
        det = p @ e1
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1 / np.where(ok, det, 1), 0)
        s = -a
        u = (p @ s) * inv
        q = np.cross(s, e1)
        v = (rays @ q) * inv
        t = (q @ e2) * inv
        hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        z = t * rays[:, 2]
        better = hit & (z < depth)
        depth[better] = z[better]
        face[better] = fi
    return depth.reshape(H, W), face.reshape(H, W)


def two_spheres():
    v1, f1 = uv_sphere([0.0, 0.0, 6.0], 1.5)
    v2, f2 = uv_sphere([0.8, 0.4, 4.5], 0.7)
    return np.concatenate([v1, v2]), np.concatenate([f1, f2 + len(v1)])


def test_matches_brute_force_ray_casting():
    verts, faces = two_spheres()
    r = rasterize(verts, faces, K, SIZE)
    depth, face = brute_force(verts, faces, K, SIZE)
    both = np.isfinite(depth) & r.mask
    # Coverage agrees except possibly on pixel centres lying exactly on the silhouette.
    assert (np.isfinite(depth) != r.mask).sum() <= 2
    assert both.sum() > 300
    np.testing.assert_allclose(r.depth[both], depth[both], rtol=1e-9)
    # The small sphere occludes the big one where they overlap.
    assert (r.face_id >= len(uv_sphere([0, 0, 0], 1)[1])).sum() > 50


def test_barycentrics_reconstruct_the_surface_point():
    verts, faces = two_spheres()
    r = rasterize(verts, faces, K, SIZE)
    ys, xs = np.nonzero(r.mask)
    tri = verts[faces[r.face_id[ys, xs]]]
    point = np.einsum("pk,pkc->pc", r.bary[ys, xs], tri)
    np.testing.assert_allclose(point[:, 2], r.depth[ys, xs], rtol=1e-9)
    uv, _ = project_points(point, K)
    np.testing.assert_allclose(uv, np.stack([xs, ys], 1), atol=1e-6)
    np.testing.assert_allclose(r.bary[ys, xs].sum(1), 1.0)


def test_pixel_centre_coverage_and_no_cracks():
    # A square at z=2 covering pixel centres x in [10, 20], y in [5, 15], split along a diagonal.
    z = 2.0
    corners = np.array([[9.7, 4.6], [20.4, 4.6], [20.4, 15.2], [9.7, 15.2]])
    xyz = np.concatenate([(corners - K[:2, 2]) / K[0, 0] * z, np.full((4, 1), z)], 1)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    r = rasterize(xyz, faces, K, SIZE)
    expected = np.zeros((SIZE[1], SIZE[0]), bool)
    expected[5:16, 10:21] = True
    np.testing.assert_array_equal(r.mask, expected)
    np.testing.assert_allclose(r.depth[expected], z)
    assert set(np.unique(r.face_id[expected])) == {0, 1}


def test_triangles_crossing_the_image_border_are_clipped_not_wrapped():
    z = 3.0
    corners = np.array([[40.2, -6.0], [70.0, -6.0], [70.0, 52.0], [40.2, 52.0]])  # past right, top, bottom
    xyz = np.concatenate([(corners - K[:2, 2]) / K[0, 0] * z, np.full((4, 1), z)], 1)
    r = rasterize(xyz, np.array([[0, 1, 2], [0, 2, 3]]), K, SIZE)
    expected = np.zeros((SIZE[1], SIZE[0]), bool)
    expected[:, 41:] = True
    np.testing.assert_array_equal(r.mask, expected)


def test_nothing_drawn_behind_the_camera_or_off_screen():
    verts, faces = uv_sphere([0.0, 0.0, -5.0], 1.0)
    assert not rasterize(verts, faces, K, SIZE).mask.any()
    verts, faces = uv_sphere([100.0, 0.0, 5.0], 1.0)
    r = rasterize(verts, faces, K, SIZE)
    assert not r.mask.any() and np.isinf(r.depth).all() and (r.face_id == -1).all()


def test_silhouette_mask_is_255_where_drawn():
    verts, faces = two_spheres()
    r = rasterize(verts, faces, K, SIZE)
    m = silhouette_mask(r)
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 255}
    np.testing.assert_array_equal(m == 255, np.isfinite(r.depth))


def test_lambert_shading_is_brighter_facing_the_light_and_two_sided():
    verts, faces = uv_sphere([0.0, 0.0, 6.0], 1.5)
    r = rasterize(verts, faces, K, SIZE)
    light = np.array([-1.0, 0.0, -1.0])  # towards the light: left of the sphere, camera side
    s = shade_lambert(r, verts, faces, K, light, ambient=0.2, diffuse=0.8)
    row = SIZE[1] // 2
    lit = s[row, np.nonzero(r.mask[row])[0]]
    assert lit[0] > lit[-1] + 0.3  # left limb (towards the light) brighter than right limb
    assert s[~r.mask].max() == 0 and s[r.mask].min() >= 0.2 - 1e-12
    back = np.ascontiguousarray(faces[:, ::-1])  # inward winding: lighting must not change
    flipped = shade_lambert(rasterize(verts, back, K, SIZE), verts, back, K, light, ambient=0.2, diffuse=0.8)
    np.testing.assert_allclose(flipped, s, atol=1e-9)
    flat = shade_lambert(r, verts, faces, K, light, ambient=0.2, diffuse=0.8, smooth=False)
    assert np.abs(flat - s)[r.mask].max() < 0.3


def test_face_normals_follow_the_right_hand_rule():
    n = face_normals(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0.0]]), np.array([[0, 1, 2]]))
    np.testing.assert_allclose(n, [[0, 0, 1]])


def test_visible_points_depth_test():
    verts, faces = uv_sphere([0.0, 0.0, 6.0], 1.5, 24, 36)
    r = rasterize(verts, faces, K, SIZE)
    points = np.array(
        [
            [0.0, 0.0, 4.0],  # in front of the sphere
            [0.0, 0.0, 6.0],  # the centre: 1.5 behind the front surface
            [0.0, 0.0, 8.0],  # behind the sphere
            [2.0, 0.0, 6.0],  # beside it, on background
            [40.0, 0.0, 6.0],  # outside the image
            [0.0, 0.0, -6.0],  # behind the camera
        ]
    )
    vis = visible_points(points, r.depth, K, tol=1.6)
    np.testing.assert_array_equal(vis, [True, True, False, True, False, False])
    vis = visible_points(points, r.depth, K, tol=np.array([0, 1.0, 0, 0, 0, 0]))
    np.testing.assert_array_equal(vis, [True, False, False, True, False, False])


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ShapeMismatchError, match="faces"):
        rasterize(np.zeros((3, 3)), np.array([[0, 1, 5]]), K, SIZE)
    with pytest.raises(ShapeMismatchError, match="vertices_cam"):
        rasterize(np.zeros((3, 2)), np.array([[0, 1, 2]]), K, SIZE)
    with pytest.raises(ShapeMismatchError, match="K"):
        visible_points(np.zeros((1, 3)), np.zeros((4, 4)), np.eye(2), 0.1)


def test_back_face_culling_is_exact_for_closed_outward_meshes():
    verts, faces = two_spheres()
    assert is_closed_outward(verts, faces)
    assert not is_closed_outward(verts, faces[:, ::-1])  # inward
    assert not is_closed_outward(verts, faces[1:])  # a hole
    full = rasterize(verts, faces, K, SIZE)
    culled = rasterize(verts, faces, K, SIZE, cull_back_faces=True)
    np.testing.assert_array_equal(culled.face_id, full.face_id)
    np.testing.assert_array_equal(culled.depth, full.depth)
    # Culling an inward mesh removes exactly the surface the camera sees.
    inward = rasterize(verts, np.ascontiguousarray(faces[:, ::-1]), K, SIZE, cull_back_faces=True)
    assert (inward.depth[full.mask] > full.depth[full.mask]).all()


def test_solid_visibility_sees_through_own_surface_but_not_other_parts():
    big_v, big_f = uv_sphere([0.0, 0.0, 6.0], 1.5, 24, 36)
    # A small sphere in front of the big one's centre, and one overlapping the big one's side.
    front_v, front_f = uv_sphere([0.0, 0.0, 3.5], 0.4)
    side_v, side_f = uv_sphere([1.3, 0.0, 5.3], 0.5)
    verts = np.concatenate([big_v, front_v, side_v])
    faces = np.concatenate([big_f, front_f + len(big_v), side_f + len(big_v) + len(front_v)])
    assert is_consistently_oriented(verts, faces)
    assert not is_consistently_oriented(verts, faces[:, ::-1])
    points = np.array(
        [
            [0.0, 0.0, 6.0],  # big sphere's centre, behind the small front sphere
            [0.0, 0.0, 3.5],  # front sphere's centre: seen through its own surface
            [0.9, 0.9, 6.0],  # deep inside the big sphere, nothing in front: seen however deep
            [1.3, 0.0, 5.3],  # side sphere's centre: the ray enters the big sphere first, never leaves
            [0.0, 0.0, 8.0],  # behind the big sphere
            [-1.9, 0.0, 6.0],  # beside everything (background)
            [0.0, 0.0, -1.0],  # behind the camera
        ]
    )
    vis = visible_points_solid(points, verts, faces, K, SIZE, tol=0.05)
    np.testing.assert_array_equal(vis, [False, True, True, True, False, True, False])
    # A depth test with a fixed tolerance cannot tell the deep-inside point from an occluded one.
    r = rasterize(verts, faces, K, SIZE)
    assert not visible_points(points[2:3], r.depth, K, tol=0.5)[0]


def test_surface_crossings_match_the_rasteriser():
    verts, faces = two_spheres()
    r = rasterize(verts, faces, K, SIZE)
    ys, xs = np.nonzero(r.mask)
    pick = np.arange(0, len(ys), 7)
    rays = np.stack([xs[pick], ys[pick], np.ones(len(pick))], 1) @ np.linalg.inv(K).T
    points = rays * 20.0  # far behind everything along each pixel's ray
    in_frame, point, depth, entering = surface_crossings(points, verts, faces, K, SIZE)
    assert in_frame.all()
    for i in range(len(pick)):
        mine = point == i
        assert mine.sum() in (2, 4)  # one or two spheres: enter and leave each
        assert entering[mine].sum() == mine.sum() // 2
        np.testing.assert_allclose(depth[mine].min(), r.depth[ys[pick[i]], xs[pick[i]]], rtol=1e-12)
