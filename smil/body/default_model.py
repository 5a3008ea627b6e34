"""A procedural ant-like SMIL body model, generated entirely by project code.

:func:`build_default_model` returns a dict in the SMIL/SMAL pickle layout (the layout of
``SMILy_STICK.pkl``): ``f``, ``J_regressor``, ``kintree_table``, ``J``, ``bs_style``, ``weights``,
``posedirs`` (empty), ``v_template``, ``shapedirs``, ``bs_type``, ``sym_verts``, ``scaledirs``,
``transdirs``, ``J_names``, ``shape_cov`` and ``shape_mean_betas``. ``docs/default-model.md``
describes the model for users.

Rest-pose frame and unit
------------------------
Right-handed: ``+x`` points along the body axis towards the head, ``+z`` up (dorsal), ``+y`` to the
animal's left, so right-side parts (suffix ``_r``) have ``y < 0``. The root joint ``b_t`` (thorax,
at the middle legs' attachment) is at ``x = y = 0``. The rest pose is a standing ant: six splayed
legs whose tips rest on the plane ``z = -stand`` (about ``-0.16``), antennae raised forward,
mandibles closed. One model unit is the body length: from the gaster tip to the front of the head
is about 1.0 (mandibles add about 0.06). A real ant of body length ``L`` metres is this model
scaled by ``L`` metres per unit.

Anatomy and joints (51)
-----------------------
``b_t`` thorax (root); ``b_a_1`` petiole, ``b_a_2`` postpetiole, ``b_a_3`` .. ``b_a_5`` the three
gaster segments; per side and leg ``l_{1,2,3}_{co,tr,fe,ti,ta,pt}_{r,l}`` (front, middle, hind leg:
coxa, trochanter, femur, tibia, tarsus, pretarsus); ``b_h`` head; per side ``ma_{r,l}`` mandible
and ``an_{1,2,3}_{r,l}`` antenna (scape, funiculus, club). The order follows ``SMILy_STICK``
(without its wings). A joint sits where its segment begins; its bone runs to its child joint (or to
the segment tip for a leaf).

Mesh
----
A union of closed, consistently outward-oriented triangle meshes (one per body part: the body tube
from neck through mesosoma, petiole and postpetiole to the gaster tip; the head; per side an eye, a
mandible, an antenna and three legs). Each part is a tube of rings swept along a smooth centre line
(polyline with rounded corners) and closed with a pole at each end. Parts overlap where they join,
so silhouettes are continuous.

Every joint lies at the centre of one ring of vertices, and ``J_regressor`` averages that ring, so
``J_regressor @ v_template == J`` (to float32 precision) and regressed joints follow the shape
blend shapes. Skinning weights follow the length coordinate of each part: piecewise constant per
segment with a cubic smooth-step of half-width about one tube radius at each joint.

Shape space
-----------
``SHAPE_NAMES`` lists the six blend shapes (one beta = one standard deviation of a log-scale factor,
see ``SHAPE_SIGMAS``). ``shapedirs[..., k]`` is the derivative of the generated mesh with respect to
factor ``k``, so small betas reproduce the generator exactly and larger ones extrapolate smoothly.
``scaledirs`` (per-joint log-scales, ``SKELETON_DIR_NAMES``) and ``transdirs`` (per-joint rest
offsets in model units, ``TRANS_DIR_NAMES``) are six skeleton-level directions each, meant for their
own weights: whole legs, front versus hind legs, gaster, head, antennae, abdomen elongation; leg
spacing, leg spread, neck length, antenna sockets, waist length, leg attachment height.

A seed selects an individual: it jitters the proportions (segment lengths, widths, leg angles) by a
few percent, symmetrically. The same seed always gives the same arrays.
"""

from __future__ import annotations

import math

import numpy as np

from smil.errors import SmilError

__all__ = [
    "build_default_model",
    "joint_names",
    "SHAPE_NAMES",
    "SHAPE_SIGMAS",
    "SKELETON_DIR_NAMES",
    "TRANS_DIR_NAMES",
]

SHAPE_NAMES = (
    "body_length",
    "leg_length",
    "girth",
    "head_size",
    "gaster_size",
    "antenna_length",
)
"""Meaning of each shape direction (beta index order)."""

SHAPE_SIGMAS = (0.08, 0.10, 0.10, 0.10, 0.12, 0.12)
"""Log-scale change of the factor for one unit of the corresponding beta."""

LEG_SEGMENTS = ("co", "tr", "fe", "ti", "ta", "pt")
_SIDES = ("r", "l")

# parameter keys driven by each shape factor (values are multiplied by exp(sigma * beta))
_FACTOR_KEYS = {
    "body_length": ("meso_len", "neck_len", "pet_len", "ppet_len", "gaster_len", "head_len"),
    "leg_length": ("leg_len", "stand"),
    "girth": (
        "neck_r", "pro_w", "pro_h", "meso_w", "meso_h", "stalk_r", "node_w", "node_h",
        "ppet_w", "ppet_h", "gaster_w", "gaster_h", "head_w", "head_h",
        "leg_rad", "leg_node", "ant_rad", "ant_node", "mand_rad", "mand_node",
    ),
    "head_size": ("head_len", "head_w", "head_h", "eye", "mand_len", "mand_rad", "mand_node"),
    "gaster_size": ("gaster_len", "gaster_w", "gaster_h"),
    "antenna_length": ("ant_len",),
}

# seed jitter: relative (log-normal) standard deviation per key; angles get absolute degrees
_JITTER_REL = {
    "meso_len": 0.04, "pet_len": 0.06, "ppet_len": 0.06, "gaster_len": 0.05,
    "head_len": 0.04, "head_w": 0.04, "head_h": 0.04,
    "pro_w": 0.04, "meso_w": 0.04, "node_h": 0.06, "gaster_w": 0.05, "gaster_h": 0.05,
    "leg_len": 0.04, "leg_rad": 0.04, "ant_len": 0.05, "mand_len": 0.05, "stand": 0.04,
}
_JITTER_DEG = {"leg_az": 3.0, "leg_el": 3.0, "ant_dir": 3.0}

