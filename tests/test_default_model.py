"""The procedural default body model (smil.body.default_model)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

from smil.body.default_model import SHAPE_NAMES, build_default_model

LEG_SEGMENTS = ("co", "tr", "fe", "ti", "ta", "pt")

# key -> (dtype, ndim) of the SMIL/SMAL pickle layout (as in SMILy_STICK.pkl)
LAYOUT = {
    "f": (np.int32, 2),
    "J_regressor": (np.float32, 2),
    "kintree_table": (np.int32, 2),
    "J": (np.float32, 2),
    "weights": (np.float32, 2),
    "posedirs": (np.float64, 1),
    "v_template": (np.float64, 2),
    "shapedirs": (np.float64, 3),
    "sym_verts": (np.int64, 1),
    "scaledirs": (np.float64, 3),
    "transdirs": (np.float64, 3),
    "shape_cov": (np.float64, 2),
    "shape_mean_betas": (np.float64, 1),
}


@pytest.fixture(scope="module")
def model() -> dict:
    return build_default_model()


def _edges(f: np.ndarray) -> np.ndarray:
    return np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])


def _undirected_edges(f: np.ndarray) -> np.ndarray:
    return np.unique(np.sort(_edges(f), axis=1), axis=0)


def _components(n_verts: int, f: np.ndarray) -> np.ndarray:
    """Connected-component label of every vertex (union-find over the face edges)."""
    parent = np.arange(n_verts)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in _undirected_edges(f):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n_verts)])


def _mirror_map(v: np.ndarray) -> np.ndarray:
    """Index of each vertex's mirror image (y -> -y); asserts that every vertex has one."""
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(v).query(v * np.array([1.0, -1.0, 1.0]))
    assert dist.max() < 1e-9
    return idx


def _mirror_joint(name: str) -> str:
    if name.endswith("_r"):
        return name[:-2] + "_l"
    if name.endswith("_l"):
        return name[:-2] + "_r"
    return name


def test_layout_is_the_smil_pickle_layout(model):
    assert set(model) == set(LAYOUT) | {"bs_style", "bs_type", "J_names"}
    for key, (dtype, ndim) in LAYOUT.items():
        assert model[key].dtype == dtype, key
        assert model[key].ndim == ndim, key
    assert model["bs_style"] == "lbs" and model["bs_type"] == "lrotmin"
    assert model["posedirs"].shape == (0,)
    V, J, nb = len(model["v_template"]), len(model["J_names"]), model["shapedirs"].shape[2]
    assert model["v_template"].shape == (V, 3)
    assert model["f"].shape[1] == 3 and model["f"].min() == 0 and model["f"].max() == V - 1
    assert model["J_regressor"].shape == (J, V)
    assert model["weights"].shape == (V, J)
    assert model["J"].shape == (J, 3)
    assert model["kintree_table"].shape == (2, J)
    assert model["shapedirs"].shape == (V, 3, nb)
    assert model["scaledirs"].shape == (nb, J, 3) and model["transdirs"].shape == (nb, J, 3)
    assert model["shape_cov"].shape == (nb, nb) and model["shape_mean_betas"].shape == (nb,)
    assert all(isinstance(n, str) for n in model["J_names"])
    # plain containers and arrays only: survives a pickle round trip unchanged
    again = pickle.loads(pickle.dumps(model))
    assert all(np.array_equal(np.asarray(again[k]), np.asarray(model[k])) for k in model)


