"""Manifest → HDF5 dataset: crop, resize, encode, adjust cameras, split (``smil preprocess``).

For every sample and view of a manifest (``smil.data.manifest``):

1. load the image (file or video frame). A JPEG whose crop is at least twice the stored size is
   decoded at 1/2, 1/4 or 1/8 resolution by libjpeg (``settings.reduced_decode``), which is exact in the
   pixel mapping and much faster than decoding at full size and then shrinking;
2. when the view has distortion coefficients, undistort the pixels (``K`` unchanged, as
   ``cv2.undistort`` does). **Contract with ingest**: manifest keypoints are already *undistorted*
   pixel coordinates, and ``dist`` is the source camera's original distortion, so after this step
   image pixels and keypoints agree and ``K`` is an exact pinhole camera;
3. crop a square around the animal — the bbox of the finite, visible 2D keypoints united with the mask's
   bbox, or else the projection of the 3D keypoints, or else the whole frame — enlarged by
   ``settings.padding``, and resize it to ``settings.image_size`` pixels (``smil.data.crop``);
4. map keypoints and ``K`` with the same affine (``K' = A·K``), encode the crop as JPEG and the mask
   as PNG.

Views are placed into the header's camera slots; a sample with fewer views is padded with
``view_valid = False``. Splits are made per group (``smil.data.splits``). A bad sample (unreadable,
missing or wrongly sized image or mask, no finite keypoint in any view) stops the run with one message
naming the file and manifest line — or, with ``skip_bad``, is counted and skipped; the summary lists
counts and reasons. The output appears only when complete (``DatasetWriter``).
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections import Counter, OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np

from smil.data import crop as C
from smil.data.bitmask import PackedMask
from smil.data.images import (
    VideoFrames, decode_image, encode_jpeg, encode_png_mask, is_jpeg, load_mask, load_mask_packed, read_bytes,
)
from smil.data.manifest import (
    PARAM_SHAPES,
    ManifestHeader,
    SampleRecord,
    ViewRecord,
    decode_manifest_line,
    iter_manifest,
    manifest_folder,
    parse_manifest_line,
    read_manifest_header,
    resolve_in,
)
from smil.data.splits import DEFAULT_FRACTIONS, parse_fractions, split_by_group, split_sizes
from smil.data.store import DatasetWriter, StoredSample
from smil.errors import ConfigError, DataError
from smil.progress import Progress
from smil.io_utils import file_sha256, write_json_atomic

SUMMARY_NAME = "preprocess_summary.json"
MAX_LISTED_SKIPS = 1000
WRITE_BLOCK = 256  # samples per HDF5 write: h5py's per-call costs are paid per block
THREAD_CHUNK = 4  # manifest lines per thread task
# While threads run: a thread back from OpenCV waits at most this long for the GIL (Python's default,
# 5 ms, leaves the other core idle longer; measured 1.98 → 1.84 ms per view on `smil synth` output)
THREAD_SWITCH_INTERVAL_S = 0.001
MAX_AUTO_PARALLEL = 4  # automatic workers or threads: one per available CPU, at most this many
PROCESS_CHUNK = 16  # manifest lines per message from a worker process, at most (see _chunk_size)
PROCESS_CHUNK_VIDEO = 256  # … for frames from videos: a worker seeks in a video once per chunk
_CAN_FORK = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
Mask = np.ndarray | PackedMask  # a view's mask in source pixels (uint8 255 = animal, or packed bits)


@dataclass(frozen=True)
class PreprocessSettings:
    """Settings of ``smil preprocess``; all but ``workers`` and ``threads`` (which never change the
    output) are recorded in the dataset's attributes."""

    image_size: int = 256  # stored images are image_size × image_size pixels
    padding: float = 1.2  # crop side = padding × the animal's bbox side
    jpeg_quality: int = 90
    split: tuple[float, float, float] = DEFAULT_FRACTIONS
    seed: int = 0  # split seed
    skip_bad: bool = False
    border: str = "shift"  # "shift" the crop inside the image when it fits, or "pad" around a centred crop
    reduced_decode: bool = True
    workers: int = 0  # worker processes (0 = automatic, see plan_parallelism; 1 = none)
    threads: int = 0  # threads processing samples in this process (0 = one per available CPU, at most 4)

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ConfigError(f"must be >= 8 pixels, got {self.image_size}", field="image_size")
        if not self.padding >= 1.0:
            raise ConfigError(f"must be >= 1.0, got {self.padding}", field="padding")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"must be in 1..100, got {self.jpeg_quality}", field="jpeg_quality")
        if self.border not in ("shift", "pad"):
            raise ConfigError(f"must be 'shift' or 'pad', got {self.border!r}", field="border")
        if self.workers < 0:
            raise ConfigError(f"must be >= 0 (0 = automatic), got {self.workers}", field="workers")
        if self.threads < 0:
            raise ConfigError(f"must be >= 0 (0 = one per available CPU), got {self.threads}", field="threads")
        if self.workers > 1 and self.threads > 1:
            raise ConfigError(f"use worker processes or threads, not both (workers {self.workers}, threads "
                              f"{self.threads})", field="threads")
        object.__setattr__(self, "split", parse_fractions(self.split))

    def plan_parallelism(self, videos: bool = False) -> tuple[int, int]:
        """``(worker processes, threads)`` that process samples; one of them is 1.

        ``workers`` > 1: that many forked worker processes. ``workers`` 0 (automatic) on a platform
        that forks (Linux) and for a manifest of image files: one process per CPU this process may
        use (at most 4) unless ``threads`` is set. Otherwise threads in this process: ``threads``, or
        with 0 one per CPU (at most 4) — but one for a manifest of ``videos`` (threads taking turns
        on a video would each seek in it, which costs far more than decoding its frames in order).
        Worker processes are the faster choice on small images, where a third to a half of the
        per-sample work holds Python's GIL and threads wait on each other; on large images decoding
        (which releases it) dominates and the two are close. Forked processes start in milliseconds
        and send back each chunk of results as one message."""
        if self.workers > 1:
            if not _CAN_FORK:
                raise ConfigError(f"worker processes are forked, which needs Linux (this is {sys.platform}); "
                                  f"use threads instead", field="workers")
            return self.workers, 1
        cpus = min(MAX_AUTO_PARALLEL, available_cpus())
        if self.workers == 0 and not self.threads and not videos and _CAN_FORK and cpus > 1:
            return cpus, 1
        if self.threads:
            return 1, self.threads
        return 1, 1 if videos else cpus

    def recorded(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("workers")
        out.pop("threads")
        out["split"] = list(self.split)
        return out


class BadSample(DataError):
    """A sample that cannot be preprocessed; ``reason`` is a short category for the summary."""

    def __init__(self, reason: str, message: str, *, path: str | Path | None = None):
        super().__init__(message, path=path)
        self.reason = reason


@dataclass
class _Result:
    line: int
    sample_id: str
    stored: StoredSample | None = None
    reason: str = ""
    message: str = ""
    reduce: list[int] = field(default_factory=list)


def keep_freed_image_memory() -> bool:
    """Ask glibc to reuse freed memory for the next image instead of returning it to the kernel.

    By default glibc maps every multi-megabyte allocation (a decoded frame) fresh from the kernel and
    unmaps it on free, so each image costs ~1000 page faults to zero-fill again; in virtual machines
    this alone made preprocessing ~1.4× slower than a bare decode loop. Raising the mmap and trim
    thresholds keeps that memory in the process (its size stays at the peak working set). Returns
    False where the C library is not glibc (nothing is changed).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc <malloc.h>
    return bool(mallopt(m_mmap_threshold, 64 << 20)) and bool(mallopt(m_trim_threshold, 256 << 20))


class SampleProcessor:
    """Turns manifest samples into stored samples. One per process (it caches video captures and
    undistortion maps, and tunes the C allocator with :func:`keep_freed_image_memory`)."""

    def __init__(self, manifest: str | Path, header: ManifestHeader, settings: PreprocessSettings):
        keep_freed_image_memory()
        self.manifest = Path(manifest)
        self.base = manifest_folder(manifest)  # resolved once: references are relative to it
        self.header = header
        self.settings = settings
        self.slots = {name: i for i, name in enumerate(header.camera_names)}
        self.num_joints = len(header.joint_names)
        self._param_dims = {name: _param_dims(spec, self.num_joints) for name, spec in PARAM_SHAPES.items()}
        V, J = len(self.slots), self.num_joints
        # a padded sample's arrays (docs/dataset-format.md, invalid views), copied for every sample
        self._blank = {"K": np.tile(np.eye(3), (V, 1, 1)), "t": np.zeros((V, 3)),
                       "keypoints2d": np.full((V, J, 2), np.nan), "visibility": np.zeros((V, J))}
        self.videos = VideoFrames()
        self._maps: OrderedDict[bytes, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def close(self) -> None:
        self.videos.close()

    def process_line(self, line: int, text: str) -> _Result:
        """Parse and process one manifest line; bad samples come back as a result with a reason."""
        where = f"{self.manifest}:{line}"
        obj = parse_manifest_line(text, where)
        record = SampleRecord.from_json(obj, where)
        try:
            stored, reduce = self.process(record, where)
        except BadSample as exc:
            return _Result(line, record.sample_id, reason=exc.reason, message=str(exc))
        return _Result(line, record.sample_id, stored=stored, reduce=reduce)

    def process(self, record: SampleRecord, where: str) -> tuple[StoredSample, list[int]]:
        V, J = len(self.slots), self.num_joints
        if not record.views:
            raise BadSample("no views", f"sample '{record.sample_id}' has no views", path=where)
        kp3 = record.keypoints3d
        if kp3 is not None and kp3.shape != (J, 3):
            raise DataError(f"expected {J} joints × 3, got {kp3.shape}", path=where, field="keypoints3d")
        kp3 = np.full((J, 3), np.nan) if kp3 is None else kp3
        for name, value in (record.params or {}).items():
            want = self._param_dims[name]
            got = np.shape(value)
            if got != want and (len(got) != len(want) or any(w not in (-1, g) for w, g in zip(want, got))):
                raise DataError(f"expected shape {PARAM_SHAPES[name]} with J = {J}, got {got}", path=where,
                                field=f"params.{name}")
        if not any(C.finite_rows(v.keypoints2d).any() for v in record.views) and not C.finite_rows(kp3).any():
            raise BadSample("no keypoints", f"sample '{record.sample_id}': every 2D and 3D keypoint is missing (NaN)",
                            path=where)
        images, masks = [b""] * V, [b""] * V
        valid = np.zeros(V, dtype=bool)
        blank = self._blank
        K, R, t = blank["K"].copy(), blank["K"].copy(), blank["t"].copy()
        kp2, vis = blank["keypoints2d"].copy(), blank["visibility"].copy()
        reduces = []
        for view in record.views:
            slot = self.slots.get(view.camera)
            if slot is None:
                raise DataError(f"camera {view.camera!r} is not one of the header's camera_names "
                                f"{self.header.camera_names}", path=where, field="views.camera")
            if valid[slot]:
                raise DataError(f"camera {view.camera!r} appears twice in one sample", path=where,
                                field="views.camera")
            if view.keypoints2d.shape != (J, 2) or view.visibility.shape != (J,):
                raise DataError(f"view '{view.camera}': expected {J} keypoints (header joint_names), got "
                                f"{view.keypoints2d.shape[0]} and {view.visibility.shape[0]} visibilities",
                                path=where, field="views.keypoints2d")
            ctx = f"[sample '{record.sample_id}', view '{view.camera}', {where}]"
            img_bytes, mask_bytes, affine, r = self._process_view(view, kp3, ctx)
            images[slot], masks[slot], valid[slot] = img_bytes, mask_bytes, True
            K[slot] = C.adjust_intrinsics(view.K, affine)
            R[slot], t[slot] = view.R, view.t
            kp2[slot] = C.transform_points(view.keypoints2d, affine)
            vis[slot] = view.visibility
            reduces.append(r)
        stored = StoredSample(
            sample_id=record.sample_id, group=record.group, session=record.session, frame=record.frame,
            images=images, masks=masks, view_valid=valid, K=K, R=R, t=t, keypoints2d=kp2, visibility=vis,
            keypoints3d=kp3, params=dict(record.params or {}),
        )
        return stored, reduces

    def _bbox(self, view: ViewRecord, kp3: np.ndarray, mask: Mask | None) -> tuple[float, ...] | None:
        pts = np.asarray(view.keypoints2d, dtype=np.float64)
        finite = C.finite_rows(pts)
        seen = finite & (view.visibility > 0)
        box = C.finite_points_bbox(pts[seen if seen.any() else finite])
        if mask is not None:
            box = C.union_bbox(box, mask.bbox() if isinstance(mask, PackedMask) else C.mask_bbox(mask))
        if box is None:
            cam = kp3 @ view.R.T + view.t
            front = np.isfinite(cam).all(axis=1) & (cam[:, 2] > 0)
            if front.any():
                uv = cam[front] @ view.K.T
                box = C.points_bbox(uv[:, :2] / uv[:, 2:3])
        return box

    def view_mask(self, view: ViewRecord, ctx: str = "") -> Mask | None:
        """The view's mask (255 = animal) in undistorted source pixels, or None when it has none. A
        1-bit PNG mask of a view without distortion stays packed (:func:`load_mask_packed`).

        An unreadable mask, or one whose size is not the manifest's image size, is a :class:`BadSample`.
        """
        if view.mask is None:
            return None
        W, H = view.image_size
        mref = resolve_in(self.base, view.mask)
        dist = _distortion(view)
        try:
            mask = load_mask(mref) if dist is not None else load_mask_packed(mref)
        except DataError as exc:
            raise BadSample("bad mask", f"{exc} {ctx}") from None
        if mask.shape != (H, W):
            raise BadSample("mask size mismatch", f"{mref['path']}: mask is {mask.shape[1]}×{mask.shape[0]} "
                            f"but the manifest says the image is {W}×{H} {ctx}")
        if dist is not None:
            m1, m2 = self._undistort_maps(view.K, dist, (W, H))
            mask = cv2.remap(mask, m1, m2, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
        return mask

    def crop_plan(self, view: ViewRecord, kp3: np.ndarray, mask: Mask | None, *, jpeg: bool) -> C.CropPlan:
        """The crop of one view (step 3 of the module docstring); ``jpeg``: the source can be decoded reduced."""
        st = self.settings
        return C.plan_crop(self._bbox(view, kp3, mask), view.image_size, st.image_size, padding=st.padding,
                           border=st.border, allow_reduce=st.reduced_decode and jpeg)

    def _process_view(self, view: ViewRecord, kp3: np.ndarray, ctx: str) -> tuple[bytes, bytes, np.ndarray, int]:
        st = self.settings
        W, H = view.image_size
        ref = resolve_in(self.base, view.image)
        dist = _distortion(view)
        mask = self.view_mask(view, ctx)

        try:
            if ref.get("path") is not None:
                data = read_bytes(ref["path"])
                name = ref["path"]
                jpeg = is_jpeg(data)
            elif ref.get("video") is not None:
                data, name, jpeg = None, f"{ref['video']} frame {ref.get('frame')}", False
            else:
                raise DataError("an image reference needs 'path' or 'video'", field="image")
            plan = self.crop_plan(view, kp3, mask, jpeg=jpeg)
            # pixels stay in OpenCV's BGR order from decoding to encoding: no colour conversion
            if data is not None:
                image = decode_image(data, reduce=plan.reduce, path=name, rgb=False)
            else:
                image = self.videos.read(ref["video"], int(ref.get("frame", -1)), rgb=False)
        except BadSample:
            raise
        except DataError as exc:
            reason = "image not found" if "not found" in exc.detail else "bad image"
            raise BadSample(reason, f"{exc} {ctx}") from None

        h, w = image.shape[:2]
        r = plan.reduce
        if (w, h) != (W, H) and not (r > 1 and abs(w - W / r) < 1 and abs(h - H / r) < 1):
            raise BadSample("image size mismatch", f"{name}: image is {w * r}×{h * r} but the manifest says "
                            f"{W}×{H} {ctx}")
        maps = None
        if dist is not None:
            maps = self._undistort_maps(C.reduce_affine(r) @ view.K, dist, (w, h))
        crop = C.crop_and_resize(image, plan.box, st.image_size, undistort_maps=maps)
        img_bytes = encode_jpeg(crop, st.jpeg_quality, rgb=False)
        mask_bytes = b""
        if mask is not None:
            box = plan.box
            full = C.CropBox(box.x0 * r, box.y0 * r, box.size * r)
            if isinstance(mask, PackedMask):  # unpack only the rows the crop covers
                top = max(full.y0, 0)
                mask = mask.unpack(top, full.y0 + full.size)
                full = C.CropBox(full.x0, full.y0 - top, full.size)
            mask_bytes = encode_png_mask(C.crop_and_resize(mask, full, st.image_size, is_mask=True), binary=True)
        return img_bytes, mask_bytes, plan.affine, r

    def _undistort_maps(self, K: np.ndarray, dist: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Cached ``cv2.initUndistortRectifyMap`` (new camera = ``K``): a rig's maps are reused per frame."""
        key = np.asarray(K, np.float64).tobytes() + dist.tobytes() + np.asarray(size, np.int64).tobytes()
        maps = self._maps.pop(key, None)
        if maps is None:
            K64 = np.asarray(K, np.float64)
            maps = cv2.initUndistortRectifyMap(K64, dist, None, K64, size, cv2.CV_16SC2)
            while len(self._maps) >= 8:
                self._maps.popitem(last=False)
        self._maps[key] = maps
        return maps


def available_cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _distortion(view: ViewRecord) -> np.ndarray | None:
    """The view's distortion coefficients (float64), or None when it has none or they are all zero."""
    return None if view.dist is None or not np.any(view.dist) else np.asarray(view.dist, dtype=np.float64)


def _param_dims(spec: tuple[str, ...], num_joints: int) -> tuple[int, ...]:
    """Per-sample shape of a body parameter; -1 for the free betas count ``B``."""
    named = {"J": num_joints, "J-1": num_joints - 1, "B": -1}
    return tuple(named[d] if d in named else int(d) for d in spec)


# --- worker processes ------------------------------------------------------------------------
# Forked, so they start in milliseconds with the modules and settings already loaded. Chunk c of the
# sample lines goes to worker c mod N, which reads those lines from the manifest itself; each chunk's
# results come back as one pickled message of compact arrays (_pack_results), and the parent takes
# them in chunk order: the output does not depend on N.


def _chunk_size(lines: int, workers: int, videos: bool) -> int:
    """Lines per chunk: each worker gets at least 8 chunks (few lines of a short manifest must not
    all go to one worker), and at most PROCESS_CHUNK lines go into one message."""
    if videos:
        return PROCESS_CHUNK_VIDEO
    return max(1, min(PROCESS_CHUNK, lines // (8 * workers)))


class _ForkedResults:
    """Results of the lines ``refs`` processed in ``workers`` forked processes, in manifest order. The
    processes start when this is made (make it before starting any thread); iterate once, then
    :meth:`close`. A worker runs at most a pipe's buffer ahead of the parent, so memory does not grow
    with the manifest."""

    def __init__(self, manifest: Path, header: ManifestHeader, settings: PreprocessSettings, workers: int,
                 refs: list[LineRef], chunk: int):
        self.chunks = len(range(0, len(refs), chunk))
        self.workers = workers
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.manifest = manifest
        ctx = multiprocessing.get_context("fork")
        cv_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)  # the children inherit an OpenCV without a thread pool of its own
        try:
            for k in range(min(workers, self.chunks)):
                mine = [refs[i : i + chunk] for i in range(k * chunk, len(refs), workers * chunk)]
                receive, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker_main, args=(send, manifest, header, settings, mine),
                                   name=f"smil-preprocess-{k}", daemon=True)
                proc.start()
                send.close()
                self.procs.append(proc)
                self.conns.append(receive)
        except BaseException:
            self.close()
            raise
        finally:
            cv2.setNumThreads(cv_threads)

    def __iter__(self) -> Iterator[_Result]:
        for c in range(self.chunks):
            k = c % self.workers
            try:
                kind, payload = pickle.loads(self.conns[k].recv_bytes())
            except EOFError:
                self.procs[k].join(5)
                raise DataError(f"worker process {self.procs[k].name} stopped unexpectedly (exit code "
                                f"{self.procs[k].exitcode})", path=self.manifest) from None
            if kind == "error":
                raise payload
            yield from _unpack_results(payload)

    def close(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join()
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []


def _worker_main(conn: Any, manifest: Path, header: ManifestHeader, settings: PreprocessSettings,
                 chunks: list[list[LineRef]]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the workers
    processor = SampleProcessor(manifest, header, settings)
    try:
        for chunk in chunks:
            try:
                lines = _manifest_lines(manifest, chunk)
                message: tuple[str, Any] = ("ok", _pack_results([processor.process_line(n, t) for n, t in lines]))
            except Exception as exc:  # the parent raises it when it reaches this chunk
                conn.send_bytes(pickle.dumps(("error", exc)))
                return
            conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
    finally:
        processor.close()
        conn.close()


# A chunk's numbers travel as one float32 array (the file stores float32): per sample its
# StoredSample arrays in this order, then its body parameters; pickling them array by array, or
# StoredSample objects, costs several times more at both ends.
_PACKED_FIELDS = ("K", "R", "t", "keypoints2d", "visibility", "keypoints3d")


def _pack_results(results: list[_Result]) -> tuple[list[tuple], np.ndarray]:
    """A bad sample travels as ``(line, sample_id, reason, message)``, a stored one as a longer tuple."""
    items, numbers = [], []
    for r in results:
        s = r.stored
        if s is None:
            items.append((r.line, r.sample_id, r.reason, r.message))
            continue
        arrays = [getattr(s, name) for name in _PACKED_FIELDS] + [np.asarray(v) for v in s.params.values()]
        numbers += [a.ravel() for a in arrays]
        items.append((r.line, r.sample_id, r.reduce, s.group, s.session, s.frame, s.images, s.masks,
                      s.view_valid.tobytes(), tuple(s.params), tuple(a.shape for a in arrays)))
    return items, (np.concatenate(numbers).astype(np.float32) if numbers else np.zeros(0, np.float32))


def _unpack_results(packed: tuple[list[tuple], np.ndarray]) -> Iterator[_Result]:
    items, numbers = packed
    start = 0
    for item in items:
        if len(item) == 4:
            yield _Result(item[0], item[1], reason=item[2], message=item[3])
            continue
        line, sample_id, reduce, group, session, frame, images, masks, valid, param_names, shapes = item
        arrays = []
        for shape in shapes:
            end = start + math.prod(shape)
            arrays.append(numbers[start:end].reshape(shape))
            start = end
        fields = dict(zip(_PACKED_FIELDS, arrays))
        params = dict(zip(param_names, arrays[len(_PACKED_FIELDS) :]))
        stored = StoredSample(sample_id=sample_id, group=group, session=session, frame=frame, images=images,
                              masks=masks, view_valid=np.frombuffer(valid, dtype=bool), params=params, **fields)
        yield _Result(line, sample_id, stored=stored, reduce=reduce)


def _threaded_results(
    manifest: Path, header: ManifestHeader, settings: PreprocessSettings, threads: int,
    lines: Iterable[tuple[int, str]],
) -> Iterator[_Result]:
    """Process ``lines`` in ``threads`` threads (one :class:`SampleProcessor` each), yielding results
    in manifest order. OpenCV's decoding, resizing and encoding and zlib release the GIL, so the
    threads overlap them with each other and with the caller's HDF5 writes. At most ``2 × threads``
    chunks are in flight, so memory does not grow with the manifest."""
    local = threading.local()
    processors: list[SampleProcessor] = []
    lock = threading.Lock()

    def run(chunk: list[tuple[int, str]]) -> list[_Result]:
        proc = getattr(local, "processor", None)
        if proc is None:
            proc = local.processor = SampleProcessor(manifest, header, settings)
            with lock:
                processors.append(proc)
        return [proc.process_line(n, text) for n, text in chunk]

    it = iter(lines)
    pending: deque = deque()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, THREAD_SWITCH_INTERVAL_S))
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="smil-preprocess") as pool:
            try:
                while chunk := list(islice(it, THREAD_CHUNK)):
                    pending.append(pool.submit(run, chunk))
                    if len(pending) >= 2 * threads:
                        yield from pending.popleft().result()
                while pending:
                    yield from pending.popleft().result()
            finally:
                for fut in pending:
                    fut.cancel()
    finally:
        sys.setswitchinterval(interval)
        for proc in processors:
            proc.close()


