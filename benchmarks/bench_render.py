"""Soft-silhouette forward + backward time against deodr's differentiable renderer, in the same run.

For each mesh, image size, batch size and torch thread count, one call renders the batch's
silhouettes with :func:`smil.render.soft.soft_silhouette` (float32, CPU) and backpropagates a fixed
random pixel weighting to the vertices. The reference is deodr (``pip install deodr``, a CPU mesh
renderer with exact antialiased-edge gradients, Cython/C++): the same mesh, the same cameras, a white
mesh on black with ambient light only (its silhouette), rendered and backpropagated image by image
(deodr has no batch axis), edge antialiasing width ``sigma = 1`` pixel. deodr draws front faces
only (its backward pass fails without back-face culling), so ours is timed both ways: all faces
(our default, ``ours_s``) and with ``backface_culling=True`` (``ours_culled_s``; exact for closed,
outward-wound meshes like the default model). deodr refuses meshes with edges shared by more than
two faces; such faces are dropped for deodr only (the JSON says how many).

Rounds of ours and deodr are interleaved and the best (minimum) wall time per call is reported, so
a busy machine slows both alike; ``*_median_s`` show the spread. ``*_cpu_s`` is the least process
CPU time (all threads) of a call: on a machine shared with other jobs, where wall time mostly
measures waiting for a core, ``ratio_cpu`` (single-threaded rows) is the fairer comparison of work
done. OpenMP workers sleep rather than spin between parallel regions (``OMP_WAIT_POLICY=PASSIVE``
unless set), which keeps shared cores usable. ``ratio`` = ours / deodr time (lower is better; 1.0 =
as fast as deodr). deodr 0.2.3 imports ``trimesh`` unconditionally: install both.

    python benchmarks/bench_render.py [--sizes 64 128 256] [--batches 1 8] [--threads 1 0]
                                      [--repeats 5] [--sigma 1.0] [--meshes default stick]
                                      [--compile-chunks BACKEND] [--max-pairs N]

``--threads 0`` means torch's default. ``--compile-chunks inductor`` also times ours with the chunks
compiled (``ours_compiled``: ``compile_options={"backend": BACKEND}``, called from a function compiled
with the same backend, as a compiled training step on a GPU draws them: projection, culling and tile
census traced, the chunks compiled; the first call, which compiles, is the warm-up and reported as
``ours_compiled_first_s``), and counts each variant's launches per call (``launches``: eager
operators and compiled-graph calls, as in ``bench_train.py``). ``--max-pairs`` sets the chunk size
(default: the renderer's for the device). Prints one JSON object;
progress rows go to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP (see above)

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from smil.geometry.rotations import axis_angle_to_matrix  # noqa: E402
from smil.render.soft import soft_silhouette  # noqa: E402


def fixtures_dir() -> Path:
    return Path(os.environ.get("SMIL_FIXTURES", REPO.parent / "shared" / "fixtures"))


def load_meshes(names: list[str]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    """``name → (vertices (V, 3), faces (F, 3))`` and ``name → reason`` for meshes skipped."""
    meshes, skipped = {}, {}
    for name in names:
        try:
            if name == "default":
                from smil.body.default_model import build_default_model

                data = build_default_model(seed=0)
            elif name == "stick":
                from smil.body.io import load_model

                data = load_model(fixtures_dir() / "models" / "SMILy_STICK.pkl")
            else:
                raise ValueError(f"unknown mesh {name!r} (expected 'default' or 'stick')")
        except (ImportError, OSError, ValueError) as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}"
            continue
        meshes[name] = (np.asarray(data["v_template"], np.float64), np.asarray(data["f"], np.int64))
    return meshes, skipped


def cameras(verts: np.ndarray, size: int, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``batch`` cameras around the mesh (random seeded rotations) framing it to ~80 % of the image."""
    centre = (verts.min(0) + verts.max(0)) / 2
    radius = float(np.linalg.norm(verts - centre, axis=1).max())
    dist = 3.0 * radius
    f = 0.4 * size * dist / radius  # the bounding sphere spans ~80 % of the image
    K = np.array([[f, 0.0, (size - 1) / 2], [0.0, f, (size - 1) / 2], [0.0, 0.0, 1.0]])
    gen = torch.Generator().manual_seed(0)
    aa = torch.randn(batch, 3, generator=gen, dtype=torch.float64)
    angle = torch.rand(batch, 1, generator=gen, dtype=torch.float64) * math.pi
    aa = aa / aa.norm(dim=1, keepdim=True) * angle
    R = axis_angle_to_matrix(aa).numpy()
    t = np.array([0.0, 0.0, dist]) - R @ centre
    return np.repeat(K[None], batch, 0), R, t


