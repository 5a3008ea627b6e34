"""Synthetic data: a body model rendered in random poses by calibrated cameras (``smil synth``).

Every sample is one frame of one animal: the body model posed with random parameters, placed near
the world origin and seen by ``V`` pinhole cameras. For each view the generator renders a shaded
image over a procedural textured background, a silhouette mask, the exact 2D keypoints (the body
model's joints projected) and their occlusion-aware visibility; per sample it stores the 3D
keypoints and the ground-truth body parameters.

Conventions (``docs/conventions.md``; details in ``docs/synthetic.md``):

* **World frame**: the body model's own axes, z up (SMIL models are x-forward, z-up). The animal
  stands upright up to a small pitch and roll, with a random yaw about z.
* **Units**: one world unit is ``world_unit_m`` metres (default 0.01: one world unit = 1 cm, so a
  SMIL model about one unit long is a centimetre-sized insect). The global ``scale`` is world units
  per model unit.
* **Parameters** follow :data:`smil.data.manifest.PARAM_SHAPES` and are exactly what was fed to
  :class:`smil.body.model.SMILModel`: feeding them through the model again and projecting with the
  stored ``K, R, t`` reproduces the stored 2D keypoints (float64 throughout).
* **Cameras**: ``rig="fixed"`` is one calibrated rig shared by all samples (``V`` cameras on a ring
  around the origin at alternating elevations, looking at the origin, no roll); it depends only on
  the settings and the body model, not on the seed. ``rig="random"`` draws a new camera per sample
  and view (azimuth, elevation, distance, field of view, small roll) looking at the animal.
  Principal point at the image centre ``((W − 1)/2, (H − 1)/2)``, square pixels.
* **Visibility**: a joint is visible in a view when it projects inside the image and the rendered
  surface at its pixel is at most ``visibility_factor × r_j`` in front of it, where ``r_j`` is the
  joint's distance to the nearest posed vertex among the 64 vertices nearest to it in the rest pose
  (the local radius of the limb or segment it sits in; at least ``visibility_floor`` × the body's
  bounding radius). A joint lies inside its own limb, so
  its own surface is about ``r_j`` in front of it; any other part of the body in front of it is
  farther and hides it.
* **Determinism**: every random draw of sample ``i`` comes from generators seeded with
  ``(seed, i, stream)`` and the body model runs on fixed, aligned batches (see
  :meth:`SyntheticGenerator.posed_bodies`), so samples can be made in any order or in parallel and
  the same seed gives identical parameters, manifests and image bytes.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from smil.data import textures
from smil.data.images import encode_jpeg, encode_png_mask
from smil.data.manifest import ManifestHeader, SampleRecord, ViewRecord, write_manifest
from smil.data.synth_settings import SynthSettings
from smil.errors import ConfigError, SmilError
from smil.io_utils import write_bytes_atomic
from smil.render.raster import (
    is_closed_outward,
    is_consistently_oriented,
    rasterize,
    shade_lambert,
    silhouette_mask,
    vertex_normals,
    visible_points,
    visible_points_solid,
)

__all__ = [
    "Camera",
    "RenderedView",
    "SynthSample",
    "SynthSettings",
    "SyntheticGenerator",
    "fixed_rig",
    "joint_neighbourhoods",
    "joint_radii",
    "look_at",
    "random_camera",
    "write_synthetic_dataset",
]

# Random-number streams of one sample (the third entry of its seed).
_STREAM_BODY, _STREAM_PLACE, _STREAM_CAMERA, _STREAM_LOOK = 0, 1, 2, 3


@dataclass
class Camera:
    """A pinhole camera, OpenCV convention: ``x_cam = R · X + t``; float64 numpy arrays."""

    K: np.ndarray  # (3, 3)
    R: np.ndarray  # (3, 3)
    t: np.ndarray  # (3,)

    def to_camera(self, X: np.ndarray) -> np.ndarray:
        """World points ``(N, 3)`` → camera frame ``(N, 3)``."""
        return X @ self.R.T + self.t

    def project(self, X: np.ndarray) -> np.ndarray:
        """World points ``(N, 3)`` → pixels ``(N, 2)``."""
        h = self.to_camera(X) @ self.K.T
        return h[:, :2] / h[:, 2:3]


@dataclass
class RenderedView:
    camera: Camera
    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray  # (H, W) uint8, 255 = animal
    depth: np.ndarray  # (H, W) float64 camera z, inf = background
    keypoints2d: np.ndarray  # (J, 2) float64 pixels
    visibility: np.ndarray  # (J,) float64 in {0, 1}


@dataclass
class SynthSample:
    index: int
    sample_id: str
    params: dict[str, np.ndarray]  # PARAM_SHAPES names → float64 arrays
    vertices: np.ndarray  # (V, 3) world units
    joints: np.ndarray  # (J, 3) world units
    views: list[RenderedView]


def look_at(
    centre: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0]), roll: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """World→camera ``R, t`` of a camera at ``centre`` looking at ``target`` (OpenCV axes).

    The image's "up" (−y) is the projection of ``up`` unless the view is along ``up``; ``roll``
    (radians) then rotates the camera about its optical axis.
    """
    centre = np.asarray(centre, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-8:  # looking straight along up: any right vector will do
        right = np.cross(forward, np.array([1.0, 0.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = math.cos(roll), math.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    R = np.stack([right, down, forward])
    return R, -R @ centre


def _intrinsics(fov_deg: float, size: int) -> np.ndarray:
    f = size / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
    c = (size - 1) / 2.0
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def fixed_rig(settings: SynthSettings, radius: float) -> list[Camera]:
    """The calibrated rig: ``views`` cameras on a ring around the origin, looking at it.

    Camera ``k`` sits at azimuth ``20° + 360°·k/V`` and elevation ``rig_elevations[k mod n]``, at
    the distance where a sphere of ``radius`` world units at the origin fills ``rig_fill`` of the
    half field of view.
    """
    half = math.radians(settings.rig_fov) / 2.0
    distance = radius / math.sin(settings.rig_fill * half)
    K = _intrinsics(settings.rig_fov, settings.image_size)
    cams = []
    for k in range(settings.views):
        az = math.radians(20.0 + 360.0 * k / settings.views)
        el = math.radians(settings.rig_elevations[k % len(settings.rig_elevations)])
        centre = distance * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        R, t = look_at(centre, np.zeros(3))
        cams.append(Camera(K.copy(), R, t))
    return cams


def random_camera(
    rng: np.random.Generator, settings: SynthSettings, centre: np.ndarray, radius: float
) -> Camera:
    """A random camera looking at (about) a body with bounding sphere ``(centre, radius)``."""
    fov = rng.uniform(*settings.fov_range)
    half = math.radians(fov) / 2.0
    fill = rng.uniform(*settings.fill_range)
    distance = radius / math.sin(fill * half)
    az = rng.uniform(0.0, 2.0 * math.pi)
    el = math.radians(rng.uniform(*settings.elevation_range))
    direction = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    aim = centre + rng.normal(0.0, settings.aim_sigma * radius, size=3)
    roll = math.radians(
        float(
            np.clip(rng.normal(0.0, settings.roll_sigma), -3 * settings.roll_sigma, 3 * settings.roll_sigma)
        )
    )
    R, t = look_at(aim + distance * direction, aim, roll=roll)
    return Camera(_intrinsics(fov, settings.image_size), R, t)


def joint_neighbourhoods(joints: np.ndarray, vertices: np.ndarray, size: int = 64) -> np.ndarray:
    """Indices ``(J, size)`` of the ``size`` vertices nearest to each joint (in a rest pose)."""
    d2 = ((joints[:, None, :] - vertices[None, :, :]) ** 2).sum(-1)
    size = min(size, vertices.shape[0])
    return np.argpartition(d2, size - 1, axis=1)[:, :size]


def joint_radii(
    joints: np.ndarray, vertices: np.ndarray, floor: float, neighbourhoods: np.ndarray | None = None
) -> np.ndarray:
    """Local body radius ``(J,)`` around each joint: distance to the nearest vertex, at least ``floor``.

    With ``neighbourhoods`` (from :func:`joint_neighbourhoods` on the rest pose) only those
    vertices are searched: the joint's own limb or segment, which posing moves with it.
    """
    if neighbourhoods is None:
        d2 = ((joints[:, None, :] - vertices[None, :, :]) ** 2).sum(-1)
    else:
        d2 = ((vertices[neighbourhoods] - joints[:, None, :]) ** 2).sum(-1)
    return np.maximum(np.sqrt(d2.min(axis=1)), floor)


_LIMB_TOKENS = ("l", "leg", "an", "ant", "antenna", "ma", "mandible", "palp", "mx", "lb", "cerc")


def _is_limb(name: str) -> bool:
    """Leg, antenna or mouthpart joints by SMIL naming (``l_1_fe_r``, ``an_2_l``, ``ma_r``…)."""
    tokens = [t for t in name.lower().replace("-", "_").split("_") if t]
    return bool(tokens) and tokens[0].rstrip("0123456789") in _LIMB_TOKENS


def _model_dirs(model: Any, name: str, num_joints: int) -> np.ndarray | None:
    """A model's ``scaledirs``/``transdirs`` as float64 ``(K, J, 3)`` in joint order; None when absent.

    Uses a public ``scaledirs``/``transdirs`` attribute when the model has one; otherwise
    :class:`~smil.body.model.SMILModel`'s level-ordered buffers (``_scaledirs_lvl``), mapped back
    to joint order with ``_inv_order``.
    """
    flag = {"scaledirs": "has_scaledirs", "transdirs": "has_transdirs"}[name]
    if not getattr(model, flag, False):
        return None
    value = getattr(model, name, None)
    if value is None:
        lvl = getattr(model, f"_{name}_lvl", None)
        inv = getattr(model, "_inv_order", None)
        if lvl is None or inv is None:
            raise SmilError(f"{getattr(model, 'name', 'model')}: has {name} but does not expose them")
        value = lvl.reshape(lvl.shape[0], num_joints, 3)[:, inv]
    arr = (
        value.detach().cpu().double().numpy()
        if isinstance(value, torch.Tensor)
        else np.asarray(value, np.float64)
    )
    return arr.reshape(-1, num_joints, 3)


class SyntheticGenerator:
    """Generates synthetic samples from a body model.

    Args:
        model: a :class:`smil.body.model.SMILModel` (converted to float64 here on a private copy).
        settings: :class:`SynthSettings`.
    """

    def __init__(self, model: torch.nn.Module, settings: SynthSettings):
        self.settings = settings
        self.model = copy.deepcopy(model).double().eval()
        self.num_joints = int(model.num_joints)
        self.num_betas = int(model.num_betas)
        self.joint_names = list(model.joint_names)
        self.faces = np.asarray(
            model.faces.detach().cpu().numpy() if isinstance(model.faces, torch.Tensor) else model.faces,
            dtype=np.int64,
        )
        self.scaledirs = _model_dirs(model, "scaledirs", self.num_joints)
        self.transdirs = _model_dirs(model, "transdirs", self.num_joints)
        limb = np.array([_is_limb(n) for n in self.joint_names[1:]])
        self.joint_sigma = np.where(limb, settings.pose_sigma_limb, settings.pose_sigma_body)
        rest_v, rest_j = self._rest_pose()
        centre = (rest_v.min(0) + rest_v.max(0)) / 2.0
        self._rest_radius = float(np.linalg.norm(rest_v - centre, axis=1).max())
        self.neighbourhoods = joint_neighbourhoods(rest_j, rest_v)
        self.cull = is_closed_outward(rest_v, self.faces)
        self.solid = is_consistently_oriented(rest_v, self.faces)
        self.rig: list[Camera] | None = None
        if settings.rig == "fixed":
            # Largest expected animal: biggest global scale, posing slack, placement offset.
            reach = self._rest_radius * settings.scale_range[1] * 1.1 * (1.0 + 2.0 * settings.trans_sigma)
            self.rig = fixed_rig(settings, reach)

    # -- body ---------------------------------------------------------------------------------
    def _forward(self, params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Batched float64 body-model forward of stacked params; (B, V, 3) vertices, (B, J, 3) joints."""
        t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}
        with torch.no_grad():
            out = self.model.forward_params(t)
        return out.vertices.numpy(), out.joints.numpy()

    def _rest_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Vertices and joints of the model at zero parameters, unit scale."""
        J, B = self.num_joints, self.num_betas
        zero = {
            "betas": np.zeros((1, B)),
            "global_rot": np.zeros((1, 3)),
            "joint_rot": np.zeros((1, J - 1, 3)),
            "trans": np.zeros((1, 3)),
            "scale": np.ones(1),
            "log_beta_scales": np.zeros((1, J, 3)),
            "betas_trans": np.zeros((1, J, 3)),
        }
        v, j = self._forward(zero)
        return v[0], j[0]

    def sample_params(self, index: int) -> dict[str, np.ndarray]:
        """Body parameters of sample ``index`` before placement (``trans`` = 0)."""
        s = self.settings
        rng = np.random.default_rng([s.seed, index, _STREAM_BODY])
        J, B = self.num_joints, self.num_betas
        sig = self.joint_sigma[:, None]
        joint_rot = np.clip(rng.normal(0.0, 1.0, size=(J - 1, 3)), -s.pose_clip, s.pose_clip) * sig
        tilt = np.clip(rng.normal(0.0, s.tilt_sigma, size=2), -2.5 * s.tilt_sigma, 2.5 * s.tilt_sigma)
        yaw = rng.uniform(-180.0, 180.0)
        global_rot = Rotation.from_euler("ZYX", [yaw, tilt[0], tilt[1]], degrees=True).as_rotvec()
        betas = rng.normal(0.0, s.beta_sigma, size=B)
        lo, hi = s.scale_range
        scale = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        log_scales = np.zeros((J, 3))
        if self.scaledirs is not None:
            w = rng.normal(0.0, s.scale_weight_sigma, size=len(self.scaledirs))
            log_scales = np.einsum("k,kjc->jc", w, self.scaledirs)
        joint_trans = np.zeros((J, 3))
        if self.transdirs is not None:
            w = rng.normal(0.0, s.trans_weight_sigma, size=len(self.transdirs))
            joint_trans = np.einsum("k,kjc->jc", w, self.transdirs)
        return {
            "global_rot": global_rot,
            "joint_rot": joint_rot,
            "betas": betas,
            "trans": np.zeros(3),
            "scale": np.asarray(scale),
            "log_beta_scales": log_scales,
            "betas_trans": joint_trans,
        }

    def posed_bodies(
        self, indices: Sequence[int]
    ) -> list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
        """Params (with placement ``trans``), world vertices and joints of the given samples.

        The body model runs on fixed, aligned batches: sample ``i`` is always computed together
        with samples ``⌊i/b⌋·b … ⌊i/b⌋·b + b − 1`` (``b = batch_size``), because a batched matrix
        product may round differently for another batch composition. So a sample's bits depend
        only on ``(seed, i, batch_size)``, whatever else is generated alongside it.

        Each body is posed with ``trans = 0`` and then moved so its bounding-box centre lies at a
        small random offset from the origin; that offset is the stored ``trans`` (the model adds
        ``trans`` last, so this equals a forward with it).
        """
        out: list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]] = []
        chunk_id, chunk = None, {}
        for i in indices:
            if i // self.settings.batch_size != chunk_id:
                chunk_id = i // self.settings.batch_size
                chunk = self._posed_chunk(chunk_id)
            out.append(chunk[i])
        return out

    def _posed_chunk(self, chunk_id: int) -> dict[int, tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
        bs = self.settings.batch_size
        members = range(chunk_id * bs, (chunk_id + 1) * bs)
        plist = [self.sample_params(i) for i in members]
        stacked = {k: np.stack([p[k] for p in plist]) for k in plist[0]}
        verts, joints = self._forward(stacked)
        out = {}
        for i, p, v, j in zip(members, plist, verts, joints):
            rng = np.random.default_rng([self.settings.seed, i, _STREAM_PLACE])
            centre = (v.min(0) + v.max(0)) / 2.0
            radius = float(np.linalg.norm(v - centre, axis=1).max())
            trans = -centre + rng.normal(0.0, self.settings.trans_sigma * radius, size=3)
            out[i] = (dict(p, trans=trans), v + trans, j + trans)
        return out

    # -- views --------------------------------------------------------------------------------
    def cameras(self, index: int, vertices: np.ndarray) -> list[Camera]:
        """The cameras of sample ``index``: the fixed rig, or random cameras aimed at the body."""
        if self.rig is not None:
            return self.rig
        rng = np.random.default_rng([self.settings.seed, index, _STREAM_CAMERA])
        centre = (vertices.min(0) + vertices.max(0)) / 2.0
        radius = float(np.linalg.norm(vertices - centre, axis=1).max())
        return [random_camera(rng, self.settings, centre, radius) for _ in range(self.settings.views)]

    def render(
        self, index: int, vertices: np.ndarray, joints: np.ndarray, cameras: Sequence[Camera]
    ) -> list[RenderedView]:
        """Render every view of one posed body (world units)."""
        s = self.settings
        size = (s.image_size, s.image_size)
        rng = np.random.default_rng([s.seed, index, _STREAM_LOOK])
        hsv = np.array([[[rng.uniform(0, 180), rng.uniform(60, 220), rng.uniform(70, 230)]]], np.uint8)
        colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)
        albedo = np.clip(1.0 + rng.normal(0.0, 0.08, size=len(vertices)), 0.7, 1.3)
        light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.4, 1.5)])  # world, from above
        ambient = rng.uniform(*s.ambient_range)
        centre = (vertices.min(0) + vertices.max(0)) / 2.0
        body_radius = float(np.linalg.norm(vertices - centre, axis=1).max())
        radii = joint_radii(joints, vertices, s.visibility_floor * body_radius, self.neighbourhoods)
        normals = vertex_normals(vertices, self.faces)
        views = []
        for cam in cameras:
            bg = textures.random_background(rng, size)
            vc = cam.to_camera(vertices)
            raster = rasterize(vc, self.faces, cam.K, size, cull_back_faces=self.cull)
            shade = shade_lambert(
                raster,
                vc,
                self.faces,
                cam.K,
                cam.R @ light,
                ambient,
                1.0 - ambient,
                normals_cam=normals @ cam.R.T,
            )
            m = raster.mask
            image = bg
            if m.any():
                fv = self.faces[raster.face_id[m]]
                a = np.einsum("pk,pk->p", raster.bary[m], albedo[fv])
                image = bg.copy()
                image[m] = np.clip(np.rint(colour[None, :] * (shade[m] * a)[:, None]), 0, 255).astype(
                    np.uint8
                )
            jc = cam.to_camera(joints)
            kp = cam.project(joints)
            if self.solid:
                vis = visible_points_solid(jc, vc, self.faces, cam.K, size, radii)
            else:
                vis = visible_points(jc, raster.depth, cam.K, s.visibility_factor * radii)
            vis = vis.astype(np.float64)
            views.append(RenderedView(cam, image, silhouette_mask(raster), raster.depth, kp, vis))
        return views

    def samples(self, indices: Sequence[int]) -> Iterator[SynthSample]:
        """Generate the given samples, in the given order (any order; consecutive is fastest)."""
        indices = list(indices)
        bs = self.settings.batch_size
        start = 0
        while start < len(indices):
            # A run of consecutive indices in the same aligned batch shares one forward pass.
            stop = start + 1
            while stop < len(indices) and indices[stop] // bs == indices[start] // bs:
                stop += 1
            run = indices[start:stop]
            for i, (params, verts, joints) in zip(run, self.posed_bodies(run)):
                cams = self.cameras(i, verts)
                yield SynthSample(i, sample_id(i), params, verts, joints, self.render(i, verts, joints, cams))
            start = stop

    def header(self, model_sha256: str | None) -> ManifestHeader:
        info = {
            "generator": "smil synth",
            "settings": _jsonable(asdict(self.settings)),
            "visibility": (
                "in the image and the camera ray never leaves the body between its first surface "
                "and the joint (crossings within the joint's local radius ignored)"
                if self.solid
                else "in the image and z_joint <= rendered depth + "
                f"{self.settings.visibility_factor} * distance(joint, nearest vertex)"
            ),
            "world_frame": "body model axes, z up; animal near the origin",
        }
        if self.rig is not None:
            info["rig"] = [
                {"camera": n, "K": c.K.tolist(), "R": c.R.tolist(), "t": c.t.tolist()}
                for n, c in zip(self.settings.camera_names, self.rig)
            ]
        return ManifestHeader(
            source_kind="synthetic",
            joint_names=self.joint_names,
            world_unit_m=self.settings.world_unit_m,
            camera_names=self.settings.camera_names,
            body_model_sha256=model_sha256,
            info=info,
        )


def sample_id(index: int) -> str:
    return f"synth_{index:06d}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return list(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    return obj


def write_synthetic_dataset(
    out_dir: str | Path,
    model: torch.nn.Module,
    settings: SynthSettings,
    num_samples: int,
    model_sha256: str | None = None,
    progress: Any = None,
) -> Path:
    """Write ``num_samples`` samples to ``out_dir``: ``manifest.jsonl``, ``images/``, ``masks/``.

    Image and mask files are written atomically as the samples are made; the manifest is written
    last (atomically), so a finished manifest always refers to complete files. ``progress`` is an
    optional callable ``progress(done)`` called after each sample.

    Returns:
        The manifest's path.
    """
    if num_samples < 1:
        raise ConfigError(f"num_samples must be at least 1, got {num_samples}", field="num_samples")
    out_dir = Path(out_dir)
    gen = SyntheticGenerator(model, settings)
    sha = model_sha256 if model_sha256 is not None else getattr(model, "sha256", None)

    def records() -> Iterator[SampleRecord]:
        for done, sample in enumerate(gen.samples(range(num_samples)), start=1):
            views = []
            for name, view in zip(settings.camera_names, sample.views):
                stem = f"{sample.sample_id}_{name}"
                write_bytes_atomic(
                    out_dir / "images" / f"{stem}.jpg", encode_jpeg(view.image, settings.jpeg_quality)
                )
                write_bytes_atomic(out_dir / "masks" / f"{stem}.png", encode_png_mask(view.mask))
                views.append(
                    ViewRecord(
                        camera=name,
                        image={"path": f"images/{stem}.jpg"},
                        mask={"path": f"masks/{stem}.png", "value": 255},
                        K=view.camera.K,
                        R=view.camera.R,
                        t=view.camera.t,
                        image_size=(settings.image_size, settings.image_size),
                        keypoints2d=view.keypoints2d,
                        visibility=view.visibility,
                    )
                )
            yield SampleRecord(
                sample_id=sample.sample_id,
                group=sample.sample_id,
                views=views,
                keypoints3d=sample.joints,
                params=sample.params,
                session="",
                frame=sample.index,
            )
            if progress is not None:
                progress(done)

    path = out_dir / "manifest.jsonl"
    write_manifest(path, gen.header(sha), records())
    return path