def test_layout_matches_the_real_stick_model(model, fixtures_dir):
    with open(fixtures_dir / "models" / "SMILy_STICK.pkl", "rb") as fh:
        raw = fh.read()
    with warnings.catch_warnings():  # the file pickles numpy.core paths (deprecated in numpy 2)
        warnings.simplefilter("ignore", DeprecationWarning)
        stick = pickle.loads(raw, encoding="latin1")
    assert set(model) == set(stick)
    for key, value in stick.items():
        if isinstance(value, np.ndarray):
            assert model[key].dtype == value.dtype, key
            assert model[key].ndim == value.ndim, key
        else:
            assert type(model[key]) is type(value), key
    # the root's parent uses the same sentinel
    assert model["kintree_table"][0, 0] == stick["kintree_table"][0, 0]
    # joint names follow the same scheme where the anatomy matches
    shared = set(model["J_names"]) & set(stick["J_names"])
    assert {"b_t", "b_h", "b_a_1", "l_1_co_r", "l_3_pt_l", "an_1_r", "an_3_l", "ma_r"} <= shared


def test_anatomy_and_kinematic_tree(model):
    names = model["J_names"]
    kt = model["kintree_table"]
    assert len(names) >= 40 and len(set(names)) == len(names)
    assert np.array_equal(kt[1], np.arange(len(names)))
    parents = kt[0].astype(np.int64)
    assert names[0] == "b_t" and parents[0] == -1
    assert np.all(parents[1:] >= 0) and np.all(parents[1:] < np.arange(1, len(names)))
    parent_of = {names[i]: names[parents[i]] for i in range(1, len(names))}
    assert parent_of["b_h"] == "b_t"
    abdomen = [n for n in names if n.startswith("b_a_")]
    assert len(abdomen) >= 3 and parent_of["b_a_1"] == "b_t"
    for a, b in zip(abdomen[:-1], abdomen[1:]):
        assert parent_of[b] == a
    for side in ("r", "l"):
        for leg in (1, 2, 3):
            chain = [f"l_{leg}_{seg}_{side}" for seg in LEG_SEGMENTS]
            assert parent_of[chain[0]] == "b_t"
            for a, b in zip(chain[:-1], chain[1:]):
                assert parent_of[b] == a
        antenna = [n for n in names if n.startswith("an_") and n.endswith("_" + side)]
        assert len(antenna) >= 2 and parent_of[antenna[0]] == "b_h"
        for a, b in zip(antenna[:-1], antenna[1:]):
            assert parent_of[b] == a
        assert parent_of[f"ma_{side}"] == "b_h"


def test_rest_pose_frame_and_size(model):
    names = model["J_names"]
    J = model["J"].astype(np.float64)
    at = {n: J[i] for i, n in enumerate(names)}
    v = model["v_template"]
    assert np.allclose(at["b_t"][:2], 0.0)  # root on the body axis at x = 0
    # head forward (+x), abdomen behind, right side at y < 0, z up
    assert at["b_h"][0] > at["b_t"][0] > at["b_a_1"][0] > at["b_a_3"][0]
    assert at["an_3_r"][0] > at["b_h"][0]
    for leg in (1, 2, 3):
        assert at[f"l_{leg}_pt_r"][1] < -0.2 and at[f"l_{leg}_pt_l"][1] > 0.2
        assert at[f"l_{leg}_pt_r"][2] < at["b_t"][2] - 0.1  # feet below the body
    assert at["l_1_co_r"][0] > at["l_2_co_r"][0] > at["l_3_co_r"][0]
    # body length (gaster tip to head front, on the axis) about one model unit
    axis = np.abs(v[:, 1]) < 0.03
    length = v[axis, 0].max() - v[axis, 0].min()
    assert 0.9 < length < 1.25
    # the feet rest on one ground plane
    feet = v[:, 2].min()
    assert feet < -0.1 and np.ptp([J[names.index(f"l_{k}_pt_r"), 2] for k in (1, 2, 3)]) < 0.03