_N_BODY = 20  # vertices per ring, body tube and head (multiple of 4: exact mirror symmetry)
_N_LIMB = 8  # vertices per ring, legs, antennae, mandibles, eyes


# ----------------------------------------------------------------------------------------------
# joints


def joint_names() -> list[str]:
    """The 51 joint names in model order (``J_names``)."""
    names = ["b_t"] + [f"b_a_{i}" for i in range(1, 6)]
    for side in _SIDES:
        for leg in (1, 2, 3):
            names += [f"l_{leg}_{seg}_{side}" for seg in LEG_SEGMENTS]
    names.append("b_h")
    for side in _SIDES:
        names += [f"ma_{side}"] + [f"an_{i}_{side}" for i in (1, 2, 3)]
    return names


def _parent_name(name: str) -> str | None:
    if name == "b_t":
        return None
    if name.startswith("b_a_"):
        k = int(name[4:])
        return "b_t" if k == 1 else f"b_a_{k - 1}"
    if name == "b_h":
        return "b_t"
    side = name[-1]
    if name.startswith("l_"):
        leg, seg = name.split("_")[1:3]
        i = LEG_SEGMENTS.index(seg)
        return "b_t" if i == 0 else f"l_{leg}_{LEG_SEGMENTS[i - 1]}_{side}"
    if name.startswith("ma_"):
        return "b_h"
    if name.startswith("an_"):
        k = int(name.split("_")[1])
        return "b_h" if k == 1 else f"an_{k - 1}_{side}"
    raise ValueError(name)


def _mirror_name(name: str) -> str:
    if name.endswith("_r"):
        return name[:-2] + "_l"
    if name.endswith("_l"):
        return name[:-2] + "_r"
    return name


# ----------------------------------------------------------------------------------------------
# parameters


def _nominal_params() -> dict:
    """Nominal proportions, model units (body length about 1), angles in degrees."""
    return {
        # body axis lengths (x)
        "meso_len": 0.30, "neck_len": 0.03, "pet_len": 0.065, "ppet_len": 0.05, "gaster_len": 0.36,
        # body cross-sections: half widths (y), half heights (z), centre heights
        "neck_r": 0.022, "pro_w": 0.052, "pro_h": 0.050, "meso_w": 0.036, "meso_h": 0.042,
        "stalk_r": 0.011, "node_w": 0.021, "node_h": 0.034, "ppet_w": 0.028, "ppet_h": 0.027,
        "gaster_w": 0.125, "gaster_h": 0.105,
        "neck_z": 0.025, "pro_z": 0.018, "meso_z": 0.006, "stalk_z": -0.004, "node_z": 0.016,
        "ppet_z": 0.008, "gaster_z": 0.028,
        # head: full length / width / height; eye semi-axes (x, y, z)
        "head_len": 0.19, "head_w": 0.17, "head_h": 0.115,
        "eye": np.array([0.026, 0.011, 0.018]),
        # legs (rows: front, middle, hind; columns: co tr fe ti ta pt)
        "leg_len": np.array([
            [0.060, 0.030, 0.200, 0.175, 0.160, 0.025],
            [0.050, 0.030, 0.220, 0.190, 0.170, 0.025],
            [0.055, 0.035, 0.270, 0.240, 0.220, 0.025],
        ]),
        # mid-segment radii and node radii (node k = start of segment k; last = tip)
        "leg_rad": np.array([
            [0.020, 0.012, 0.0140, 0.0095, 0.0065, 0.0045],
            [0.017, 0.011, 0.0125, 0.0090, 0.0062, 0.0045],
            [0.019, 0.012, 0.0135, 0.0095, 0.0065, 0.0045],
        ]),
        "leg_node": np.array([
            [0.018, 0.011, 0.0105, 0.0085, 0.0062, 0.0045, 0.0022],
            [0.016, 0.010, 0.0095, 0.0080, 0.0060, 0.0045, 0.0022],
            [0.017, 0.011, 0.0100, 0.0085, 0.0062, 0.0045, 0.0022],
        ]),
        # azimuth per segment (deg from lateral towards +x) and elevation of co, tr, fe, ti
        "leg_az": np.array([
            [35.0, 40.0, 40.0, 45.0, 50.0, 50.0],
            [-5.0, -5.0, -5.0, -10.0, -15.0, -15.0],
            [-30.0, -35.0, -35.0, -40.0, -50.0, -50.0],
        ]),
        "leg_el": np.array([
            [-55.0, -25.0, 30.0, -45.0],
            [-55.0, -25.0, 30.0, -45.0],
            [-55.0, -25.0, 28.0, -45.0],
        ]),
        "stand": 0.16,  # depth of the ground plane below the root
        # antenna: scape, funiculus, club
        "ant_len": np.array([0.165, 0.165, 0.060]),
        "ant_rad": np.array([0.0075, 0.0055, 0.0095]),
        "ant_node": np.array([0.0065, 0.0055, 0.0060, 0.0045]),
        "ant_dir": np.array([[50.0, 35.0], [80.0, -20.0], [85.0, -30.0]]),  # (az, el) per segment
        # mandible: two pieces (base, bend), one joint at the base
        "mand_len": np.array([0.045, 0.040]),
        "mand_rad": np.array([0.011, 0.006]),
        "mand_node": np.array([0.011, 0.008, 0.0018]),
        "mand_dir": np.array([[80.0, -20.0], [120.0, -10.0]]),
    }


