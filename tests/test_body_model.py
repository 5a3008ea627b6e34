"""SMILModel: the LBS forward against a plain joint-by-joint reference, and the behaviour a user
relies on (rest pose, rigid root rotation, per-joint scale/translation, gradients, dtypes,
rotation formats, clear shape errors, several models side by side)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from smil.body.io import load_model, parents_from_kintree
from smil.body.model import SMILModel, tree_levels
from smil.errors import ShapeMismatchError, SmilError
from smil.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_quaternion,
    matrix_to_rot6d,
)

F64 = torch.float64


@pytest.fixture(scope="module")
def stick_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "models" / "SMILy_STICK.pkl"


@pytest.fixture(scope="module")
def mouse_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "models" / "SMILy_Mouse_static_joints.pkl"


@pytest.fixture(scope="module")
def stick_data(stick_path: Path) -> dict:
    return load_model(stick_path)


@pytest.fixture(scope="module")
def stick(stick_path: Path) -> SMILModel:
    return SMILModel.from_file(stick_path, dtype=F64)


@pytest.fixture(scope="module")
def stick32(stick_path: Path) -> SMILModel:
    return SMILModel.from_file(stick_path)


@pytest.fixture(scope="module")
def mouse(mouse_path: Path) -> SMILModel:
    return SMILModel.from_file(mouse_path, dtype=F64)


def tiny_model(posedirs: bool = False, seed: int = 0) -> dict:
    """4 joints whose level order differs from joint order (0 → 1 → 2, 0 → 3)."""
    rng = np.random.default_rng(seed)
    V, J, nb = 12, 4, 2
    weights = rng.uniform(size=(V, J))
    weights /= weights.sum(1, keepdims=True)
    regressor = np.zeros((J, V))
    for j in range(J):
        regressor[j, rng.choice(V, 3, replace=False)] = 1 / 3
    return {
        "f": np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]], dtype=np.int32),
        "J_regressor": regressor,
        "kintree_table": np.array([[-1, 0, 1, 0], [0, 1, 2, 3]]),
        "weights": weights,
        "posedirs": 0.05 * rng.normal(size=(V, 3, 9 * (J - 1))) if posedirs else np.zeros(0),
        "v_template": rng.normal(size=(V, 3)),
        "shapedirs": 0.1 * rng.normal(size=(V, 3, nb)),
        "scaledirs": 0.2 * rng.normal(size=(3, J, 3)),
        "transdirs": 0.1 * rng.normal(size=(2, J, 3)),
    }


def reference_forward(data: dict, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The documented forward, joint by joint, in float64 (no batching tricks)."""
    t = {k: torch.as_tensor(np.asarray(data[k], dtype=np.float64))
         for k in ("v_template", "shapedirs", "J_regressor", "weights") if k in data}
    parents = parents_from_kintree(data["kintree_table"])
    J, V = len(parents), t["v_template"].shape[0]
    B = p["betas"].shape[0]
    rots = axis_angle_to_matrix(torch.cat([p["global_rot"][:, None], p["joint_rot"]], 1))
    v = t["v_template"] + torch.einsum("vcn,bn->bvc", t["shapedirs"].reshape(V, 3, -1), p["betas"])
    if data.get("static_joint_locs"):
        rest = torch.as_tensor(np.asarray(data["J"], np.float64)).expand(B, J, 3)
    else:
        rest = torch.einsum("jv,bvc->bjc", t["J_regressor"], v)
    if len(data.get("posedirs", [])):
        lrotmin = (rots[:, 1:] - torch.eye(3, dtype=F64)).reshape(B, -1)
        pd = torch.as_tensor(np.asarray(data["posedirs"], np.float64)).reshape(V, 3, -1)
        v = v + torch.einsum("vcp,bp->bvc", pd, lrotmin)
    log_s = p.get("joint_log_scales", torch.zeros(B, J, 3, dtype=F64))
    shift = p.get("joint_trans", torch.zeros(B, J, 3, dtype=F64))
    if "scale_weights" in p:
        log_s = log_s + torch.einsum("bn,njc->bjc", p["scale_weights"],
                                     torch.as_tensor(np.asarray(data["scaledirs"], np.float64)))
    if "trans_weights" in p:
        shift = shift + torch.einsum("bn,njc->bjc", p["trans_weights"],
                                     torch.as_tensor(np.asarray(data["transdirs"], np.float64)))
    G: dict[int, torch.Tensor] = {}

    def world(j: int) -> torch.Tensor:
        if j not in G:
            local = torch.zeros(B, 4, 4, dtype=F64)
            local[:, 3, 3] = 1
            local[:, :3, :3] = rots[:, j] @ torch.diag_embed(torch.exp(log_s[:, j]))
            par = parents[j]
            local[:, :3, 3] = rest[:, j] - (rest[:, par] if par >= 0 else 0) + shift[:, j]
            G[j] = local if par < 0 else world(par) @ local
        return G[j]

    Gs = torch.stack([world(j) for j in range(J)], 1)
    A = Gs.clone()
    A[..., :3, 3] = Gs[..., :3, 3] - (Gs[..., :3, :3] @ rest[..., None])[..., 0]
    T = torch.einsum("vj,bjkl->bvkl", t["weights"], A)
    verts = (T[..., :3, :3] @ v[..., None])[..., 0] + T[..., :3, 3]
    joints = Gs[..., :3, 3]
    scale = p.get("scale", torch.ones(B, dtype=F64))
    trans = p.get("trans", torch.zeros(B, 3, dtype=F64))
    return (scale[:, None, None] * verts + trans[:, None],
            scale[:, None, None] * joints + trans[:, None])