def test_mesh_is_closed_consistently_oriented_and_sized(model):
    v, f = model["v_template"], model["f"]
    assert 2000 <= len(v) <= 4500
    # every undirected edge is shared by exactly two faces ...
    _, counts = np.unique(np.sort(_edges(f), axis=1), axis=0, return_counts=True)
    assert np.all(counts == 2)
    # ... which traverse it in opposite directions (consistent orientation)
    _, dcounts = np.unique(_edges(f), axis=0, return_counts=True)
    assert np.all(dcounts == 1)
    # no degenerate triangles
    area2 = np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    assert area2.min() > 1e-10
    # every component encloses a positive volume: normals point outwards
    labels = _components(len(v), f)
    comps = np.unique(labels)
    assert len(comps) >= 8  # body, head, legs, antennae ...
    for c in comps:
        fc = f[labels[f[:, 0]] == c]
        a, b, d = v[fc[:, 0]], v[fc[:, 1]], v[fc[:, 2]]
        volume = np.einsum("ij,ij->i", a, np.cross(b, d)).sum() / 6.0
        assert volume > 0.0


def test_skinning_weights_are_a_smooth_partition_of_unity(model):
    W = model["weights"].astype(np.float64)
    assert W.min() >= 0.0
    assert np.allclose(W.sum(axis=1), 1.0, atol=1e-6)
    e = _undirected_edges(model["f"])
    assert np.abs(W[e[:, 0]] - W[e[:, 1]]).max() <= 0.3
    names = model["J_names"]
    for j, name in enumerate(names):
        assert W[:, j].max() > 0.9, name  # every joint owns part of the mesh
        if name != "b_t":  # ... and blends smoothly into its parent
            blended = (W[:, j] > 0.2) & (W[:, j] < 0.8)
            assert blended.any(), name
    # a vertex is influenced by at most its own joint and the neighbouring ones
    assert (W > 1e-6).sum(axis=1).max() <= 3


def test_joint_regressor_reproduces_the_joints(model):
    R = model["J_regressor"].astype(np.float64)
    v = model["v_template"]
    J = model["J"].astype(np.float64)
    assert R.min() >= 0.0 and np.allclose(R.sum(axis=1), 1.0, atol=1e-6)
    assert np.abs(R @ v - J).max() < 1e-5
    # each joint is regressed from vertices close to it (a ring around the limb or body)
    for j in range(len(J)):
        near = np.linalg.norm(v[R[j] > 0] - J[j], axis=1)
        assert near.max() < 0.15


def test_shape_directions_are_meaningful(model):
    sd = model["shapedirs"]
    nb = sd.shape[2]
    assert nb >= 5 and nb == len(SHAPE_NAMES)
    assert np.allclose(model["shape_cov"], np.eye(nb)) and np.all(model["shape_mean_betas"] == 0)
    flat = sd.reshape(-1, nb)
    assert np.linalg.matrix_rank(flat, tol=1e-3 * np.abs(flat).max()) == nb
    e = _undirected_edges(model["f"])
    names = model["J_names"]
    R = model["J_regressor"].astype(np.float64)
    for k, shape_name in enumerate(SHAPE_NAMES):
        d = sd[:, :, k]
        biggest = np.abs(d).max()
        assert 0.005 < biggest < 0.1, shape_name  # visible, but a deformation, not a new animal
        # smooth: neighbouring vertices move alike
        assert np.linalg.norm(d[e[:, 0]] - d[e[:, 1]], axis=1).max() < 0.5 * biggest, shape_name
    # the directions do what their names say (one beta = one standard deviation)
    moved = {n: R @ sd[:, :, k] for k, n in enumerate(SHAPE_NAMES)}
    j = {n: i for i, n in enumerate(names)}
    v = model["v_template"]

    def extent(k, axis):
        return np.ptp(v[:, axis] + sd[:, axis, k]) - np.ptp(v[:, axis])

    assert extent(SHAPE_NAMES.index("body_length"), 0) > 0.03
    assert moved["leg_length"][j["l_3_pt_r"], 1] < -0.02  # hind foot further out
    assert moved["head_size"][j["an_1_r"], 0] > 0.005  # antenna socket moves forward
    assert moved["gaster_size"][j["b_a_5"], 0] < -0.01  # gaster reaches further back
    ant = SHAPE_NAMES.index("antenna_length")
    tip = np.argmax(v[:, 0])  # the antenna club tips are the front-most vertices
    assert sd[tip, 0, ant] > 0.01
    # girth: a wider gaster, no longer body
    gaster = (v[:, 0] < -0.3) & (np.abs(v[:, 1]) < 0.2)
    girth = SHAPE_NAMES.index("girth")
    assert (v[gaster, 1] + sd[gaster, 1, girth]).max() - v[gaster, 1].max() > 0.005
    assert np.abs(moved["girth"][[j["b_h"], j["b_a_5"]], 0]).max() < 1e-3