def _apply_factors(p: dict, log_factors: np.ndarray) -> dict:
    """Copy of ``p`` with each shape factor's parameters multiplied by ``exp(log_factor)``."""
    q = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in p.items()}
    for name, t in zip(SHAPE_NAMES, log_factors):
        if t == 0.0:
            continue
        f = math.exp(float(t))
        for key in _FACTOR_KEYS[name]:
            q[key] = q[key] * f
    return q


def _jitter(p: dict, rng: np.random.Generator) -> dict:
    """Copy of ``p`` with an individual's proportions (the same on both sides)."""
    q = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in p.items()}
    for key in sorted(_JITTER_REL):
        sd = _JITTER_REL[key]
        shape = np.shape(q[key])
        f = np.exp(rng.normal(0.0, sd, size=shape))
        q[key] = q[key] * (f if shape else float(f))
    for key in sorted(_JITTER_DEG):
        q[key] = q[key] + rng.normal(0.0, _JITTER_DEG[key], size=np.shape(q[key]))
    return q


# ----------------------------------------------------------------------------------------------
# small geometry helpers


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _direction(az_deg: float, el_deg: float) -> np.ndarray:
    """Unit vector for the right side (y < 0): azimuth from lateral towards +x, elevation up."""
    az, el = math.radians(az_deg), math.radians(el_deg)
    return np.array([math.cos(el) * math.sin(az), -math.cos(el) * math.cos(az), math.sin(el)])