def random_params(model: SMILModel, B: int = 3, seed: int = 0, *, pca: bool = True,
                  dtype: torch.dtype = F64) -> dict:
    g = torch.Generator().manual_seed(seed)
    J = model.num_joints

    def r(*shape, s=1.0):
        return (s * torch.randn(*shape, generator=g, dtype=F64)).to(dtype)

    p = {
        "betas": r(B, model.num_betas),
        "global_rot": r(B, 3, s=0.8),
        "joint_rot": r(B, J - 1, 3, s=0.4),
        "trans": r(B, 3),
        "scale": (0.5 + torch.rand(B, generator=g, dtype=F64)).to(dtype),
        "joint_log_scales": r(B, J, 3, s=0.2),
        "joint_trans": r(B, J, 3, s=0.05),
    }
    if pca and model.has_scaledirs:
        p["scale_weights"] = r(B, model.num_scale_dirs, s=0.3)
    if pca and model.has_transdirs:
        p["trans_weights"] = r(B, model.num_trans_dirs, s=0.3)
    return p


def subtree(parents: list[int], root: int) -> set[int]:
    out = {root}
    changed = True
    while changed:
        changed = False
        for j, par in enumerate(parents):
            if par in out and j not in out:
                out.add(j)
                changed = True
    return out


def zero_pose(model: SMILModel, B: int = 2, dtype=F64):
    return (torch.zeros(B, model.num_betas, dtype=dtype), torch.zeros(B, 3, dtype=dtype),
            torch.zeros(B, model.num_joints - 1, 3, dtype=dtype))


# ------------------------------------------------------------------------------------------


def test_dimensions_come_from_the_files(stick: SMILModel, mouse: SMILModel) -> None:
    assert (stick.num_vertices, stick.num_faces, stick.num_joints, stick.num_betas) == (
        3020, 6019, 55, 5)
    assert stick.joint_names[0] == "b_t" and len(stick.joint_names) == 55
    assert stick.parents[0] == -1 and stick.parents[1] == 0
    assert stick.parents_tensor.tolist() == stick.parents
    assert stick.has_scaledirs and stick.has_transdirs and not stick.static_joints
    assert tuple(stick.scaledirs.shape) == (5, 55, 3)
    assert (mouse.num_vertices, mouse.num_joints, mouse.num_betas) == (11263, 31, 3)
    assert mouse.static_joints and not mouse.has_scaledirs and mouse.scaledirs is None
    assert len(stick.sha256) == 64 and stick.sha256 != mouse.sha256
    assert tuple(stick.faces.shape) == (6019, 3) and stick.faces.dtype == torch.long


