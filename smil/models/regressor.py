"""Single- and multi-view regressors from images to SMIL body and camera parameters.

Outputs (a dict of tensors; rotations in 6D):

- body: ``global_rot (B,6)``, ``joint_rot (B,J-1,6)``, ``betas (B,nb)``, ``trans (B,3)``,
  ``scale (B,)`` (global scale, ``exp(log_scale)``), ``log_beta_scales (B,J,3)``, ``betas_trans (B,J,3)``;
- camera: ``fov (B,1)``, ``cam_rot (B,6)``, ``cam_trans (B,3)`` for single-view; ``(B,V,…)`` per view
  for multi-view, one camera head per canonical camera slot of the rig (none with ``calibrated``
  cameras), plus ``principal_point (B,V,2)``: the calibration's (network-image pixels; a crop moves it
  off the centre), or the image centre for ``absolute`` cameras and padded views;
- ``iterations``: the body estimate after each IEF iteration (a list of dicts like the above);
- with ``keypoint_heatmaps``: ``heatmap_keypoints2d (B,V,J,2)``, the joints' soft-argmax positions in
  the network image (V = 1 for single-view; zeros for padded views), which also feed the head
  (:mod:`smil.models.components.keypoint_heatmaps`). Multi-view with ``triangulate_keypoints``: those
  keypoints, triangulated through the rig calibration, feed the body head as well
  (:mod:`smil.models.components.triangulated_keypoints`).

The camera maps world to camera (OpenCV): ``R = rot6d_to_matrix(cam_rot)``, ``t = cam_trans``, and
``K`` has ``fy = fx = H / (2·tan(fov/2))`` with the principal point at the image centre, or at
``principal_point`` where the prediction has one (:func:`camera_intrinsics`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from smil.errors import ConfigError, ShapeMismatchError
from smil.geometry.rotations import matrix_to_rot6d, rot6d_to_matrix
from smil.models.backbones import create_backbone
from smil.models.components.keypoint_heatmaps import KeypointHeatmaps
from smil.models.components.param_layout import ParamLayout
from smil.models.components.triangulated_keypoints import TriangulatedKeypoints
from smil.models.heads import create_head


@dataclass
class RegressorSpec:
    """Everything needed to rebuild a regressor (stored in checkpoints)."""

    mode: str
    num_joints: int
    num_betas: int
    backbone: str
    image_size: int
    head: str
    hidden_dim: int
    head_depth: int
    num_heads: int
    dropout: float
    ief_iterations: int
    cross_view_layers: int = 0
    camera_mode: str = "absolute"
    rig: list[str] = field(default_factory=list)
    keypoint_heatmaps: bool = False
    triangulate_keypoints: bool = False


#: Multi-view camera modes that read the rig calibration (K, R, t per view of the network images).
CALIBRATED_MODES = ("delta", "calibrated")


def camera_intrinsics(fov: torch.Tensor, image_size: int, principal_point: torch.Tensor | None = None) -> torch.Tensor:
    """K (…,3,3) for a vertical field of view (…,1) on a square image of ``image_size`` pixels, with the
    principal point ``(…,2)`` in its pixels (default: the image centre)."""
    f = image_size / (2.0 * torch.tan(fov[..., 0] / 2.0))
    K = torch.zeros(*fov.shape[:-1], 3, 3, dtype=fov.dtype, device=fov.device)
    K[..., 0, 0] = f
    K[..., 1, 1] = f
    if principal_point is None:
        K[..., 0, 2] = K[..., 1, 2] = (image_size - 1) / 2.0
    else:
        K[..., :2, 2] = principal_point.to(fov.dtype)
    K[..., 2, 2] = 1.0
    return K


def fov_from_intrinsics(K: torch.Tensor, image_size: int) -> torch.Tensor:
    return (2.0 * torch.atan(image_size / (2.0 * K[..., 1, 1]))).unsqueeze(-1)


def _override(layout: ParamLayout, vector: torch.Tensor, values: dict[str, torch.Tensor]) -> None:
    """Overwrite the named blocks of a flat parameter buffer in place."""
    current = layout.split(vector.clone())
    for k, v in values.items():
        if k in current:
            current[k] = v.to(current[k]).reshape(current[k].shape)
    vector.copy_(layout.join(current))


def _finish_body(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(parts)
    out["scale"] = torch.exp(out.pop("log_scale")[..., 0])
    return out


def _iterations(layout: ParamLayout, estimates: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The named outputs of each IEF iteration's flat estimate ``(B, P)``.

    Eager, the blocks are views of the estimate. Compiled, each is a tensor of its own (the copy is
    fused into the kernel that computes it): an output that views the graph's memory is rebuilt, and
    differentiated, outside the graph, one eager operator per block."""
    fresh = torch.compiler.is_compiling()
    return [_finish_body({k: v.clone() if fresh else v for k, v in layout.split(x).items()}) for x in estimates]