def manifold_faces(faces: np.ndarray) -> np.ndarray:
    """Faces without an edge shared by more than two faces (or twice in the same direction)."""
    n = int(faces.max()) + 1
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    owner = np.tile(np.arange(len(faces)), 3)
    undirected = np.minimum(edges[:, 0], edges[:, 1]) * n + np.maximum(edges[:, 0], edges[:, 1])
    _, inv, count = np.unique(undirected, return_inverse=True, return_counts=True)
    _, dinv, dcount = np.unique(edges[:, 0] * n + edges[:, 1], return_inverse=True, return_counts=True)
    bad = (count[inv] > 2) | (dcount[dinv] > 1)
    keep = np.ones(len(faces), bool)
    keep[owner[bad]] = False
    return faces[keep]


class Ours:
    def __init__(self, verts, faces, K, R, t, size: int, sigma: float, culling: bool, **options) -> None:
        B = K.shape[0]
        self.verts = torch.tensor(verts, dtype=torch.float32)[None].repeat(B, 1, 1).requires_grad_()
        self.faces = torch.tensor(faces)
        self.K, self.R, self.t = (torch.tensor(x, dtype=torch.float32) for x in (K, R, t))
        self.size, self.sigma, self.culling, self.options = size, sigma, culling, options
        if "compile_options" in options:  # drawn as a compiled loss draws it: the caller compiled too
            self.forward = torch.compile(self.forward, **options["compile_options"])
        self.weight = torch.rand(B, size, size, generator=torch.Generator().manual_seed(1))

    def forward(self) -> torch.Tensor:
        return soft_silhouette(self.verts, self.faces, self.K, self.R, self.t, (self.size, self.size),
                               self.sigma, backface_culling=self.culling, **self.options)

    def __call__(self) -> tuple[float, float]:
        self.verts.grad = None
        t0, c0 = time.perf_counter(), time.process_time()
        (self.forward() * self.weight).sum().backward()
        return time.perf_counter() - t0, time.process_time() - c0

    def forward_only(self) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            self.forward()
        return time.perf_counter() - t0


class Deodr:
    def __init__(self, verts, faces, K, R, t, size: int) -> None:
        from deodr import Camera, ColoredTriMesh, Scene3D

        self.verts = verts
        self.mesh = ColoredTriMesh(faces.astype(np.int32), verts.copy(), colors=np.ones((len(verts), 1)))
        self.scene = Scene3D(sigma=1.0)
        self.scene.set_mesh(self.mesh)
        self.scene.set_background_color(np.zeros(1))
        self.scene.set_light(None, 1.0)  # ambient only: a white silhouette on black
        self.cams = [Camera(extrinsic=np.column_stack([R[b], t[b]]), intrinsic=K[b], width=size, height=size)
                     for b in range(K.shape[0])]
        gen = np.random.default_rng(1)
        self.weight = [gen.random((size, size, 1)) for _ in self.cams]

    def __call__(self) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        for cam, w in zip(self.cams, self.weight):
            self.mesh.set_vertices(self.verts)
            self.scene.render(cam)  # back-face culling: deodr's backward needs it
            self.scene.clear_gradients()
            self.scene.render_backward(w)
        return time.perf_counter() - t0, time.process_time() - c0