def test_scale_and_translation_directions(model):
    names = model["J_names"]
    for key in ("scaledirs", "transdirs"):
        dirs = model[key]
        assert dirs.shape == (model["shapedirs"].shape[2], len(names), 3)
        assert np.all(np.abs(dirs).reshape(len(dirs), -1).max(axis=1) > 0), key
        # left and right joints get mirrored values
        perm = [names.index(_mirror_joint(n)) for n in names]
        flip = np.array([1.0, -1.0, 1.0]) if key == "transdirs" else np.ones(3)
        assert np.allclose(dirs[:, perm], dirs * flip), key
    assert np.all(np.abs(model["scaledirs"]) < 1.0)  # log-scales per unit weight
    assert np.all(np.abs(model["transdirs"]) < 0.1)  # model units per unit weight


def test_model_is_left_right_symmetric(model):
    v = model["v_template"]
    names = model["J_names"]
    mv = _mirror_map(v)
    assert np.array_equal(mv[mv], np.arange(len(v)))
    mj = np.array([names.index(_mirror_joint(n)) for n in names])
    assert sum(n.endswith("_r") for n in names) == sum(n.endswith("_l") for n in names) > 0
    J = model["J"].astype(np.float64)
    assert np.abs(J[mj] - J * [1, -1, 1]).max() < 1e-6
    assert np.allclose(model["weights"][mv][:, mj], model["weights"], atol=1e-6)
    flip = np.array([1.0, -1.0, 1.0])[None, :, None]
    assert np.allclose(model["shapedirs"][mv], model["shapedirs"] * flip)
    assert np.allclose(model["J_regressor"][mj][:, mv], model["J_regressor"])
    # mirrored faces are faces (with reversed orientation)
    def canonical(f):  # each triangle rotated to start at its smallest index (keeps winding)
        shift = np.argmin(f, axis=1)[:, None]
        return set(map(tuple, np.take_along_axis(f, (shift + np.arange(3)) % 3, axis=1).tolist()))

    assert canonical(mv[model["f"]][:, ::-1]) == canonical(model["f"])
    # sym_verts: the vertices on the sagittal plane (their own mirror images)
    sym = model["sym_verts"]
    assert len(sym) > 0 and np.array_equal(sym, np.flatnonzero(mv == np.arange(len(v))))
    assert np.all(v[sym, 1] == 0.0)


def test_same_seed_same_model_other_seed_other_proportions(model):
    again = build_default_model(0)
    for key, value in model.items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(again[key], value), key
        else:
            assert again[key] == value, key
    other = build_default_model(seed=1)
    assert np.array_equal(other["f"], model["f"])  # one topology for every individual
    diff = np.abs(other["v_template"] - model["v_template"]).max()
    assert 0.005 < diff < 0.2
    assert not np.array_equal(other["J"], model["J"])
    # still a closed, symmetric ant
    _, counts = np.unique(np.sort(_edges(other["f"]), axis=1), axis=0, return_counts=True)
    assert np.all(counts == 2)
    _mirror_map(other["v_template"])
    regressed = other["J_regressor"].astype(np.float64) @ other["v_template"]
    assert np.abs(regressed - other["J"]).max() < 1e-5


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_bad_seed_is_a_clear_error(seed):
    from smil.errors import SmilError

    with pytest.raises(SmilError, match="seed must be a non-negative integer"):
        build_default_model(seed)


