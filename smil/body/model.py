"""The SMIL body model: shape blend shapes, a scaled kinematic chain and linear blend skinning.

``SMILModel`` is a :class:`torch.nn.Module` built from a model dict (see :mod:`smil.body.io`).
Everything it knows comes from that dict: the number of joints, betas, joint names and parents.
There is no module-level state, so several models can be used side by side.

Forward conventions (see ``docs/body-model.md`` for the long form):

* ``global_rot`` is the root joint's rotation, ``joint_rot`` covers joints ``1..J-1``, all in one
  ``rotation_format`` (``"axis_angle"``, ``"6d"``, ``"matrix"`` or ``"quaternion"``).
* Rest joints are ``J_regressor · v_shaped`` (static-joint models: the file's ``J``).
* Joint ``j``'s local transform is ``[R_j · S_j | J_j − J_parent(j) + t_j]`` with
  ``S_j = diag(exp(log_scale_j))``: a joint's scale stretches the bones of its descendants and the
  mesh skinned to its subtree, in the joint's own (rotated) frame; ``t_j`` moves its subtree.
* Global scale multiplies about the origin first, then ``trans`` is added.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from smil.body.io import load_model, model_sha256, parents_from_kintree, validate_model
from smil.errors import ModelFileError, ShapeMismatchError, SmilError
from smil.geometry.rotations import ROTATION_FORMATS, to_matrix

__all__ = ["BodyOutput", "SMILModel", "tree_levels"]


class BodyOutput(NamedTuple):
    """Result of :meth:`SMILModel.forward`.

    Attributes:
        vertices: ``(B, V, 3)`` posed vertices in world units.
        joints: ``(B, J, 3)`` posed joint positions.
        joint_transforms: ``(B, J, 4, 4)`` world transform of each joint's frame (global scale and
            translation included), or ``None`` unless ``return_transforms=True``.
    """

    vertices: Tensor
    joints: Tensor
    joint_transforms: Tensor | None = None


def tree_levels(parents: list[int]) -> list[list[int]]:
    """Joints grouped by depth in the kinematic tree: ``[[root], [children of root], …]``."""
    depth = [-1] * len(parents)

    def get(j: int) -> int:
        if depth[j] < 0:
            depth[j] = 0 if parents[j] < 0 else get(parents[j]) + 1
        return depth[j]

    for j in range(len(parents)):
        get(j)
    levels: list[list[int]] = [[] for _ in range(max(depth) + 1)]
    for j, d in enumerate(depth):
        levels[d].append(j)
    return levels


def _as_np(data: Mapping[str, Any], key: str) -> np.ndarray:
    return np.asarray(data[key], dtype=np.float64)


def _empty(value: Any) -> bool:
    return value is None or (hasattr(value, "__len__") and len(value) == 0)


class SMILModel(torch.nn.Module):
    """A SMIL/SMAL/SMPL-format skinned body model.

    Args:
        data: a model dict in the pickle layout (as returned by :func:`smil.body.io.load_model`).
        name: a label used in error messages (default ``"model"``; the file name for
            :meth:`from_file`).
        dtype: floating dtype of the buffers (default ``torch.float32``); ``.to(dtype)`` also works.

    Attributes:
        num_joints, num_betas, num_vertices, num_faces: dimensions from the file.
        joint_names: the file's ``J_names`` (or ``joint_00``, ``joint_01``, …).
        parents: list of each joint's parent index, ``-1`` for the root (joint 0); the same as a
            long tensor buffer is ``parents_tensor``.
        has_scaledirs, has_transdirs: whether the file has per-joint scale/translation PCA.
        num_scale_dirs, num_trans_dirs: their number of components (0 when absent).
        static_joints: joints are the file's ``J`` and do not move with the shape.
        has_posedirs: the file has pose-corrective blend shapes (``lrotmin``).
        sha256: SHA-256 of the file when loaded with :meth:`from_file`, else ``None``.
        path: that file's path, else ``None``.

    Buffers (non-persistent: they come from the model file, not from a checkpoint):
        ``template`` (V, 3), ``shapedirs`` (V, 3, nb), ``J_regressor`` (J, V), ``weights`` (V, J)
        (rows renormalised to sum to 1 when the file's are within 1e-5 of it),
        ``parents_tensor`` (J,) long (``parents`` as a tensor), ``faces`` (F, 3) long,
        ``rest_joints`` (J, 3) at zero betas, ``scaledirs``/``transdirs`` (n, J, 3) or ``None``.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        name: str | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        path: str | Path | None = None,
        sha256: str | None = None,
    ):
        super().__init__()
        self.name = name or "model"
        self.path = None if path is None else str(path)
        self.sha256 = sha256
        validate_model(dict(data), self.path or self.name)
        data = dict(data)

        template = _as_np(data, "v_template")
        V = template.shape[0]
        parents = parents_from_kintree(np.asarray(data["kintree_table"]))
        J = len(parents)
        if parents[0] != -1:
            raise ModelFileError(
                "the root joint must be joint 0 (global_rot is the root's rotation)",
                path=self.path or self.name, field="kintree_table",
            )
        shapedirs = _as_np(data, "shapedirs").reshape(V, 3, -1)
        nb = shapedirs.shape[2]
        weights = _as_np(data, "weights")
        # Skinning weights should sum to 1 per vertex; files store them in float32, off by ~1e-7.
        # Rows within 1e-5 of 1 are renormalised (so a translation moves every vertex exactly);
        # otherwise the weights are kept and the forward corrects the skinned translation.
        row_sums = weights.sum(1)
        deficit = None
        if np.abs(row_sums - 1.0).max() <= 1e-5:
            weights = weights / row_sums[:, None]
        else:
            deficit = 1.0 - row_sums
        faces = np.asarray(data["f"], dtype=np.int64)
        self.static_joints = bool(data.get("static_joint_locs", False))
        if "J_regressor" in data:
            j_regressor = _as_np(data, "J_regressor")
        else:  # static-joint model without a regressor
            j_regressor = np.zeros((J, V))
        if self.static_joints:
            j_template = _as_np(data, "J")
            j_dirs = np.zeros((J, 3, nb))
        else:
            j_template = j_regressor @ template
            j_dirs = np.einsum("jv,vcn->jcn", j_regressor, shapedirs)

        self.num_vertices, self.num_joints, self.num_betas = V, J, nb
        self.num_faces = faces.shape[0]
        self.parents = parents
        names = data.get("J_names")
        if names is None or len(names) != J:
            names = [f"joint_{j:02d}" for j in range(J)]
        self.joint_names = [str(n) for n in names]

        scaledirs = None if _empty(data.get("scaledirs")) else _as_np(data, "scaledirs")
        transdirs = None if _empty(data.get("transdirs")) else _as_np(data, "transdirs")
        posedirs = None if _empty(data.get("posedirs")) else _as_np(data, "posedirs")
        self.has_scaledirs = scaledirs is not None
        self.has_transdirs = transdirs is not None
        self.has_posedirs = posedirs is not None
        self.num_scale_dirs = 0 if scaledirs is None else scaledirs.shape[0]
        self.num_trans_dirs = 0 if transdirs is None else transdirs.shape[0]

        # ---- kinematic tree, grouped by depth; joints are processed in "level order" --------
        levels = tree_levels(parents)
        order = [j for lvl in levels for j in lvl]
        pos = {j: i for i, j in enumerate(order)}
        self._level_bounds: list[tuple[int, int]] = []
        start = 0
        for lvl in levels:
            self._level_bounds.append((start, start + len(lvl)))
            start += len(lvl)
        self._identity_order = order == list(range(J))
        self.num_levels = len(levels)

        def fbuf(name: str, value: np.ndarray, persistent: bool = False) -> None:
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(value), dtype=dtype),
                                 persistent=persistent)

        def ibuf(name: str, value: Any) -> None:
            self.register_buffer(name, torch.as_tensor(np.asarray(value, dtype=np.int64)),
                                 persistent=False)

        # public buffers, in the file's layout and joint order
        fbuf("template", template)
        fbuf("shapedirs", shapedirs)
        fbuf("J_regressor", j_regressor)
        fbuf("weights", weights)
        ibuf("parents_tensor", parents)
        ibuf("faces", faces)
        fbuf("rest_joints", j_template)
        for key, dirs in (("scaledirs", scaledirs), ("transdirs", transdirs)):
            if dirs is None:
                self.register_buffer(key, None, persistent=False)
            else:
                fbuf(key, dirs)

        # ---- internal, precomputed layouts ---------------------------------------------------
        # vertices are handled channel-first, (B, 3, V), so every per-vertex op runs on rows
        fbuf("_template_cf", template.T.reshape(-1))                      # (3V,)
        fbuf("_shapedirs_cf", shapedirs.transpose(2, 1, 0).reshape(nb, -1))  # (nb, 3V)
        if posedirs is not None:
            P = posedirs.shape[-1]
            fbuf("_posedirs_cf", posedirs.reshape(V, 3, P).transpose(2, 1, 0).reshape(P, -1))
        # joint quantities in level order: rest joints as J_template + betas · J_dirs
        parent_pos = np.array([pos[parents[j]] if parents[j] >= 0 else -1 for j in order])
        j_lvl = j_template[order]                                     # (J, 3)
        jd_lvl = j_dirs[order]                                        # (J, 3, nb)
        fbuf("_joints_lvl", j_lvl.reshape(-1))                        # (3J,)
        fbuf("_joint_dirs_lvl", jd_lvl.transpose(2, 0, 1).reshape(nb, -1))   # (nb, 3J)
        fbuf("_weights_lvl", weights[:, order])                       # (V, J)
        if scaledirs is not None:
            fbuf("_scaledirs_lvl", scaledirs[:, order].reshape(self.num_scale_dirs, -1))
        if transdirs is not None:
            fbuf("_transdirs_lvl", transdirs[:, order].reshape(self.num_trans_dirs, -1))
        ibuf("_order", order)                                         # level pos → joint
        ibuf("_inv_order", np.argsort(order))                         # joint → level pos
        for li in range(1, len(levels)):
            s0, _ = self._level_bounds[li - 1]
            s, e = self._level_bounds[li]
            ibuf(f"_level_parent_{li}", parent_pos[s:e] - s0)         # index into previous level
        if deficit is not None:
            fbuf("_weights_deficit", deficit.reshape(1, 1, V))
        else:
            self.register_buffer("_weights_deficit", None, persistent=False)
        hom = torch.zeros(4, dtype=dtype)
        hom[3] = 1
        self.register_buffer("_hom_row", hom, persistent=False)

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, *, dtype: torch.dtype = torch.float32) -> SMILModel:
        """Load a model file safely (see :func:`smil.body.io.load_model`) and build the model."""
        data = load_model(path)
        return cls(data, name=Path(path).name, dtype=dtype, path=path, sha256=model_sha256(path))

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, vertices={self.num_vertices}, joints={self.num_joints}, "
                f"betas={self.num_betas}, scaledirs={self.num_scale_dirs}, "
                f"transdirs={self.num_trans_dirs}, static_joints={self.static_joints}")

    # ------------------------------------------------------------------------------------------
    def _check(self, name: str, x: Tensor | None, tail: tuple[int, ...], B: int,
               hint: str = "") -> None:
        if x is None:
            return
        if not isinstance(x, Tensor):
            raise SmilError(f"{self.name}: {name} must be a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape) != (B, *tail):
            exp = "(" + ", ".join(["B"] + [str(t) for t in tail]) + ")"
            exp_b = (B, *tail)
            raise ShapeMismatchError(
                f"{self.name}: {name}: expected shape {exp} = {exp_b}{hint}, "
                f"got {tuple(x.shape)}"
            )

    def forward_params(self, params: Mapping[str, Tensor], rotation_format: str = "axis_angle") -> BodyOutput:
        """Pose with parameters named as in datasets and predictions (``smil.data.manifest.PARAM_SHAPES``):
        ``global_rot, joint_rot, betas, trans, scale, log_beta_scales, betas_trans``; absent ones
        take their defaults (zeros, identity, unit scale)."""
        return self(
            betas=params.get("betas"),
            global_rot=params["global_rot"],
            joint_rot=params.get("joint_rot"),
            trans=params.get("trans"),
            scale=params.get("scale"),
            joint_log_scales=params.get("log_beta_scales"),
            joint_trans=params.get("betas_trans"),
            rotation_format=rotation_format,
        )

    def forward(
        self,
        betas: Tensor | None,
        global_rot: Tensor,
        joint_rot: Tensor | None,
        trans: Tensor | None = None,
        scale: Tensor | None = None,
        joint_log_scales: Tensor | None = None,
        joint_trans: Tensor | None = None,
        scale_weights: Tensor | None = None,
        trans_weights: Tensor | None = None,
        rotation_format: str = "axis_angle",
        return_transforms: bool = False,
    ) -> BodyOutput:
        """Pose and shape the model.

        Args:
            betas: ``(B, nb)`` shape coefficients (``None``: zeros).
            global_rot: root joint rotation, ``(B, 3)`` / ``(B, 6)`` / ``(B, 3, 3)`` /
                ``(B, 4)`` for ``rotation_format`` axis_angle / 6d / matrix / quaternion.
            joint_rot: rotations of joints ``1..J-1`` relative to their parents, ``(B, J-1, …)``
                in the same format (``None``: identity).
            trans: ``(B, 3)`` global translation, added last.
            scale: ``(B,)`` (or ``(B, 1)``) global scale about the origin, applied before ``trans``.
            joint_log_scales: ``(B, J, 3)`` per-joint, per-axis log-scales.
            joint_trans: ``(B, J, 3)`` per-joint translations of the joints' rest positions.
            scale_weights: ``(B, num_scale_dirs)`` PCA weights; ``scale_weights · scaledirs`` is
                added to ``joint_log_scales``.
            trans_weights: ``(B, num_trans_dirs)`` PCA weights; ``trans_weights · transdirs`` is
                added to ``joint_trans``.
            rotation_format: ``"axis_angle"``, ``"6d"``, ``"matrix"`` or ``"quaternion"``.
            return_transforms: also return the ``(B, J, 4, 4)`` joint transforms.

        Returns:
            :class:`BodyOutput` with ``vertices`` ``(B, V, 3)`` and ``joints`` ``(B, J, 3)``, in the
            dtype of ``global_rot`` (buffers are cast when the module's dtype differs).

        Raises:
            ShapeMismatchError: an input whose joint, beta or batch dimension does not match the
                model (the message gives expected and actual shapes).
        """
        J, nb = self.num_joints, self.num_betas
        if rotation_format not in ROTATION_FORMATS:
            allowed = ", ".join(repr(k) for k in ROTATION_FORMATS)
            raise SmilError(f"unknown rotation_format {rotation_format!r}; expected one of "
                            f"{allowed}")
        rtail = ROTATION_FORMATS[rotation_format]
        if not isinstance(global_rot, Tensor) or global_rot.ndim != 1 + len(rtail):
            got = tuple(global_rot.shape) if isinstance(global_rot, Tensor) else type(global_rot)
            raise ShapeMismatchError(
                f"{self.name}: global_rot: expected shape (B, {', '.join(map(str, rtail))}) for "
                f"rotation_format={rotation_format!r}, got {got}"
            )
        B = global_rot.shape[0]
        fmt_hint = f" for rotation_format={rotation_format!r}"
        self._check("global_rot", global_rot, rtail, B, fmt_hint)
        self._check("joint_rot", joint_rot, (J - 1, *rtail), B,
                    f" (the model has {J} joints; joint_rot covers joints 1..{J - 1},"
                    f" {rotation_format})")
        self._check("betas", betas, (nb,), B, f" (the model has {nb} shape betas)")
        self._check("trans", trans, (3,), B)
        if scale is not None and scale.ndim == 2:
            self._check("scale", scale, (1,), B)
            scale = scale[:, 0]
        self._check("scale", scale, (), B)
        self._check("joint_log_scales", joint_log_scales, (J, 3), B, f" ({J} joints)")
        self._check("joint_trans", joint_trans, (J, 3), B, f" ({J} joints)")
        if scale_weights is not None and not self.has_scaledirs:
            raise ShapeMismatchError(f"{self.name}: scale_weights given, but the model has no "
                                     "scaledirs")
        if trans_weights is not None and not self.has_transdirs:
            raise ShapeMismatchError(f"{self.name}: trans_weights given, but the model has no "
                                     "transdirs")
        self._check("scale_weights", scale_weights, (self.num_scale_dirs,), B,
                    f" ({self.num_scale_dirs} scale directions)")
        self._check("trans_weights", trans_weights, (self.num_trans_dirs,), B,
                    f" ({self.num_trans_dirs} translation directions)")

        dtype = global_rot.dtype if global_rot.is_floating_point() else self.template.dtype
        device = global_rot.device

        def buf(name: str) -> Tensor:
            t = getattr(self, name)
            return t if t.dtype == dtype else t.to(dtype)

        def inp(x: Tensor | None) -> Tensor | None:
            return x if x is None or x.dtype == dtype else x.to(dtype)

        betas, trans, scale = inp(betas), inp(trans), inp(scale)
        joint_log_scales, joint_trans = inp(joint_log_scales), inp(joint_trans)
        scale_weights, trans_weights = inp(scale_weights), inp(trans_weights)
        global_rot, joint_rot = inp(global_rot), inp(joint_rot)
        V = self.num_vertices

        order = None if self._identity_order else self._order

        def by_level(x: Tensor) -> Tensor:
            """(B, J, …) in joint order → (J, B, …) in level order (a view when possible)."""
            return (x if order is None else x.index_select(1, order)).transpose(0, 1)

        # Per-joint quantities are laid out joint-major, (J, B, …), in level order (joints
        # grouped by tree depth), so each level of the chain is a contiguous block.
        # ---- rotations, converted once ------------------------------------------------------
        if joint_rot is None:
            eye3 = torch.eye(3, dtype=dtype, device=device)
            rot = torch.cat([to_matrix(global_rot, rotation_format)[None],
                             eye3.expand(J - 1, B, 3, 3)], 0)          # root is level 0
        else:
            params = torch.cat([global_rot[:, None], joint_rot], 1)
            rot = to_matrix(by_level(params).contiguous(), rotation_format)   # (J, B, 3, 3)

        # ---- shape (and pose-corrective) blend shapes, channel-first (B, 3V) -----------------
        blend_coeffs, blend_dirs = [], []
        if betas is not None and nb > 0:
            blend_coeffs.append(betas)
            blend_dirs.append(buf("_shapedirs_cf"))
        if self.has_posedirs:  # lrotmin: (R_j − I) of joints 1..J-1, in joint order
            rot_j = rot if order is None else rot.index_select(0, self._inv_order)
            eye3 = torch.eye(3, dtype=dtype, device=device)
            blend_coeffs.append((rot_j[1:] - eye3).transpose(0, 1).reshape(B, -1))
            blend_dirs.append(buf("_posedirs_cf"))
        template_cf = buf("_template_cf")
        if blend_coeffs:
            coeffs = blend_coeffs[0] if len(blend_coeffs) == 1 else torch.cat(blend_coeffs, 1)
            dirs = blend_dirs[0] if len(blend_dirs) == 1 else torch.cat(blend_dirs, 0)
            v_cf = torch.addmm(template_cf, coeffs, dirs).view(B, 3, V)
        else:
            v_cf = template_cf.view(1, 3, V).expand(B, 3, V)

        # ---- rest joints J, per-joint scales S and translations t (J, B, 3) ----------------
        if betas is not None and nb > 0 and not self.static_joints:
            j_rest = torch.addmm(buf("_joints_lvl"), betas, buf("_joint_dirs_lvl"))
            j_rest = j_rest.view(B, J, 3).transpose(0, 1)
        else:
            j_rest = buf("_joints_lvl").view(J, 1, 3).expand(J, B, 3)
        shift = None if joint_trans is None else by_level(joint_trans)
        if trans_weights is not None:
            pca_t = (trans_weights @ buf("_transdirs_lvl")).view(B, J, 3).transpose(0, 1)
            shift = pca_t if shift is None else shift + pca_t
        log_s = None if joint_log_scales is None else by_level(joint_log_scales)
        if scale_weights is not None:
            pca_s = (scale_weights @ buf("_scaledirs_lvl")).view(B, J, 3).transpose(0, 1)
            log_s = pca_s if log_s is None else log_s + pca_s
        rs = rot if log_s is None else rot * torch.exp(log_s)[:, :, None, :]  # R·diag(s)

        # ---- kinematic chain on skinning transforms A_j = G_j·[I | −J_j] ---------------------
        # With G_j = G_p·[R_j S_j | J_j − J_p + t_j] this is A_j = A_p·[R_j S_j | c_j],
        # c_j = J_j + t_j − R_j S_j J_j, so the chain yields the skinning transforms directly.
        c = j_rest if shift is None else j_rest + shift
        for k in range(3):
            c = torch.addcmul(c, rs[..., k], j_rest[..., k:k + 1], value=-1)
        local = rs.new_empty(J, B, 4, 4)  # filled by slices: no large concatenations
        local[:, :, :3, :3] = rs
        local[:, :, :3, 3] = c
        local[:, :, 3, :] = buf("_hom_row")
        # level 0 is the root alone; the global placement [s·I | trans] is folded into it, so
        # every transform below is in world coordinates
        a_root = local[:1, :, :3]
        if scale is not None:
            a_root = a_root * scale.view(1, B, 1, 1)
        if trans is not None:
            a_root = a_root + torch.nn.functional.pad(trans.view(1, B, 3, 1), (3, 0))
        a_levels = [a_root]                                            # (n, B, 3, 4) each
        for li in range(1, self.num_levels):
            s, e = self._level_bounds[li]
            parent_a = a_levels[-1].index_select(0, getattr(self, f"_level_parent_{li}"))
            n = e - s                                                  # one bmm per level
            a_levels.append(torch.bmm(parent_a.view(n * B, 3, 4),
                                      local[s:e].view(n * B, 4, 4)).view(n, B, 3, 4))
        a = torch.cat(a_levels, 0)                                     # (J, B, 3, 4)

        # ---- linear blend skinning: (B·12, J) @ (J, V), then apply to the vertices ----------
        t = torch.matmul(a.view(J, B * 12).t(), buf("_weights_lvl").t()).view(B, 3, 4, V)
        out = torch.addcmul(t[:, :, 3], t[:, :, 0], v_cf[:, None, 0])
        out = torch.addcmul(out, t[:, :, 1], v_cf[:, None, 1])
        out = torch.addcmul(out, t[:, :, 2], v_cf[:, None, 2])        # (B, 3, V)
        if trans is not None and self._weights_deficit is not None:
            # rows of weights that do not sum to 1 skin the translation by their sum; undo that
            out = torch.addcmul(out, trans[:, :, None], buf("_weights_deficit"))
        vertices = out.transpose(1, 2).contiguous()

        # ---- posed joints G_t = A_j·[J_j; 1], back in joint order ----------------------------
        joints = a[..., 3]
        for k in range(3):
            joints = torch.addcmul(joints, a[..., k], j_rest[..., k:k + 1])  # (J, B, 3)
        if order is not None:
            joints = joints.index_select(0, self._inv_order)
        joints = joints.transpose(0, 1).contiguous()
        transforms = None
        if return_transforms:
            a_j = a if order is None else a.index_select(0, self._inv_order)
            top = torch.cat([a_j[..., :3], joints.transpose(0, 1)[..., None]], -1)
            transforms = torch.cat([top, buf("_hom_row").expand(J, B, 1, 4)], 2).transpose(0, 1)
        return BodyOutput(vertices, joints, transforms)