def _reads_videos(manifest: Path) -> bool:
    """Whether the manifest's first sample takes its frames from videos (ingest writes one kind)."""
    try:
        first = next(iter_manifest(manifest), None)
    except DataError:
        return False  # the processing reports the bad line
    return first is not None and any(view.image.get("video") is not None for view in first.views)


# A sample line of a manifest: (line number, byte offset, byte length)
LineRef = tuple[int, int, int]


def _index_manifest(path: Path) -> list[LineRef]:
    """Where each sample line of the manifest is."""
    index: list[LineRef] = []
    with open(path, "rb") as fh:
        pos = len(fh.readline())
        for lineno, raw in enumerate(fh, start=2):
            if raw.strip():
                index.append((lineno, pos, len(raw)))
            pos += len(raw)
    return index


def _manifest_lines(path: Path, refs: list[LineRef]) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of the lines ``refs`` (consecutive ones are read together)."""
    with open(path, "rb") as fh:
        for start in range(0, len(refs), 256):
            run = refs[start : start + 256]
            first = run[0][1]
            fh.seek(first)
            data = fh.read(run[-1][1] + run[-1][2] - first)
            for lineno, offset, length in run:
                yield lineno, decode_manifest_line(data[offset - first : offset - first + length], f"{path}:{lineno}")


def preprocess(
    manifest: str | Path,
    output: str | Path,
    settings: PreprocessSettings = PreprocessSettings(),
    *,
    progress: bool | None = None,
    summary_path: str | Path | None = None,
) -> dict[str, Any]:
    """Build ``output`` (HDF5) from ``manifest``; return the summary, also written as JSON.

    ``progress``: None = tqdm on a terminal, plain log lines otherwise; False = silent. The summary goes
    to ``summary_path`` (default ``preprocess_summary.json`` beside ``output``). Samples are processed
    in forked worker processes or in threads (:meth:`PreprocessSettings.plan_parallelism`); the output
    is the same either way, byte for byte.
    """
    manifest, output = Path(manifest), Path(output)
    t0 = time.perf_counter()
    header = read_manifest_header(manifest)
    index = _index_manifest(manifest)
    total = len(index)
    skipped: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    reduce_counts: Counter[int] = Counter()
    groups: list[str] = []
    views_written = masks_written = 0
    videos = _reads_videos(manifest)
    workers, threads = settings.plan_parallelism(videos=videos)
    local: SampleProcessor | None = None
    results: Iterable[_Result] = ()
    bar = None
    try:
        if workers > 1:  # first: no thread of ours (progress bar, writer) runs when the workers fork
            results = _ForkedResults(manifest, header, settings, workers, index, _chunk_size(total, workers, videos))
        elif threads > 1:
            results = _threaded_results(manifest, header, settings, threads, _manifest_lines(manifest, index))
        else:
            local = SampleProcessor(manifest, header, settings)
            results = (local.process_line(n, text) for n, text in _manifest_lines(manifest, index))
        # hashed once the workers run: the one core this would keep busy alone is shared instead
        recorded = {**settings.recorded(), "manifest": manifest.name, "manifest_sha256": file_sha256(manifest)}
        bar = Progress(total, progress, "preprocess")
        with DatasetWriter(
            output,
            joint_names=header.joint_names,
            camera_names=header.camera_names,
            image_size=(settings.image_size, settings.image_size),
            world_unit_m=header.world_unit_m,
            source_kind=header.source_kind,
            body_model_sha256=header.body_model_sha256 or "",
            preprocess_settings=recorded,
            block_size=WRITE_BLOCK,
            expected_samples=total,
        ) as writer:
            seen_ids: set[str] = set()
            for res in results:
                bar.update()
                if res.sample_id in seen_ids:
                    raise DataError(f"sample_id '{res.sample_id}' appears twice", path=f"{manifest}:{res.line}",
                                    field="sample_id")
                seen_ids.add(res.sample_id)
                if res.stored is None:
                    if not settings.skip_bad:
                        raise DataError(f"{res.message} (use --skip-bad to skip bad samples)")
                    reasons[res.reason] += 1
                    if len(skipped) < MAX_LISTED_SKIPS:
                        skipped.append({"line": res.line, "sample_id": res.sample_id, "reason": res.reason,
                                        "message": res.message})
                    continue
                writer.append(res.stored)
                groups.append(res.stored.group)
                views_written += int(res.stored.view_valid.sum())
                masks_written += sum(1 for m in res.stored.masks if m)
                reduce_counts.update(res.reduce)
            if not groups:
                raise DataError("no sample could be preprocessed" + (
                    f" ({sum(reasons.values())} skipped: {dict(reasons)})" if reasons else " (the manifest is empty)"
                ), path=manifest)
            split = split_by_group(groups, settings.split, settings.seed)
            writer.finish(split, settings.seed)
    finally:
        if bar is not None:
            bar.close()
        close = getattr(results, "close", None)
        if close is not None:
            close()  # stop the threads or worker processes now, not at garbage collection
        if local is not None:
            local.close()
    seconds = time.perf_counter() - t0
    V = len(header.camera_names)
    summary = {
        "manifest": str(manifest),
        "output": str(output),
        "samples_in_manifest": total,
        "samples_written": len(groups),
        "samples_skipped": sum(reasons.values()),
        "skipped_by_reason": dict(sorted(reasons.items())),
        "skipped": skipped,
        "skipped_listed": len(skipped),
        "views_written": views_written,
        "views_padded": len(groups) * V - views_written,
        "masks_written": masks_written,
        "decode_reduction": {str(k): v for k, v in sorted(reduce_counts.items())},
        "split_sizes": split_sizes(split),
        "groups": len(set(groups)),
        "seconds": round(seconds, 3),
        "samples_per_second": round(len(groups) / seconds, 2) if seconds > 0 else None,
        "settings": {**recorded, "workers": workers, "threads": threads},
    }
    write_json_atomic(Path(summary_path) if summary_path else output.parent / SUMMARY_NAME, summary)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A few human lines for the terminal."""
    sizes = summary["split_sizes"]
    lines = [
        f"wrote {summary['output']}: {summary['samples_written']} samples, {summary['views_written']} views "
        f"(train {sizes['train']}, val {sizes['val']}, test {sizes['test']}; {summary['groups']} groups) "
        f"in {summary['seconds']:.1f} s",
    ]
    if summary["samples_skipped"]:
        why = ", ".join(f"{k}: {v}" for k, v in summary["skipped_by_reason"].items())
        lines.append(f"skipped {summary['samples_skipped']} bad samples ({why})")
        for item in summary["skipped"][:5]:
            lines.append(f"  line {item['line']}: {item['message']}")
    return "\n".join(lines)