def _ring_trig(n: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin of n equally spaced angles, exactly mirror-symmetric (k <-> n - k)."""
    k = np.arange(n)
    c = np.cos(2.0 * np.pi * k / n)
    s = np.sin(2.0 * np.pi * k / n)
    half, quarter = n // 2, n // 4
    s[0] = s[half] = 0.0
    c[quarter] = c[3 * quarter] = 0.0
    c[half + 1:] = c[1:half][::-1]
    s[half + 1:] = -s[1:half][::-1]
    return c, s


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _partition_weights(s, breaks, halfw, labels, n_joints) -> np.ndarray:
    """Skinning weights (len(s), n_joints) along a part's length coordinate ``s``.

    ``labels[k]`` owns the stretch between ``breaks[k-1]`` and ``breaks[k]``; at each break a cubic
    smooth-step of half-width ``halfw[k]`` hands over to the next label. Rows sum to one.
    """
    w = np.zeros((len(s), n_joints))
    steps = [_smoothstep((s - b + h) / (2.0 * h)) for b, h in zip(breaks, halfw)]
    w[:, labels[0]] += 1.0 - steps[0]
    for k in range(1, len(steps)):
        w[:, labels[k]] += steps[k - 1] - steps[k]
    w[:, labels[-1]] += steps[-1]
    return w


def _tube(centres, nvec, bvec, a, b, n, pole0, pole1):
    """Closed tube: pole0, rings (m, n), pole1. Ring k = centre + a cos(k) N + b sin(k) B.

    With N x B pointing from ring i to ring i + 1 the faces are oriented outwards.
    """
    c, s = _ring_trig(n)
    rings = (
        centres[:, None, :]
        + (a[:, None] * c[None, :])[..., None] * nvec[:, None, :]
        + (b[:, None] * s[None, :])[..., None] * bvec[:, None, :]
    )
    m = len(centres)
    verts = np.concatenate([pole0[None], rings.reshape(-1, 3), pole1[None]])
    k = np.arange(n)
    k1 = (k + 1) % n
    a0 = 1 + np.arange(m - 1)[:, None] * n + k[None, :]
    b0 = 1 + np.arange(m - 1)[:, None] * n + k1[None, :]
    # split each quad along the diagonal that mirrors onto its partner's (k <-> n - 1 - k)
    first = (k < n // 2)[None, :, None]
    tri_a = np.where(first, np.stack([a0, b0, b0 + n], -1), np.stack([a0, b0, a0 + n], -1))
    tri_b = np.where(first, np.stack([a0, b0 + n, a0 + n], -1), np.stack([b0, b0 + n, a0 + n], -1))
    side = np.stack([tri_a, tri_b], 2)
    last = 1 + (m - 1) * n
    faces = np.concatenate([
        np.stack([np.zeros(n, dtype=np.int64), 1 + k1, 1 + k], 1),
        side.reshape(-1, 3),
        np.stack([last + k, last + k1, np.full(n, 1 + m * n)], 1),
    ])
    return verts, faces


def _fill(mand: np.ndarray, plan, spacing_fn):
    """All sample positions: the mandatory ones plus per-gap fills at planned fractions.

    ``plan`` (list of fraction arrays, one per gap) is computed from ``spacing_fn(a, b)`` on the
    first (nominal) call and reused afterwards, so the topology never depends on the parameters.
    Returns (positions, index of each mandatory position, plan).
    """
    if plan is None:
        plan = [spacing_fn(a, b) for a, b in zip(mand[:-1], mand[1:])]
    out, idx = [mand[:1]], [0]
    count = 1
    for g, (a, b) in enumerate(zip(mand[:-1], mand[1:])):
        fr = plan[g]
        out.append(a + (b - a) * fr)
        count += len(fr)
        out.append(np.array([b]))
        idx.append(count)
        count += 1
    return np.concatenate(out), np.array(idx), plan


def _metric_fractions(x: np.ndarray, increments: np.ndarray) -> np.ndarray:
    """Fractions of [x[0], x[-1]] that split the cumulative metric into equal steps of <= 1."""
    m = np.concatenate([[0.0], np.cumsum(increments)])
    n = max(0, int(math.ceil(m[-1] - 1e-9)) - 1)
    if n == 0:
        return np.zeros(0)
    targets = m[-1] * np.arange(1, n + 1) / (n + 1)
    return (np.interp(targets, m, x) - x[0]) / (x[-1] - x[0])


_MAX_DW = 0.25  # largest change of any skinning weight between neighbouring rings (planned)


def _weight_increments(weights: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(weights, axis=0)).max(axis=1) / _MAX_DW


class _Part:
    """One closed component.

    ``coord`` is each vertex's position along the part (x for parts swept along the body axis,
    arc length for limbs); ``weight_fn(coord)`` gives the skinning weights. ``joint_rings`` maps a
    joint index to the (local) vertex indices of the ring centred on it.
    """

    def __init__(self, verts, faces, coord, weight_fn, joint_rings, ring_n):
        self.verts = verts
        self.faces = faces
        self.coord = coord
        self.weight_fn = weight_fn
        self.joint_rings = joint_rings
        self.ring_n = ring_n

    def weights(self) -> np.ndarray:
        return self.weight_fn(self.coord)


# ----------------------------------------------------------------------------------------------
# body tube and head (swept along x)


def _layout(p: dict) -> dict:
    """Positions of the body-axis landmarks along x (root at 0)."""
    lm, lg = p["meso_len"], p["gaster_len"]
    x_mf = 0.55 * lm
    x_a1 = x_mf - lm
    x_a2 = x_a1 - p["pet_len"]
    x_a3 = x_a2 - p["ppet_len"]
    return {
        "x_mf": x_mf, "x_bh": x_mf + p["neck_len"], "x_a1": x_a1, "x_a2": x_a2, "x_a3": x_a3,
        "x_a4": x_a3 - 0.30 * lg, "x_a5": x_a3 - 0.60 * lg, "x_tail": x_a3 - lg,
        "x_front": x_mf + 1.4 * p["neck_len"],
        "x_legs": np.array([x_mf - 0.22 * lm, x_mf - 0.55 * lm, x_mf - 0.84 * lm]),
    }


def _body_lobes(p: dict, lay: dict):
    """(centre, half length, half width, half height, z, exponent, egg) of each body lobe."""
    lm, lg = p["meso_len"], p["gaster_len"]
    x_mf, x_a1, x_a2, x_a3 = lay["x_mf"], lay["x_a1"], lay["x_a2"], lay["x_a3"]
    stalk0, stalk1 = x_a1 + 0.08 * lm, x_a3 - 0.02 * lg
    pet, ppet, neck = p["pet_len"], p["ppet_len"], p["neck_len"]
    return [
        # neck (reaches into the head), pronotum, mesonotum + propodeum
        (x_mf + 0.3 * neck, 1.1 * neck, p["neck_r"], p["neck_r"], p["neck_z"], 2.5, 0.0),
        (x_mf - 0.25 * lm, 0.27 * lm, p["pro_w"], p["pro_h"], p["pro_z"], 2.3, 0.0),
        (x_mf - 0.68 * lm, 0.36 * lm, p["meso_w"], p["meso_h"], p["meso_z"], 2.3, 0.0),
        # the thin waist stalk, the petiole node, the postpetiole
        (0.5 * (stalk0 + stalk1), 0.5 * (stalk0 - stalk1), p["stalk_r"], p["stalk_r"],
         p["stalk_z"], 6.0, 0.0),
        (x_a1 - 0.55 * pet, 0.42 * pet, p["node_w"], p["node_h"], p["node_z"], 2.2, 0.0),
        (x_a2 - 0.5 * ppet, 0.52 * ppet, p["ppet_w"], p["ppet_h"], p["ppet_z"], 2.2, 0.0),
        # gaster
        (x_a3 - 0.47 * lg, 0.53 * lg, p["gaster_w"], p["gaster_h"], p["gaster_z"], 2.0, 0.15),
    ]


def _body_profile(p: dict, lay: dict):
    lobes = _body_lobes(p, lay)
    power = 6.0

    def profile(x):
        x = np.asarray(x, dtype=float)
        ws, hs, om, zs = [], [], [], []
        for c, half, wd, ht, z, q, egg in lobes:
            u = (x - c) / half
            uc = np.clip(u, -1.0, 1.0)
            u = u - egg * (1.0 - uc * uc)  # egg > 0: widest in front of the middle
            f = np.clip(1.0 - np.abs(u) ** q, 0.0, None) ** (1.0 / q)
            ws.append((wd * f) ** power)
            hs.append((ht * f) ** power)
            om.append((wd * f) ** power + 1e-30 * np.exp(-np.minimum(u * u, 50.0)))
            zs.append(z)
        w = np.sum(ws, 0) ** (1.0 / power)
        h = np.sum(hs, 0) ** (1.0 / power)
        om = np.array(om)
        z = np.sum(om * np.array(zs)[:, None], 0) / np.sum(om, 0)
        return w, h, z

    return profile


def _xtube(xs, profile, n, y0=0.0):
    """Tube along +x: xs are pole, ring positions..., pole (increasing)."""
    w, h, z = profile(xs)
    centres = np.stack([xs, np.full_like(xs, y0), z], 1)
    m = len(xs) - 2
    nvec = np.tile([0.0, 0.0, 1.0], (m, 1))
    bvec = np.tile([0.0, -1.0, 0.0], (m, 1))
    return _tube(centres[1:-1], nvec, bvec, h[1:-1], w[1:-1], n, centres[0], centres[-1])


def _xtube_spacing(profile, weight_fn, step: float):
    """Ring spacing along x: at most ``step`` in profile metric and _MAX_DW in any weight."""

    def fn(a, b):
        x = np.linspace(a, b, 129)
        w, h, z = profile(x)
        geo = np.sqrt(np.diff(x) ** 2 + np.diff(w) ** 2 + np.diff(h) ** 2 + np.diff(z) ** 2) / step
        return _metric_fractions(x, np.maximum(geo, _weight_increments(weight_fn(x))))

    return fn


def _ring_vertices(ring: int, n: int) -> np.ndarray:
    """Vertex indices of ring ``ring`` (0-based) of a tube built by :func:`_tube`."""
    return 1 + ring * n + np.arange(n)


def _body_part(p, lay, jidx, n_joints, plan):
    profile = _body_profile(p, lay)
    ring_names = ["b_a_5", "b_a_4", "b_a_3", "b_a_2", "b_a_1", "b_t"]
    breaks = np.array([lay[k] for k in ("x_a5", "x_a4", "x_a3", "x_a2", "x_a1", "x_bh")])
    lg = p["gaster_len"]
    halfw = np.array([
        0.10 * lg, 0.10 * lg, 0.25 * p["ppet_len"], 0.22 * p["pet_len"],
        0.20 * p["pet_len"], 0.30 * p["neck_len"],
    ])
    labels = [jidx[nm] for nm in ["b_a_5", "b_a_4", "b_a_3", "b_a_2", "b_a_1", "b_t", "b_h"]]

    def weight_fn(x):
        return _partition_weights(x, breaks, halfw, labels, n_joints)

    # poles, the joint rings (b_a_5 .. b_a_1, root b_t at x = 0) and the neck break
    mand = np.concatenate([[lay["x_tail"]], breaks[:5], [0.0, lay["x_bh"], lay["x_front"]]])
    xs, idx, plan = _fill(mand, plan, _xtube_spacing(profile, weight_fn, 0.04))
    verts, faces = _xtube(xs, profile, _N_BODY)
    rings = {jidx[nm]: _ring_vertices(idx[1 + i] - 1, _N_BODY) for i, nm in enumerate(ring_names)}
    return _Part(verts, faces, verts[:, 0], weight_fn, rings, _N_BODY), plan


def _head_geometry(p, lay):
    hl, hw, hh = 0.5 * p["head_len"], 0.5 * p["head_w"], 0.5 * p["head_h"]
    x_bh = lay["x_bh"]
    xc = x_bh + 0.8 * hl
    z0 = p["neck_z"] + 0.1 * hh

    def profile(x):
        u = np.clip((np.asarray(x, dtype=float) - xc) / hl, -1.0, 1.0)
        w = hw * np.clip(1.0 - np.abs(u) ** 2.6, 0.0, None) ** (1 / 2.6) * (1.0 - 0.10 * u)
        h = hh * np.clip(1.0 - np.abs(u) ** 2.2, 0.0, None) ** (1 / 2.2) * (1.0 - 0.06 * u)
        z = z0 - 0.18 * hh * u
        return w, h, z

    return xc, hl, hw, hh, profile


def _head_part(p, lay, jidx, n_joints, plan):
    xc, hl, hw, hh, profile = _head_geometry(p, lay)
    x_bh = lay["x_bh"]
    h = 0.09 * hl
    labels = [jidx["b_t"], jidx["b_h"]]

    def weight_fn(x):
        return _partition_weights(x, [x_bh], [h], labels, n_joints)

    mand = np.array([xc - hl, x_bh, xc + hl])
    xs, idx, plan = _fill(mand, plan, _xtube_spacing(profile, weight_fn, 0.04))
    verts, faces = _xtube(xs, profile, _N_BODY)
    rings = {jidx["b_h"]: _ring_vertices(idx[1] - 1, _N_BODY)}
    return _Part(verts, faces, verts[:, 0], weight_fn, rings, _N_BODY), plan


def _eye_part(p, lay, jidx, n_joints):
    xc, hl, hw, hh, profile = _head_geometry(p, lay)
    ex, ey, ez = p["eye"]
    u_e = 0.12
    w_e, h_e, z_e = profile(np.array([xc + u_e * hl]))
    cy = -(w_e[0] * 0.93)
    cz = z_e[0] + 0.30 * h_e[0]
    cx = xc + u_e * hl
    m = 6
    t = -np.cos(np.pi * np.arange(m + 2) / (m + 1))  # poles at -1, 1

    def profile_e(x):
        u = np.clip((x - cx) / ex, -1.0, 1.0)
        f = np.sqrt(np.clip(1.0 - u * u, 0.0, None))
        return ey * f, ez * f, np.full_like(x, cz)

    xs = cx + ex * t
    verts, faces = _xtube(xs, profile_e, _N_LIMB, y0=cy)

    def weight_fn(x):
        w = np.zeros((len(x), n_joints))
        w[:, jidx["b_h"]] = 1.0
        return w

    return _Part(verts, faces, verts[:, 0], weight_fn, {}, _N_LIMB)


# ----------------------------------------------------------------------------------------------
# limbs (swept along a polyline with rounded corners)


class _Path:
    """Polyline with circular fillets at interior nodes, parametrised by arc length."""

    def __init__(self, nodes: np.ndarray, fillet_r: np.ndarray):
        self.pieces = []  # (kind, s0, length, data)
        self.node_s = np.zeros(len(nodes))
        seg_dir = _unit(np.diff(nodes, axis=0))
        seg_len = np.linalg.norm(np.diff(nodes, axis=0), axis=1)
        cur = nodes[0]
        s = 0.0
        for i in range(1, len(nodes)):
            if i == len(nodes) - 1:
                end, arc = nodes[i], None
            else:
                t_in, t_out = seg_dir[i - 1], seg_dir[i]
                phi = math.acos(float(np.clip(np.dot(t_in, t_out), -1.0, 1.0)))
                if phi < 1e-6:
                    end, arc = nodes[i], None
                else:
                    tan_h = math.tan(0.5 * phi)
                    r = min(fillet_r[i], 0.35 * min(seg_len[i - 1], seg_len[i]) / tan_h)
                    d = r * tan_h
                    e = _unit(t_out - t_in)
                    centre = nodes[i] + e * (r / math.cos(0.5 * phi))
                    start = nodes[i] - t_in * d
                    end = start
                    arc = (centre, _unit(start - centre), t_in, r, phi)
            length = float(np.linalg.norm(end - cur))
            self.pieces.append(("line", s, length, (cur, seg_dir[i - 1])))
            s += length
            if arc is None:
                self.node_s[i] = s
                cur = end
            else:
                centre, u0, v0, r, phi = arc
                self.pieces.append(("arc", s, r * phi, arc))
                self.node_s[i] = s + 0.5 * r * phi
                s += r * phi
                cur = centre + r * (math.cos(phi) * u0 + math.sin(phi) * v0)
        self.length = s
        # frame reference: normal of the plane the limb (nearly) lies in, sign fixed
        normal = np.cross(seg_dir[0], seg_dir[-1])
        if np.linalg.norm(normal) < 1e-3:
            normal = np.cross(seg_dir[0], [0.0, 0.0, 1.0])
            if np.linalg.norm(normal) < 1e-3:
                normal = np.array([1.0, 0.0, 0.0])
        self.normal = _unit(normal)
        self.first_dir = seg_dir[0]
        self.last_dir = seg_dir[-1]
        self.start = nodes[0]
        self.end = nodes[-1]

    def evaluate(self, s: np.ndarray):
        """Positions and unit tangents at arc lengths ``s`` (straight extension beyond the ends)."""
        s = np.asarray(s, dtype=float)
        pos = self.start + s[:, None] * self.first_dir
        tan = np.tile(self.first_dir, (len(s), 1))
        for kind, s0, length, data in self.pieces:
            sel = s > s0
            t = s[sel] - s0
            if kind == "line":
                origin, direction = data
                pos[sel] = origin + t[:, None] * direction
                tan[sel] = direction
            else:
                centre, u0, v0, r, phi = data
                ang = np.minimum(t / r, phi)[:, None]
                pos[sel] = centre + r * (np.cos(ang) * u0 + np.sin(ang) * v0)
                tan[sel] = -np.sin(ang) * u0 + np.cos(ang) * v0
        beyond = s > self.length
        pos[beyond] = self.end + (s[beyond] - self.length)[:, None] * self.last_dir
        tan[beyond] = self.last_dir
        return pos, tan


_MAX_BEND = math.radians(25.0)  # largest turn of the centre line between neighbouring rings


def _limb_part(nodes, node_r, mid_r, joint_at, parent, jidx, n_joints, plan, step):
    """Closed tube swept along the polyline ``nodes`` (rounded corners).

    ``joint_at[i]`` names the joint that starts at node i (``None`` for a bend without a joint);
    the last node is the tip. Radii: ``node_r`` per node, ``mid_r`` per piece (at mid length).
    The part before the first node (a flattened cap, hidden in the parent) blends into ``parent``.
    """
    nodes = np.asarray(nodes, dtype=float)
    node_r = np.asarray(node_r, dtype=float)
    path = _Path(nodes, 1.3 * node_r)
    s_nodes = path.node_s
    n_pieces = len(nodes) - 1
    joint_nodes = [i for i, nm in enumerate(joint_at) if nm is not None]
    halfw = []
    for i in joint_nodes:
        gaps = [s_nodes[i + 1] - s_nodes[i]] + ([s_nodes[i] - s_nodes[i - 1]] if i > 0 else [])
        want = 0.6 * node_r[0] if i == 0 else 1.2 * node_r[i]
        halfw.append(min(want, 0.3 * min(gaps)))
    h0 = halfw[0]
    breaks = [s_nodes[i] for i in joint_nodes]
    labels = [jidx[parent]] + [jidx[joint_at[i]] for i in joint_nodes]

    def weight_fn(s):
        return _partition_weights(s, breaks, halfw, labels, n_joints)

    def radius(s):
        s = np.asarray(s, dtype=float)
        k = np.clip(np.searchsorted(s_nodes, s, side="right") - 1, 0, n_pieces - 1)
        t = np.clip((s - s_nodes[k]) / (s_nodes[k + 1] - s_nodes[k]), 0.0, 1.0)
        ra, rb = node_r[k], node_r[k + 1]
        r = (1 - t) * ra + t * rb + (np.asarray(mid_r)[k] - 0.5 * (ra + rb)) * np.sin(np.pi * t)
        cap = node_r[0] * np.sqrt(np.clip(1.0 - (s / h0) ** 2, 0.0, None))
        return np.where(s < 0.0, cap, r)

    def spacing(a, b):
        s = np.linspace(a, b, 97)
        _, tan = path.evaluate(s)
        bend = np.arccos(np.clip(np.sum(tan[1:] * tan[:-1], axis=1), -1.0, 1.0)) / _MAX_BEND
        geo = np.hypot(np.diff(s), np.diff(radius(s))) / step
        inc = np.maximum(np.maximum(geo, bend), _weight_increments(weight_fn(s)))
        return _metric_fractions(s, inc)

    tip_r = node_r[-1]
    mand = np.concatenate([[-h0, -0.5 * h0], s_nodes[:-1], [path.length, path.length + tip_r]])
    ss, idx, plan = _fill(mand, plan, spacing)
    rings_s = ss[1:-1]
    pos, tan = path.evaluate(rings_s)
    rad = radius(rings_s)
    # ring frames: the limb's plane normal, projected perpendicular to the centre line
    nvec = _unit(path.normal - (tan @ path.normal)[:, None] * tan)
    bvec = np.cross(tan, nvec)
    pole0 = path.start - h0 * path.first_dir
    pole1 = path.end + tip_r * path.last_dir
    verts, faces = _tube(pos, nvec, bvec, rad, rad, _N_LIMB, pole0, pole1)
    s_vert = np.concatenate([[ss[0]], np.repeat(rings_s, _N_LIMB), [ss[-1]]])
    # mandatory positions 2 .. : the nodes; ring number = position - 1 (position 0 is the pole)
    rings = {jidx[joint_at[i]]: _ring_vertices(idx[2 + i] - 1, _N_LIMB) for i in joint_nodes}
    return _Part(verts, faces, s_vert, weight_fn, rings, _N_LIMB), plan


def _chain(start, lengths, dirs):
    pts = [np.asarray(start, dtype=float)]
    for length, d in zip(lengths, dirs):
        pts.append(pts[-1] + length * d)
    return np.array(pts)


def _leg_nodes(p, lay, leg: int, profile):
    x = lay["x_legs"][leg]
    w, h, z = profile(np.array([x]))
    start = np.array([x, -0.55 * w[0], z[0] - 0.55 * h[0]])
    lens = p["leg_len"][leg]
    az = p["leg_az"][leg]
    el = p["leg_el"][leg]
    dirs = [_direction(az[i], el[i]) for i in range(4)]
    pts = _chain(start, lens[:4], dirs)
    # tarsus + pretarsus: solve the tarsus elevation so the tip touches the ground z = -stand
    a, b = lens[4], lens[5]
    delta = math.radians(15.0)
    need = -p["stand"] - pts[-1][2]
    pp, qq = a + b * math.cos(delta), b * math.sin(delta)
    rr, psi = math.hypot(pp, qq), math.atan2(qq, pp)
    el_ta = psi + math.asin(float(np.clip(need / rr, -0.95, -0.02)))
    el_ta = min(el_ta, math.radians(-3.0))
    dirs = [_direction(az[4], math.degrees(el_ta)), _direction(az[5], math.degrees(el_ta - delta))]
    return np.concatenate([pts, _chain(pts[-1], lens[4:], dirs)[1:]])


def _head_point(p, lay, u, fy, fz):
    xc, hl, hw, hh, profile = _head_geometry(p, lay)
    w, h, z = profile(np.array([xc + u * hl]))
    return np.array([xc + u * hl, -fy * w[0], z[0] + fz * h[0]])


def _side_parts(p, lay, jidx, n_joints, plans):
    """Right-side parts (y < 0): eye, mandible, antenna, three legs."""
    profile = _body_profile(p, lay)
    parts, new_plans = [_eye_part(p, lay, jidx, n_joints)], []
    # mandible
    base = _head_point(p, lay, 0.80, 0.38, -0.45)
    dirs = [_direction(*p["mand_dir"][i]) for i in range(2)]
    nodes = _chain(base, p["mand_len"], dirs)
    part, plan = _limb_part(
        nodes, p["mand_node"], p["mand_rad"], ["ma_r", None], "b_h", jidx, n_joints, plans[0], 0.02
    )
    parts.append(part)
    new_plans.append(plan)
    # antenna
    socket = _head_point(p, lay, 0.62, 0.42, 0.50)
    dirs = [_direction(*p["ant_dir"][i]) for i in range(3)]
    nodes = _chain(socket, p["ant_len"], dirs)
    part, plan = _limb_part(
        nodes, p["ant_node"], p["ant_rad"], ["an_1_r", "an_2_r", "an_3_r"], "b_h",
        jidx, n_joints, plans[1], 0.03,
    )
    parts.append(part)
    new_plans.append(plan)
    # legs
    for leg in range(3):
        nodes = _leg_nodes(p, lay, leg, profile)
        names = [f"l_{leg + 1}_{seg}_r" for seg in LEG_SEGMENTS]
        part, plan = _limb_part(
            nodes, p["leg_node"][leg], p["leg_rad"][leg], names, "b_t",
            jidx, n_joints, plans[2 + leg], 0.06,
        )
        parts.append(part)
        new_plans.append(plan)
    return parts, new_plans


# ----------------------------------------------------------------------------------------------
# assembly


def _generate(p: dict, plans: dict | None = None, full: bool = True):
    """Generate the mesh for parameters ``p``.

    ``plans`` fixes the ring layout (the topology); pass the plans returned for the individual's
    own parameters when evaluating shape perturbations. Returns (result, plans); with
    ``full=False`` the result holds only the vertices, otherwise also faces, weights, joint rings
    and the vertex mirror map.
    """
    names = joint_names()
    jidx = {nm: i for i, nm in enumerate(names)}
    n_joints = len(names)
    mirror_j = np.array([jidx[_mirror_name(nm)] for nm in names])
    lay = _layout(p)
    plans = plans or {"body": None, "head": None, "side": [None] * 5}
    body, plan_body = _body_part(p, lay, jidx, n_joints, plans["body"])
    head, plan_head = _head_part(p, lay, jidx, n_joints, plans["head"])
    right, plan_side = _side_parts(p, lay, jidx, n_joints, plans["side"])
    new_plans = {"body": plan_body, "head": plan_head, "side": plan_side}
    flip = np.array([1.0, -1.0, 1.0])
    centre_parts = [body, head]
    # vertex order: body tube, head, right-side parts, their mirror images (left side)
    v = np.concatenate([pt.verts for pt in centre_parts + right]
                       + [pt.verts * flip for pt in right])
    v[:, 1] += 0.0  # no negative zeros
    if not full:
        return {"v": v}, new_plans

    faces, weights, mirror, rings = [], [], [], {}
    offset = 0
    for pt in centre_parts:
        n = pt.ring_n
        m = (len(pt.verts) - 2) // n
        k = np.arange(n)
        ring_mirror = 1 + np.arange(m)[:, None] * n + (-k % n)[None, :]  # k <-> n - k
        mirror.append(offset + np.concatenate([[0], ring_mirror.ravel(), [len(pt.verts) - 1]]))
        offset += len(pt.verts)
    offset = 0
    n_centre = sum(len(pt.verts) for pt in centre_parts)
    n_side = sum(len(pt.verts) for pt in right)
    mirror.append(np.arange(n_centre + n_side, n_centre + 2 * n_side))
    mirror.append(np.arange(n_centre, n_centre + n_side))
    for pt in centre_parts + right:
        faces.append(pt.faces + offset)
        weights.append(pt.weights())
        rings.update({j: r + offset for j, r in pt.joint_rings.items()})
        offset += len(pt.verts)
    for pt in right:  # mirrored: reversed winding keeps the faces outward
        faces.append(pt.faces[:, ::-1] + offset)
        w = np.zeros((len(pt.verts), n_joints))
        w[:, mirror_j] = pt.weights()
        weights.append(w)
        rings.update({int(mirror_j[j]): r + offset for j, r in pt.joint_rings.items()})
        offset += len(pt.verts)
    out = {
        "v": v,
        "f": np.concatenate(faces),
        "w": np.concatenate(weights),
        "rings": [rings[j] for j in range(n_joints)],
        "mirror_v": np.concatenate(mirror),
        "mirror_j": mirror_j,
    }
    return out, new_plans


def _regressor(rings, n_verts) -> np.ndarray:
    reg = np.zeros((len(rings), n_verts))
    for j, r in enumerate(rings):
        reg[j, r] = 1.0 / len(r)
    return reg


SKELETON_DIR_NAMES = (
    "legs",
    "front_vs_hind_legs",
    "gaster",
    "head",
    "antennae",
    "abdomen_elongation",
)
"""Meaning of each ``scaledirs`` direction (per-joint log-scale, isotropic unless stated)."""

TRANS_DIR_NAMES = (
    "leg_spacing",
    "leg_spread",
    "neck_length",
    "antenna_sockets",
    "waist_length",
    "leg_attachment_height",
)
"""Meaning of each ``transdirs`` direction (per-joint rest offset, model units)."""

_SCALE_STEP = 0.3  # log-scale of the driven joints for one unit of a scaledirs weight
_TRANS_STEP = 0.04  # model units (4 % of the body length) for one unit of a transdirs weight


def _skeleton_dirs(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint log-scale (``scaledirs``) and rest-offset (``transdirs``) directions, (6, J, 3).

    Log-scales are set on the first joint of a subtree only (a coxa scales its whole leg), since
    a joint's scale carries through to its subtree in the kinematic chain. Left and right joints
    get mirrored values.
    """
    jidx = {nm: i for i, nm in enumerate(names)}
    nb = len(SKELETON_DIR_NAMES)
    scale = np.zeros((nb, len(names), 3))
    trans = np.zeros((nb, len(names), 3))
    for side, sy in (("r", -1.0), ("l", 1.0)):
        for leg in (1, 2, 3):
            co = jidx[f"l_{leg}_co_{side}"]
            scale[0, co] = _SCALE_STEP
            scale[1, co] = _SCALE_STEP * {1: 1.0, 2: 0.0, 3: -1.0}[leg]
            trans[0, co, 0] = _TRANS_STEP * {1: 0.5, 2: 0.0, 3: -0.5}[leg]  # front fwd, hind back
            trans[1, co, 1] = _TRANS_STEP * 0.25 * sy  # outwards
            trans[5, co, 2] = -_TRANS_STEP * 0.25  # lower
        an1 = jidx[f"an_1_{side}"]
        scale[4, an1] = _SCALE_STEP
        trans[3, an1] = _TRANS_STEP * np.array([0.0, 0.25 * sy, 0.25])  # outwards and up
    scale[2, jidx["b_a_3"]] = _SCALE_STEP
    scale[3, jidx["b_h"]] = _SCALE_STEP
    scale[5, jidx["b_a_1"], 0] = _SCALE_STEP  # along the body axis only
    trans[2, jidx["b_h"], 0] = _TRANS_STEP * 0.5
    trans[4, jidx["b_a_1"], 0] = -_TRANS_STEP * 0.5
    return scale, trans