def test_rest_pose_reproduces_template_and_regressed_joints(stick: SMILModel) -> None:
    out = stick(*zero_pose(stick))
    torch.testing.assert_close(out.vertices, stick.template.expand(2, -1, -1))
    torch.testing.assert_close(out.joints, (stick.J_regressor @ stick.template).expand(2, -1, -1))
    none = stick(None, torch.zeros(1, 3, dtype=F64), None)  # None = zero betas / identity
    torch.testing.assert_close(none.vertices[0], stick.template)


def test_static_joint_model_uses_the_files_joints(mouse: SMILModel, mouse_path: Path) -> None:
    data = load_model(mouse_path)
    betas = torch.randn(2, 3, dtype=F64)
    out = mouse(betas, torch.zeros(2, 3, dtype=F64), torch.zeros(2, 30, 3, dtype=F64))
    file_joints = torch.as_tensor(np.asarray(data["J"], np.float64))
    torch.testing.assert_close(out.joints, file_joints.expand(2, -1, -1))
    shaped = mouse.template + torch.einsum("vcn,bn->bvc", mouse.shapedirs, betas)
    torch.testing.assert_close(out.vertices, shaped)


@pytest.mark.parametrize("which", ["stick", "mouse"])
def test_matches_joint_by_joint_reference(which: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(which)
    data = load_model(model.path)
    p = random_params(model)
    out = model(**p)
    ref_v, ref_j = reference_forward(data, p)
    # translation is skinned through weights that sum to 1 within float32 rounding (~1e-7)
    torch.testing.assert_close(out.vertices, ref_v, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.joints, ref_j, atol=1e-10, rtol=1e-10)


def test_pose_correctives_and_non_identity_level_order() -> None:
    data = tiny_model(posedirs=True)
    model = SMILModel(data, name="tiny", dtype=F64)
    assert model.has_posedirs
    assert tree_levels(model.parents) == [[0], [1, 3], [2]]
    p = random_params(model, B=4, seed=3)
    out = model(**p)
    ref_v, ref_j = reference_forward(data, p)
    torch.testing.assert_close(out.vertices, ref_v)
    torch.testing.assert_close(out.joints, ref_j)
    rest = model(*zero_pose(model))  # identity rotations: no corrective offset
    torch.testing.assert_close(rest.vertices[0], model.template)


def test_root_rotation_is_rigid_about_the_root_joint(stick: SMILModel) -> None:
    p = random_params(stick, B=2, pca=False)
    del p["trans"], p["scale"]
    R1 = axis_angle_to_matrix(p.pop("global_rot"))
    R2 = axis_angle_to_matrix(torch.tensor([[0.3, -1.2, 0.5], [2.0, 0.1, -0.4]], dtype=F64))
    joint_rot = axis_angle_to_matrix(p.pop("joint_rot"))
    a = stick(global_rot=R1, joint_rot=joint_rot, rotation_format="matrix", **p)
    b = stick(global_rot=R2 @ R1, joint_rot=joint_rot, rotation_format="matrix", **p)
    root = a.joints[:, :1]
    torch.testing.assert_close(b.joints[:, :1], root)
    expected_v = torch.einsum("bij,bvj->bvi", R2, a.vertices - root) + root
    expected_j = torch.einsum("bij,bvj->bvi", R2, a.joints - root) + root
    torch.testing.assert_close(b.vertices, expected_v)
    torch.testing.assert_close(b.joints, expected_j)


def _fully_in(model: SMILModel, joints: set[int]) -> torch.Tensor:
    """Vertices whose skinning weights lie entirely on ``joints``."""
    mask = torch.zeros(model.num_joints, dtype=torch.bool)
    mask[list(joints)] = True
    w = model.weights
    return (w[:, ~mask].abs().sum(1) == 0) & (w[:, mask].sum(1) > 0)


def test_joint_scale_scales_descendant_bones_and_nothing_else(stick: SMILModel) -> None:
    j = stick.joint_names.index("l_1_fe_r")
    sub = subtree(stick.parents, j)
    assert len(sub) > 2
    p = random_params(stick, B=2, pca=False)
    p["joint_log_scales"] = torch.zeros_like(p["joint_log_scales"])
    base = stick(**p)
    scaled_p = dict(p, joint_log_scales=p["joint_log_scales"].clone())
    scaled_p["joint_log_scales"][:, j] = math.log(2.0)
    scaled = stick(**scaled_p)
    s = p["scale"][:, None]

    def bone_lengths(out):
        return torch.stack([(out.joints[:, k] - out.joints[:, stick.parents[k]]).norm(dim=-1)
                            for k in range(1, stick.num_joints)], 1) / s

    ratio = bone_lengths(scaled) / bone_lengths(base)
    for k in range(1, stick.num_joints):
        expected = 2.0 if stick.parents[k] in sub else 1.0
        torch.testing.assert_close(ratio[:, k - 1], torch.full((2,), expected, dtype=F64))
    outside = [k for k in range(stick.num_joints) if k not in sub]
    torch.testing.assert_close(scaled.joints[:, outside], base.joints[:, outside])
    still = _fully_in(stick, set(outside))
    inside = _fully_in(stick, sub)
    assert still.sum() > 100 and inside.sum() > 10
    torch.testing.assert_close(scaled.vertices[:, still], base.vertices[:, still])
    centre = base.joints[:, j:j + 1]
    torch.testing.assert_close(scaled.vertices[:, inside] - centre,
                               2 * (base.vertices[:, inside] - centre))
    # anisotropic: still nothing outside the subtree moves
    scaled_p["joint_log_scales"][:, j] = torch.tensor([0.4, -0.3, 0.9], dtype=F64)
    aniso = stick(**scaled_p)
    torch.testing.assert_close(aniso.vertices[:, still], base.vertices[:, still])
    torch.testing.assert_close(aniso.joints[:, outside], base.joints[:, outside])


def test_joint_trans_moves_that_joints_subtree(stick: SMILModel) -> None:
    j = stick.joint_names.index("b_h")
    sub = sorted(subtree(stick.parents, j))
    outside = [k for k in range(stick.num_joints) if k not in sub]
    betas, g, jr = zero_pose(stick, B=1)
    shift = torch.zeros(1, stick.num_joints, 3, dtype=F64)
    d = torch.tensor([0.01, -0.02, 0.03], dtype=F64)
    shift[0, j] = d
    base = stick(betas, g, jr)
    moved = stick(betas, g, jr, joint_trans=shift)
    torch.testing.assert_close(moved.joints[:, sub], base.joints[:, sub] + d)
    torch.testing.assert_close(moved.joints[:, outside], base.joints[:, outside])
    inside, still = _fully_in(stick, set(sub)), _fully_in(stick, set(outside))
    assert inside.sum() > 10
    torch.testing.assert_close(moved.vertices[:, inside], base.vertices[:, inside] + d)
    torch.testing.assert_close(moved.vertices[:, still], base.vertices[:, still])
    # posed: the subtree still moves rigidly, by the shift rotated into the parent's frame
    p = random_params(stick, B=2, pca=False)
    del p["joint_trans"], p["scale"], p["joint_log_scales"]  # (parent scales would scale it)
    base = stick(**p)
    moved = stick(**p, joint_trans=shift.expand(2, -1, -1))
    delta = moved.joints[:, sub] - base.joints[:, sub]
    torch.testing.assert_close(delta, delta[:, :1].expand_as(delta))
    torch.testing.assert_close(delta[:, 0].norm(dim=-1), d.norm().expand(2))
    torch.testing.assert_close(moved.joints[:, outside], base.joints[:, outside])


def test_global_scale_then_translation(stick: SMILModel) -> None:
    p = random_params(stick, B=2)
    scale, trans = p.pop("scale"), p.pop("trans")
    plain = stick(**p)
    placed = stick(**p, scale=scale, trans=trans)
    torch.testing.assert_close(placed.vertices,
                               scale[:, None, None] * plain.vertices + trans[:, None],
                               atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(placed.joints, scale[:, None, None] * plain.joints + trans[:, None])
    also = stick(**p, scale=scale[:, None], trans=trans)  # (B, 1) scale is accepted too
    torch.testing.assert_close(also.vertices, placed.vertices)


def test_pca_weights_equal_explicit_scales_and_translations(stick: SMILModel) -> None:
    p = random_params(stick, B=2, pca=False)
    sw = torch.randn(2, stick.num_scale_dirs, dtype=F64)
    tw = torch.randn(2, stick.num_trans_dirs, dtype=F64)
    via_pca = stick(**p, scale_weights=sw, trans_weights=tw)
    explicit = dict(p)
    explicit["joint_log_scales"] = p["joint_log_scales"] + torch.einsum(
        "bn,njc->bjc", sw, stick.scaledirs)
    explicit["joint_trans"] = p["joint_trans"] + torch.einsum("bn,njc->bjc", tw, stick.transdirs)
    direct = stick(**explicit)
    torch.testing.assert_close(via_pca.vertices, direct.vertices)
    torch.testing.assert_close(via_pca.joints, direct.joints)


def test_joint_transforms(stick: SMILModel) -> None:
    p = random_params(stick, B=2)
    out = stick(**p, return_transforms=True)
    T = out.joint_transforms
    assert T.shape == (2, 55, 4, 4)
    torch.testing.assert_close(T[..., :3, 3], out.joints)
    last_row = torch.tensor([0, 0, 0, 1.0], dtype=F64).expand(2, 55, 4)
    torch.testing.assert_close(T[..., 3, :], last_row)
    root = p["scale"][:, None, None] * axis_angle_to_matrix(p["global_rot"]) @ torch.diag_embed(
        torch.exp(p["joint_log_scales"][:, 0] + torch.einsum(
            "bn,nc->bc", p["scale_weights"], stick.scaledirs[:, 0])))
    torch.testing.assert_close(T[:, 0, :3, :3], root)
    assert stick(**p).joint_transforms is None


def test_gradients_reach_every_input(stick: SMILModel) -> None:
    p = {k: v.clone().requires_grad_(True) for k, v in random_params(stick, B=2).items()}
    out = stick(**p)
    g = torch.Generator().manual_seed(5)
    loss = (out.vertices * torch.randn(out.vertices.shape, generator=g, dtype=F64)).sum() + (
        out.joints * torch.randn(out.joints.shape, generator=g, dtype=F64)).sum()
    loss.backward()
    assert set(p) == {"betas", "global_rot", "joint_rot", "trans", "scale", "joint_log_scales",
                      "joint_trans", "scale_weights", "trans_weights"}
    for name, x in p.items():
        assert x.grad is not None, name
        assert torch.isfinite(x.grad).all(), name
        assert x.grad.abs().sum() > 0, name
    # every joint's rotation, scale and translation matters (leaf rotations move vertices)
    assert (p["joint_rot"].grad.abs().sum(-1) > 0).all()
    assert (p["joint_trans"].grad.abs().sum(-1) > 0).all()


def test_batch_of_one_equals_its_row_in_a_batch(stick32: SMILModel) -> None:
    p = random_params(stick32, B=5, dtype=torch.float32)
    full = stick32(**p)
    one = stick32(**{k: v[3:4] for k, v in p.items()})
    torch.testing.assert_close(one.vertices[0], full.vertices[3])
    torch.testing.assert_close(one.joints[0], full.joints[3])


def test_float32_and_float64(stick: SMILModel, stick32: SMILModel) -> None:
    p64 = random_params(stick, B=2)
    p32 = {k: v.float() for k, v in p64.items()}
    out32 = stick32(**p32)
    out64 = stick(**p64)
    assert out32.vertices.dtype == torch.float32 and out64.vertices.dtype == F64
    torch.testing.assert_close(out32.vertices.double(), out64.vertices, atol=1e-4, rtol=1e-4)
    mixed = stick32(**p64)  # float64 inputs to a float32 module: computed in float64
    assert mixed.vertices.dtype == F64
    torch.testing.assert_close(mixed.vertices, out64.vertices, atol=1e-6, rtol=1e-6)


def test_rotation_formats_agree(stick: SMILModel) -> None:
    p = random_params(stick, B=2)
    aa_g, aa_j = p.pop("global_rot"), p.pop("joint_rot")
    ref = stick(global_rot=aa_g, joint_rot=aa_j, **p)
    Rg, Rj = axis_angle_to_matrix(aa_g), axis_angle_to_matrix(aa_j)
    for fmt, conv in (("matrix", lambda R: R), ("6d", matrix_to_rot6d),
                      ("quaternion", matrix_to_quaternion)):
        out = stick(global_rot=conv(Rg), joint_rot=conv(Rj), rotation_format=fmt, **p)
        torch.testing.assert_close(out.vertices, ref.vertices, msg=fmt)
        torch.testing.assert_close(out.joints, ref.joints, msg=fmt)
    identity6d = torch.tensor([1.0, 0, 0, 0, 1, 0], dtype=F64)
    rest = stick(None, identity6d.expand(1, 6), identity6d.expand(1, 54, 6), rotation_format="6d")
    torch.testing.assert_close(rest.vertices[0], stick.template)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"joint_rot": torch.zeros(2, 30, 3)},
         r"joint_rot.*\(2, 54, 3\).*55 joints.*got \(2, 30, 3\)"),
        ({"joint_rot": torch.zeros(2, 55, 3)}, r"got \(2, 55, 3\)"),
        ({"betas": torch.zeros(2, 3)}, r"betas.*\(2, 5\).*5 shape betas.*got \(2, 3\)"),
        ({"joint_log_scales": torch.zeros(2, 54, 3)}, r"joint_log_scales.*\(2, 55, 3\)"),
        ({"joint_trans": torch.zeros(2, 55)}, r"joint_trans"),
        ({"trans": torch.zeros(3, 3)}, r"trans.*\(2, 3\).*got \(3, 3\)"),
        ({"scale_weights": torch.zeros(2, 4)}, r"scale_weights.*5 scale directions"),
        ({"global_rot": torch.zeros(2, 6)}, r"global_rot.*\(2, 3\).*axis_angle"),
    ],
)
def test_wrong_shapes_raise_with_expected_and_actual(stick32: SMILModel, change: dict,
                                                     expected: str) -> None:
    p = {"betas": torch.zeros(2, 5), "global_rot": torch.zeros(2, 3),
         "joint_rot": torch.zeros(2, 54, 3)}
    p.update(change)
    with pytest.raises(ShapeMismatchError, match=expected):
        stick32(**p)