class _Regressor(nn.Module):
    """What both regressors share: ``forward`` runs the backbone (and the keypoint heatmaps on its
    feature map), then ``decode``: everything after it (heads, IEF, cameras), or its compiled form."""

    def __init__(self) -> None:
        super().__init__()
        self._decode = self.decode  # or its compiled form (compile_heads)

    def compile_heads(self, **options: object) -> None:
        """``torch.compile(**options)`` everything but the backbone: the keypoint heatmaps and
        ``decode``, each as one graph (the heads' glue included), in place: parameter names and
        checkpoints are unchanged."""
        if self.heatmaps is not None:
            self.heatmaps.compile(**options)
        self._decode = torch.compile(self.decode, **options)


class SingleViewRegressor(_Regressor):
    def __init__(self, spec: RegressorSpec, pretrained_path: str = "") -> None:
        super().__init__()
        self.spec = spec
        self.backbone = create_backbone(spec.backbone, spec.image_size, pretrained_path)
        self.heatmaps = _heatmaps(spec, self.backbone)
        self.body_layout = ParamLayout.body(spec.num_joints, spec.num_betas)
        self.camera_layout = ParamLayout.camera()
        self.layout = ParamLayout(self.body_layout.blocks + self.camera_layout.blocks)
        self.register_buffer("init_params", self.layout.default_init())
        self.head = create_head(
            spec.head,
            feature_dim=self.backbone.dim,
            param_dim=self.layout.size,
            hidden_dim=spec.hidden_dim,
            depth=spec.head_depth,
            num_heads=spec.num_heads,
            dropout=spec.dropout,
            iterations=spec.ief_iterations,
        )

    def set_initial_params(self, values: dict[str, torch.Tensor]) -> None:
        """Start IEF at given values (e.g. the training set's mean parameters)."""
        _override(self.layout, self.init_params, values)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dim() != 4:
            raise ShapeMismatchError(f"expected images (B,3,H,W), got {tuple(images.shape)}")
        return self._decode(*_features(self.backbone, self.heatmaps, images))

    def decode(self, tokens: torch.Tensor, pooled: torch.Tensor, keypoints: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The outputs from the backbone's tokens ``(B,N,D)``, pooled feature ``(B,D)`` and heatmap
        keypoints ``(B,J,2)`` (or None)."""
        estimates = self.head(tokens, pooled, self.init_params.unsqueeze(0))
        iters = _iterations(self.layout, estimates)
        out = dict(iters[-1])
        out["iterations"] = iters
        if keypoints is not None:
            out["heatmap_keypoints2d"] = keypoints.unsqueeze(1)
        return out


class MultiViewRegressor(_Regressor):
    """Shared backbone over V views, cross-view attention, a body head over all valid views' tokens,
    and one camera head per canonical camera slot."""

    def __init__(self, spec: RegressorSpec, pretrained_path: str = "") -> None:
        super().__init__()
        if not spec.rig:
            raise ConfigError("a multi-view regressor needs the rig's camera names", field="rig")
        self.spec = spec
        self.num_views = len(spec.rig)
        self.backbone = create_backbone(spec.backbone, spec.image_size, pretrained_path)
        self.heatmaps = _heatmaps(spec, self.backbone)
        d = self.backbone.dim
        self.triangulation = None
        if spec.triangulate_keypoints:
            if self.heatmaps is None or spec.camera_mode not in CALIBRATED_MODES:
                raise ConfigError("triangulate_keypoints needs keypoint_heatmaps and camera_mode 'delta' or "
                                  "'calibrated' (the rig calibration)", field="model.triangulate_keypoints")
            self.triangulation = TriangulatedKeypoints(spec.num_joints, d)
        self.view_embed = nn.Parameter(torch.zeros(self.num_views, d))
        nn.init.normal_(self.view_embed, std=0.02)
        if spec.cross_view_layers > 0:
            layer = nn.TransformerEncoderLayer(
                d_model=d,
                nhead=_heads_for(d, spec.num_heads),
                dim_feedforward=2 * d,
                dropout=spec.dropout,
                batch_first=True,
                norm_first=True,
            )
            self.cross_view = nn.TransformerEncoder(
                layer, num_layers=spec.cross_view_layers, enable_nested_tensor=False
            )
        else:
            self.cross_view = None
        self.body_layout = ParamLayout.body(spec.num_joints, spec.num_betas)
        self.camera_layout = ParamLayout.camera()
        self.register_buffer("init_params", self.body_layout.default_init())
        self.register_buffer(
            "init_camera", self.camera_layout.default_init().unsqueeze(0).repeat(self.num_views, 1)
        )
        self.body_head = create_head(
            spec.head,
            feature_dim=d,
            param_dim=self.body_layout.size,
            hidden_dim=spec.hidden_dim,
            depth=spec.head_depth,
            num_heads=spec.num_heads,
            dropout=spec.dropout,
            iterations=spec.ief_iterations,
        )
        # "calibrated": the cameras are the calibration, so there is nothing to predict
        self.camera_heads = nn.ModuleList(
            nn.Sequential(nn.Linear(d, spec.hidden_dim), nn.GELU(), nn.Linear(spec.hidden_dim, self.camera_layout.size))
            for _ in range(0 if spec.camera_mode == "calibrated" else self.num_views)
        )
        for h in self.camera_heads:
            nn.init.zeros_(h[-1].weight)
            nn.init.zeros_(h[-1].bias)

    def set_initial_params(self, values: dict[str, torch.Tensor]) -> None:
        """Start at given body values and per-slot cameras (e.g. the training set's means)."""
        _override(self.body_layout, self.init_params, values)
        _override(self.camera_layout, self.init_camera, values)

    def forward(
        self,
        images: torch.Tensor,
        view_mask: torch.Tensor,
        calibration: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """``images`` (B,V,3,H,W); ``view_mask`` (B,V) bool, True for a real view; ``calibration``
        {K (B,V,3,3), R, t} is required in delta mode."""
        B, V = images.shape[:2]
        if V != self.num_views:
            raise ShapeMismatchError(f"expected {self.num_views} view slots (rig {self.spec.rig}), got {V}")
        view_mask = view_mask.bool()
        if self.spec.camera_mode in CALIBRATED_MODES and calibration is None:
            raise ConfigError(f"camera_mode '{self.spec.camera_mode}' needs the rig calibration (K, R, t per view)")
        valid = _valid_views(view_mask)
        # The backbone sees only real views: padded pixels cannot influence anything.
        tok_valid, pooled_valid, kp_valid = _features(self.backbone, self.heatmaps,
                                                      images.flatten(0, 1).index_select(0, valid))
        tokens = _place_views(tok_valid, valid, B, V)
        pooled = _place_views(pooled_valid, valid, B, V)
        keypoints = None if kp_valid is None else _place_views(kp_valid, valid, B, V)
        return self._decode(tokens, pooled, keypoints, view_mask, calibration)

    def decode(
        self, tokens: torch.Tensor, pooled: torch.Tensor, keypoints: torch.Tensor | None, view_mask: torch.Tensor,
        calibration: dict[str, torch.Tensor] | None,
    ) -> dict[str, torch.Tensor]:
        """The outputs from the backbone's tokens ``(B,V,N,D)``, pooled features ``(B,V,D)`` and
        heatmap keypoints ``(B,V,J,2)`` (or None) of every view slot, zeros for the padded ones."""
        B, V, N, D = tokens.shape
        view_tokens = pooled + self.view_embed.unsqueeze(0)
        if self.cross_view is not None:
            view_tokens = self.cross_view(view_tokens, src_key_padding_mask=~view_mask)
        view_tokens = view_tokens * view_mask.unsqueeze(-1)
        weights = view_mask.float().unsqueeze(-1)
        fused = view_tokens.sum(1) / weights.sum(1).clamp_min(1.0)
        init = self.init_params.unsqueeze(0)
        if self.triangulation is not None:
            _, embedding, placement = self.triangulation(keypoints, view_mask, calibration["K"], calibration["R"],
                                                         calibration["t"])
            fused = fused + embedding
            init = self._placed(init.expand(B, -1), *placement)
        token_mask = (~view_mask).unsqueeze(-1).expand(B, V, N).reshape(B, V * N)
        estimates = self.body_head(tokens.reshape(B, V * N, D), fused, init, token_mask)
        iters = _iterations(self.body_layout, estimates)
        out = dict(iters[-1])
        out["iterations"] = iters
        out.update(self._cameras(view_tokens, view_mask, calibration))
        if keypoints is not None:
            out["heatmap_keypoints2d"] = keypoints
        return out

    def _placed(
        self, init: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor, log_size: torch.Tensor, ok: torch.Tensor
    ) -> torch.Tensor:
        """``init (B, P)`` with the root rotation, translation and size of the triangulated placement where ``ok``."""
        parts = self.body_layout.split(init)
        m = ok.unsqueeze(-1)
        parts["global_rot"] = torch.where(m, matrix_to_rot6d(rot).to(init.dtype), parts["global_rot"])
        parts["trans"] = torch.where(m, trans.to(init.dtype), parts["trans"])
        parts["log_scale"] = torch.where(m, parts["log_scale"] + log_size.to(init.dtype).unsqueeze(-1),
                                         parts["log_scale"])
        return self.body_layout.join(parts)

    def _cameras(
        self, view_tokens: torch.Tensor, view_mask: torch.Tensor, calibration: dict[str, torch.Tensor] | None
    ) -> dict[str, torch.Tensor]:
        B = view_tokens.shape[0]
        if self.spec.camera_mode in CALIBRATED_MODES:
            base = {
                "fov": fov_from_intrinsics(calibration["K"], self.spec.image_size),
                "cam_rot": matrix_to_rot6d(calibration["R"]),
                "cam_trans": calibration["t"],
            }
            # a crop moves the principal point off the image centre; the calibration's is kept, never predicted
            centre = torch.full_like(calibration["K"][..., :2, 2], (self.spec.image_size - 1) / 2.0)
            principal = torch.where(view_mask.unsqueeze(-1), calibration["K"][..., :2, 2], centre)
            if self.spec.camera_mode == "calibrated":
                return {**{k: v.to(view_tokens.dtype) for k, v in base.items()}, "principal_point": principal}
        else:
            base = self.camera_layout.split(self.init_camera.unsqueeze(0).expand(B, -1, -1))
            principal = view_tokens.new_full((B, self.num_views, 2), (self.spec.image_size - 1) / 2.0)
        deltas = torch.stack([head(view_tokens[:, v]) for v, head in enumerate(self.camera_heads)], dim=1)
        d = self.camera_layout.split(deltas)
        R_base = rot6d_to_matrix(base["cam_rot"])
        # Delta rotation: identity 6D plus the head's output, applied on the left of the base rotation.
        ident = torch.eye(2, 3, dtype=d["cam_rot"].dtype, device=d["cam_rot"].device).flatten()  # 1 0 0 0 1 0
        R = rot6d_to_matrix(ident + d["cam_rot"]) @ R_base
        cams = {
            "fov": base["fov"] + d["fov"],
            "cam_rot": matrix_to_rot6d(R),
            "cam_trans": base["cam_trans"] + d["cam_trans"],
        }
        # Padded views get the base camera: nothing about them depends on their pixels.
        m = view_mask.unsqueeze(-1)
        out = {k: torch.where(m, v, base[k].to(v.dtype)) for k, v in cams.items()}
        out["principal_point"] = principal.to(view_tokens.dtype)
        return out


def _valid_views(view_mask: torch.Tensor) -> torch.Tensor:
    """Flat indices into ``B·V`` of the real views of a ``(B, V)`` mask, on its device.

    The mask is read from the device once, before the backbone's work is queued (on a GPU, a read
    after it would make the host wait for the backbone, idle). Indexing with these indices, unlike
    boolean masks, reads nothing back, in the forward pass or the backward."""
    host = view_mask.cpu()
    if not bool(host.any(dim=1).all()):
        raise ShapeMismatchError("every sample needs at least one valid view")
    return host.flatten().nonzero().squeeze(1).to(view_mask.device, non_blocking=True)


def _place_views(values: torch.Tensor, valid: torch.Tensor, B: int, V: int) -> torch.Tensor:
    """``values (n, …)`` of the real views at their slots of a ``(B, V, …)`` tensor, zeros elsewhere."""
    out = values.new_zeros(B * V, *values.shape[1:])
    return out.index_put((valid,), values).view(B, V, *values.shape[1:])


def _heatmaps(spec: RegressorSpec, backbone) -> KeypointHeatmaps | None:
    if not spec.keypoint_heatmaps:
        return None
    return KeypointHeatmaps(backbone.map_dim, spec.num_joints, backbone.dim)


def _features(
    backbone, heatmaps: KeypointHeatmaps | None, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Backbone tokens and pooled feature; with heatmaps, the keypoints ``(N,J,2)`` too, their
    embedding added to the pooled feature that the heads (and cameras) read."""
    if heatmaps is None:
        return (*backbone(images), None)
    tokens, pooled, fmap = backbone.forward_with_map(images)
    keypoints, embedding = heatmaps(fmap, images.shape[-1])
    return tokens, pooled + embedding, keypoints


def _heads_for(dim: int, wanted: int) -> int:
    for h in range(min(wanted, dim), 0, -1):
        if dim % h == 0:
            return h
    return 1


def create_regressor(spec: RegressorSpec, pretrained_path: str = "") -> nn.Module:
    if spec.mode == "singleview":
        return SingleViewRegressor(spec, pretrained_path)
    if spec.mode == "multiview":
        return MultiViewRegressor(spec, pretrained_path)
    raise ConfigError(f"unknown mode '{spec.mode}'; allowed: singleview, multiview", field="mode")


def spec_from_config(cfg, num_joints: int, num_betas: int, rig: list[str] | None = None) -> RegressorSpec:
    """The regressor spec for a resolved :class:`smil.config.TrainConfig`."""
    m = cfg.model
    return RegressorSpec(
        mode=cfg.mode,
        num_joints=num_joints,
        num_betas=num_betas,
        backbone=m.backbone,
        image_size=cfg.data.image_size,
        head=m.head,
        hidden_dim=m.hidden_dim,
        head_depth=m.head_depth,
        num_heads=m.num_heads,
        dropout=m.dropout,
        ief_iterations=m.ief_iterations,
        cross_view_layers=m.cross_view_layers if cfg.mode == "multiview" else 0,
        camera_mode=m.camera_mode if cfg.mode == "multiview" else "absolute",
        rig=list(rig or []),
        keypoint_heatmaps=m.keypoint_heatmaps,
        triangulate_keypoints=m.triangulate_keypoints if cfg.mode == "multiview" else False,
    )


__all__ = ["RegressorSpec", "SingleViewRegressor", "MultiViewRegressor", "create_regressor", "spec_from_config", "camera_intrinsics"]