def build_default_model(seed: int = 0) -> dict:
    """Build the procedural ant model for ``seed`` as a dict in the SMIL pickle layout.

    Pure numpy and deterministic: the same seed gives identical arrays; other seeds give slightly
    different (symmetric) proportions with the same topology. See the module docstring for frame,
    unit and anatomy.

    Raises:
        SmilError: ``seed`` is not a non-negative integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SmilError(f"seed must be a non-negative integer, got {seed!r}", field="seed")
    nominal = _nominal_params()
    _, plans = _generate(nominal, full=False)  # ring layout: the same topology for every seed
    p = _jitter(nominal, np.random.default_rng(int(seed)))
    names = joint_names()
    base, _ = _generate(p, plans)
    v = base["v"]
    nv = len(v)
    reg = _regressor(base["rings"], nv).astype(np.float32)
    joints = (reg.astype(np.float64) @ v).astype(np.float32)

    nb = len(SHAPE_NAMES)
    eps = 1e-4
    shapedirs = np.zeros((nv, 3, nb))
    for k in range(nb):
        t = np.zeros(nb)
        t[k] = eps
        plus, _ = _generate(_apply_factors(p, t), plans, full=False)
        minus, _ = _generate(_apply_factors(p, -t), plans, full=False)
        shapedirs[:, :, k] = (plus["v"] - minus["v"]) / (2.0 * eps) * SHAPE_SIGMAS[k]

    scaledirs, transdirs = _skeleton_dirs(names)
    parents = np.array(
        [-1 if _parent_name(nm) is None else names.index(_parent_name(nm)) for nm in names],
        dtype=np.int64,
    )
    kintree = np.stack([parents, np.arange(len(names))]).astype(np.int32)
    sym = np.flatnonzero(v[:, 1] == 0.0).astype(np.int64)
    return {
        "f": base["f"].astype(np.int32),
        "J_regressor": reg,
        "kintree_table": kintree,
        "J": joints,
        "bs_style": "lbs",
        "weights": base["w"].astype(np.float32),
        "posedirs": np.zeros(0, dtype=np.float64),
        "v_template": v.astype(np.float64),
        "shapedirs": shapedirs,
        "bs_type": "lrotmin",
        "sym_verts": sym,
        "scaledirs": scaledirs,
        "transdirs": transdirs,
        "J_names": list(names),
        "shape_cov": np.eye(nb),
        "shape_mean_betas": np.zeros(nb),
    }