def test_pca_weights_on_a_model_without_directions_raise(mouse: SMILModel) -> None:
    with pytest.raises(ShapeMismatchError, match="no scaledirs"):
        mouse(*zero_pose(mouse), scale_weights=torch.zeros(2, 5, dtype=F64))
    with pytest.raises(SmilError, match="unknown rotation_format"):
        mouse(*zero_pose(mouse), rotation_format="euler")


def test_two_models_side_by_side(stick: SMILModel, mouse: SMILModel) -> None:
    p = random_params(stick, B=2)
    first = stick(**p)
    mouse_out = mouse(**random_params(mouse, B=2))
    again = stick(**p)
    torch.testing.assert_close(first.vertices, again.vertices, rtol=0, atol=0)
    assert mouse_out.vertices.shape == (2, 11263, 3) and first.vertices.shape == (2, 3020, 3)
    assert stick.joint_names != mouse.joint_names


def test_module_conversion_and_no_checkpoint_bloat(stick_data: dict) -> None:
    model = SMILModel(stick_data, name="stick")
    assert model.sha256 is None and model.template.dtype == torch.float32
    assert model.state_dict() == {}  # everything comes from the model file
    model = model.double()
    out = model(*zero_pose(model, B=1))
    assert out.vertices.dtype == F64
    torch.testing.assert_close(out.vertices[0], model.template)