def run(args: argparse.Namespace) -> dict:
    meshes, skipped = load_meshes(args.meshes)
    try:
        import deodr
    except ImportError as exc:  # deodr 0.2.3 also needs `trimesh` importable
        deodr = None
        print(f"deodr reference skipped: cannot import deodr ({exc}); install deodr==0.2.3 trimesh",
              file=sys.stderr)
    default_threads = torch.get_num_threads()
    rows = []
    for name, (verts, faces) in meshes.items():
        deodr_faces = manifold_faces(faces)
        for threads in args.threads:
            torch.set_num_threads(threads or default_threads)
            for size in args.sizes:
                for batch in args.batches:
                    K, R, t = cameras(verts, size, batch)
                    chunks = {"max_pairs_per_chunk": args.max_pairs}
                    ours = Ours(verts, faces, K, R, t, size, args.sigma, culling=False, **chunks)
                    culled = Ours(verts, faces, K, R, t, size, args.sigma, culling=True, **chunks)
                    ref = Deodr(verts, deodr_faces, K, R, t, size) if deodr is not None else None
                    timed = {"ours": ours, "ours_culled": culled}
                    if args.compile_chunks:
                        timed["ours_compiled"] = Ours(verts, faces, K, R, t, size, args.sigma, culling=False,
                                                      compile_options={"backend": args.compile_chunks}, **chunks)
                    if ref is not None:
                        timed["deodr"] = ref
                    times: dict[str, list[tuple[float, float]]] = {k: [] for k in timed}
                    fwd = []
                    first = {}
                    for k, fn in timed.items():  # warm-up
                        first[k] = fn()[0]
                    for _ in range(args.repeats):
                        for k, fn in timed.items():
                            times[k].append(fn())
                        fwd.append(ours.forward_only())
                    row = {"mesh": name, "faces": int(len(faces)), "size": size, "batch": batch,
                           "threads": torch.get_num_threads()}
                    for k, ts in times.items():
                        best = min(ts)
                        row[f"{k}_s"] = round(best[0], 5)
                        row[f"{k}_median_s"] = round(statistics.median(t[0] for t in ts), 5)
                        row[f"{k}_cpu_s"] = round(min(t[1] for t in ts), 5)
                    row["ours_forward_s"] = round(min(fwd), 5)
                    if args.compile_chunks:
                        from bench_train import launch_census

                        row["ours_compiled_first_s"] = round(first["ours_compiled"], 2)
                        row["launches"] = {k: launch_census(timed[k]) for k in ("ours", "ours_compiled")}
                    if ref is not None:
                        for k in ("", "_culled"):
                            row[f"ratio{k}"] = round(row[f"ours{k}_s"] / row["deodr_s"], 2)
                            row[f"ratio{k}_cpu"] = round(row[f"ours{k}_cpu_s"] / row["deodr_cpu_s"], 2)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr)
    return {
        "benchmark": "soft_silhouette forward+backward vs deodr (CPU), best of repeats",
        "sigma_px2": args.sigma,
        "repeats": args.repeats,
        "deodr": getattr(deodr, "__version__", None) if deodr is not None else "not importable (skipped)",
        "deodr_faces_dropped": {n: int(len(f) - len(manifold_faces(f))) for n, (_, f) in meshes.items()},
        "meshes_skipped": skipped,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "max_pairs_per_chunk": args.max_pairs,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="0 = torch's default")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sigma", type=float, default=1.0, help="our edge softness, squared pixels")
    parser.add_argument("--meshes", nargs="+", default=["default", "stick"])
    parser.add_argument("--compile-chunks", metavar="BACKEND", help="also time ours with compiled chunks")
    parser.add_argument("--max-pairs", type=int, help="(pixel, face) pairs per chunk (default: the CPU's)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    print(json.dumps(run(args), indent=1))


if __name__ == "__main__":
    main()