def test_saved_files_are_byte_identical(model, tmp_path):
    from smil.body.io import save_model

    a, b = tmp_path / "a.pkl", tmp_path / "b.pkl"
    save_model(a, model)
    save_model(b, build_default_model(0))
    assert a.read_bytes() == b.read_bytes()


def test_smil_model_poses_the_default_model(model, tmp_path):
    import torch

    from smil.body.io import load_model, save_model
    from smil.body.model import SMILModel

    save_model(tmp_path / "default.pkl", model)
    m = SMILModel(load_model(tmp_path / "default.pkl"), name="default", dtype=torch.float64)
    names = m.joint_names
    assert names == model["J_names"] and m.num_betas == model["shapedirs"].shape[2]
    J = m.num_joints
    v0 = torch.from_numpy(model["v_template"])
    j0 = torch.from_numpy(model["J"].astype(np.float64))
    zero = torch.zeros(2, 3, dtype=torch.float64)
    rest = m(betas=None, global_rot=zero, joint_rot=None)
    assert torch.allclose(rest.vertices[0], v0, atol=1e-9)
    assert torch.allclose(rest.joints[0], j0, atol=1e-5)

    # bend the right middle knee (femur-tibia) by 0.6 rad about its hinge axis
    ji = {n: i for i, n in enumerate(names)}
    fe, ti, ta = j0[ji["l_2_fe_r"]], j0[ji["l_2_ti_r"]], j0[ji["l_2_ta_r"]]
    hinge = torch.linalg.cross(ti - fe, ta - ti)
    joint_rot = torch.zeros(2, J - 1, 3, dtype=torch.float64)
    joint_rot[1, ji["l_2_ti_r"] - 1] = 0.6 * hinge / hinge.norm()
    betas = torch.tensor([[1.0, -1.0, 0.5, 1.0, -0.5, 1.0]] * 2, dtype=torch.float64)
    out = m(betas=betas, global_rot=zero, joint_rot=joint_rot)
    assert torch.isfinite(out.vertices).all() and torch.isfinite(out.joints).all()
    straight, bent = out.joints[0], out.joints[1]

    def knee_angle(j):
        a, b = j[ji["l_2_ti_r"]] - j[ji["l_2_fe_r"]], j[ji["l_2_ta_r"]] - j[ji["l_2_ti_r"]]
        return torch.arccos(torch.dot(a, b) / (a.norm() * b.norm()))

    assert abs(float(knee_angle(bent) - knee_angle(straight))) == pytest.approx(0.6, abs=1e-6)
    # the tibia's skin follows the bend; the body does not move
    W = model["weights"]
    tibia = W[:, ji["l_2_ti_r"]] > 0.99
    body = W[:, ji["b_t"]] > 0.99
    moved = (out.vertices[1] - out.vertices[0]).norm(dim=1).numpy()
    assert moved[tibia].min() > 1e-3 and moved[body].max() < 1e-12
    # the foot stays at the end of the (rigid) tarsus and the regressor tracks the posed mesh
    R = torch.from_numpy(model["J_regressor"].astype(np.float64))
    assert torch.allclose(R @ out.vertices[1], out.joints[1], atol=2e-3)

    # per-joint scale and translation directions act on the posed model
    sw = torch.zeros(1, m.num_scale_dirs, dtype=torch.float64)
    sw[0, 0] = 1.0  # "legs": longer legs, feet further out
    tw = torch.zeros(1, m.num_trans_dirs, dtype=torch.float64)
    out = m(betas=None, global_rot=zero[:1], joint_rot=None, scale_weights=sw, trans_weights=tw)
    assert torch.isfinite(out.vertices).all()
    foot = ji["l_3_pt_r"]
    assert out.joints[0, foot].norm() > rest.joints[0, foot].norm() + 0.05
