"""The HDF5 dataset store: :class:`DatasetWriter` and :class:`DatasetReader` (``open_dataset``).

The layout is ``docs/dataset-format.md``; names and dtypes come from :mod:`smil.data.schema`.

Writing is atomic: the writer builds the file under a hidden temporary name in the destination folder
and renames it over the destination only in :meth:`DatasetWriter.finish`. A failed or killed run
leaves no file that looks finished, and a previous file at the destination stays intact.

Reading is lazy and fork-safe: :class:`DatasetReader` validates the file when constructed, keeps the
small per-sample columns (ids, splits, flags) in memory, and opens one read-only h5py handle per
process the first time that process reads a sample — so a reader handed to ``torch`` DataLoader
workers (forked or pickled) never shares an HDF5 handle across processes.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from smil import __version__
from smil.data import schema as S
from smil.data.images import decode_jpeg, decode_png_mask
from smil.data.manifest import PARAM_SHAPES
from smil.errors import DataError
from smil.io_utils import atomic_path


@dataclass
class StoredSample:
    """One sample as stored: V views (padded to the dataset's camera slots), J joints.

    Invalid views have ``images[v] == b""`` and ``view_valid[v] == False``; absent masks are ``b""``.
    ``params`` holds only the body parameters the source provides.
    """

    sample_id: str
    group: str
    images: list[bytes]
    masks: list[bytes]
    view_valid: np.ndarray  # (V,) bool
    K: np.ndarray  # (V, 3, 3)
    R: np.ndarray  # (V, 3, 3)
    t: np.ndarray  # (V, 3)
    keypoints2d: np.ndarray  # (V, J, 2)
    visibility: np.ndarray  # (V, J)
    keypoints3d: np.ndarray  # (J, 3), NaN = missing
    params: dict[str, np.ndarray] = field(default_factory=dict)
    session: str = ""
    frame: int = -1


_FLOAT_FIELDS = ((S.K, "K"), (S.R, "R"), (S.T, "t"), (S.KEYPOINTS2D, "keypoints2d"), (S.VISIBILITY, "visibility"),
                 (S.KEYPOINTS3D, "keypoints3d"))


def _shape(value: Any) -> tuple[int, ...]:
    """``np.shape(value)``, at a third of its cost for an array (the writer checks every sample)."""
    return value.shape if type(value) is np.ndarray else np.shape(value)


def _param_shape(name: str, num_joints: int, value: np.ndarray) -> tuple[int, ...]:
    spec = PARAM_SHAPES[name]
    shape: list[int] = []
    for i, s in enumerate(spec):
        if s == "J":
            shape.append(num_joints)
        elif s == "J-1":
            shape.append(num_joints - 1)
        elif s == "B":
            shape.append(int(value.shape[i]) if value.ndim > i else -1)
        else:
            shape.append(int(s))
    return tuple(shape)


class DatasetWriter:
    """Append samples to a new dataset file; :meth:`finish` writes the splits and publishes the file.

    Use as a context manager: leaving the block with an exception (or without calling ``finish``)
    deletes the temporary file and leaves ``path`` untouched. Samples are buffered and written
    ``block_size`` at a time, so h5py's per-call overhead is paid per block, not per sample.
    ``expected_samples``: how many samples the caller expects to append (a hint: the arrays are sized
    for them up front, grown when more come and trimmed by :meth:`finish` when fewer do).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        joint_names: Sequence[str],
        camera_names: Sequence[str],
        image_size: tuple[int, int],
        world_unit_m: float,
        source_kind: str,
        body_model_sha256: str | None = "",
        preprocess_settings: dict[str, Any] | None = None,
        block_size: int = 64,
        expected_samples: int = 0,
    ):
        if source_kind not in S.SOURCE_KINDS:
            raise DataError(f"unknown source kind {source_kind!r}; expected one of {list(S.SOURCE_KINDS)}",
                            field="source_kind")
        if not camera_names:
            raise DataError("a dataset needs at least one camera slot", field="camera_names")
        self.path = Path(path)
        self.joint_names = [str(n) for n in joint_names]
        self.camera_names = [str(n) for n in camera_names]
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.block_size = max(int(block_size), 1)
        self.num_written = 0
        self._buffer: list[StoredSample] = []
        self._param_shapes: dict[str, tuple[int, ...]] = {}
        self._datasets: dict[str, h5py.Dataset] = {}
        self._capacity = 0  # rows every array in _row_datasets has (see _reserve)
        self._row_datasets: list[h5py.Dataset] = []  # every array with one row per sample
        V, J = len(self.camera_names), len(self.joint_names)
        self._expect = (("K", (V, 3, 3)), ("R", (V, 3, 3)), ("t", (V, 3)), ("keypoints2d", (V, J, 2)),
                        ("visibility", (V, J)), ("keypoints3d", (J, 3)), ("view_valid", (V,)))
        self._finished = False
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path, suffix=".h5.tmp"))
        try:
            self._h5 = h5py.File(self._tmp, "w", libver=S.LIBVER)
            self._create(world_unit_m, source_kind, body_model_sha256 or "", preprocess_settings or {})
            self._reserve(max(int(expected_samples), 0))
        except BaseException:
            self.abort()
            raise

    @property
    def num_views(self) -> int:
        return len(self.camera_names)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def _create(self, world_unit_m: float, source_kind: str, sha: str, settings: dict[str, Any]) -> None:
        f, V, J = self._h5, self.num_views, self.num_joints
        a = f.attrs
        a[S.ATTR_SCHEMA_VERSION] = S.SCHEMA_VERSION
        a[S.ATTR_JOINT_NAMES] = json.dumps(self.joint_names)
        a[S.ATTR_WORLD_UNIT_M] = float(world_unit_m)
        a[S.ATTR_IMAGE_SIZE] = np.asarray(self.image_size, dtype=np.int64)
        a[S.ATTR_SOURCE_KIND] = source_kind
        a[S.ATTR_BODY_MODEL_SHA256] = sha
        a[S.ATTR_SMIL_VERSION] = __version__
        a[S.ATTR_PREPROCESS_SETTINGS] = json.dumps(settings, sort_keys=True)
        a[S.ATTR_CAMERA_NAMES] = json.dumps(self.camera_names)
        a[S.ATTR_SPLIT_NAMES] = json.dumps(list(S.SPLIT_NAMES))

        def per_sample(name: str, shape: tuple[int, ...], dtype: Any, fill: Any = None) -> None:
            self._add_rows(name, f.create_dataset(name, (0, *shape), maxshape=(None, *shape), dtype=dtype,
                                                  chunks=(S.SAMPLE_CHUNK, *shape), fillvalue=fill))

        def column(name: str, shape: tuple[int, ...], dtype: Any) -> None:
            self._add_rows(name, f.create_dataset(name, (0, *shape), maxshape=(None, *shape), dtype=dtype,
                                                  chunks=(S.COLUMN_CHUNK, *shape)))

        per_sample(S.IMAGES, (V,), S.JPEG_DTYPE)
        per_sample(S.MASKS, (V,), S.JPEG_DTYPE)
        per_sample(S.K, (V, 3, 3), np.float32)
        per_sample(S.R, (V, 3, 3), np.float32)
        per_sample(S.T, (V, 3), np.float32)
        per_sample(S.KEYPOINTS2D, (V, J, 2), np.float32, np.nan)
        per_sample(S.VISIBILITY, (V, J), np.float32)
        per_sample(S.KEYPOINTS3D, (J, 3), np.float32, np.nan)
        column(S.HAS_MASK, (V,), bool)
        column(S.VIEW_VALID, (V,), bool)
        column(S.SAMPLE_ID, (), S.STR_DTYPE)
        column(S.GROUP, (), S.STR_DTYPE)
        column(S.SESSION, (), S.STR_DTYPE)
        column(S.FRAME, (), np.int64)
        column(S.SPLIT, (), np.uint8)
        f.create_group(S.PARAMS)

    def append(self, sample: StoredSample) -> None:
        """Queue one sample; it is written with the next full block (or by :meth:`finish`)."""
        if self._finished:
            raise RuntimeError("DatasetWriter.append after finish")
        self._admit(sample)
        self._buffer.append(sample)
        if len(self._buffer) >= self.block_size:
            self.flush()

    def _admit(self, s: StoredSample) -> None:
        """Check a sample's shapes against the file's; make the arrays of a body parameter the first
        time a sample has it (not in a later block write: that may be the last, serial step of a run)."""
        for name, shape in self._expect:
            got = _shape(getattr(s, name))
            if got != shape:
                raise DataError(f"sample '{s.sample_id}': expected shape {shape}, got {got}", field=name)
        V = self.num_views
        if len(s.images) != V or len(s.masks) != V:
            raise DataError(f"sample '{s.sample_id}': expected {V} images and masks", field="images")
        for name, value in s.params.items():
            want = self._param_shapes.get(name)
            if want is None:
                if name not in PARAM_SHAPES:
                    raise DataError(f"sample '{s.sample_id}': unknown body parameter", field=f"params.{name}")
                want = _param_shape(name, self.num_joints, np.asarray(value))
            got = _shape(value)
            if got != want:
                raise DataError(
                    f"sample '{s.sample_id}': expected shape {want}, got {got}", field=f"params.{name}"
                )
            if name not in self._param_shapes:
                self._param_shapes[name] = want
                self._create_param(name, want)

    def _create_param(self, name: str, shape: tuple[int, ...]) -> None:
        """The arrays of a body parameter; earlier rows read as NaN / False (fill values)."""
        f, rows = self._h5, self._capacity
        self._add_rows(S.param_path(name), f.create_dataset(
            S.param_path(name), (rows, *shape), maxshape=(None, *shape), dtype=np.float32,
            chunks=(S.SAMPLE_CHUNK, *shape) if shape else (S.COLUMN_CHUNK,), fillvalue=np.nan))
        self._add_rows(S.has_param_path(name), f.create_dataset(
            S.has_param_path(name), (rows,), maxshape=(None,), dtype=bool, chunks=(S.COLUMN_CHUNK,),
            fillvalue=False))

    def flush(self) -> None:
        """Write the buffered samples: one h5py write per array for the whole block."""
        block, self._buffer = self._buffer, []
        if not block:
            return
        n0, n = self.num_written, len(block)
        end = n0 + n
        self._reserve(end)
        put = self._put
        put(S.IMAGES, n0, self._vlen([s.images for s in block]))
        put(S.MASKS, n0, self._vlen([s.masks for s in block]))
        put(S.HAS_MASK, n0, np.array([[len(m) > 0 for m in s.masks] for s in block], dtype=bool))
        put(S.VIEW_VALID, n0, np.array([s.view_valid for s in block], dtype=bool))
        for name, attr in _FLOAT_FIELDS:
            put(name, n0, np.array([getattr(s, attr) for s in block], dtype=np.float32))
        for name, attr in ((S.SAMPLE_ID, "sample_id"), (S.GROUP, "group"), (S.SESSION, "session")):
            put(name, n0, np.array([getattr(s, attr) for s in block], dtype=S.STR_DTYPE))
        put(S.FRAME, n0, np.array([s.frame for s in block], dtype=np.int64))
        for name, shape in self._param_shapes.items():
            self._put_param(name, shape, block, n0)
        self.num_written = end

    def _add_rows(self, name: str, ds: h5py.Dataset) -> None:
        """Register a per-sample array (resolved once: h5py name lookups cost more than small writes)."""
        self._datasets[name] = ds
        self._row_datasets.append(ds)

    def _reserve(self, rows: int) -> None:
        """Make every per-sample array at least ``rows`` long. Arrays grow ahead of the writes (to
        ``expected_samples``, or doubling), because resizing costs about as much as a block's write;
        :meth:`finish` trims them to the rows written. Chunks that were never written take no space."""
        if rows <= self._capacity:
            return
        self._capacity = max(rows, 2 * self._capacity)
        for ds in self._row_datasets:
            ds.resize(self._capacity, axis=0)

    def _put(self, name: str, n0: int, values: np.ndarray) -> None:
        """Write ``values`` (rows ``n0…``, the dataset's own dtype) with h5py's low-level call: the
        high-level ``ds[a:b] = values`` spends about 0.3 ms per call building selections."""
        ds = self._datasets[name]
        values = np.ascontiguousarray(values)
        file_space = ds.id.get_space()
        file_space.select_hyperslab((n0,) + (0,) * (values.ndim - 1), values.shape)
        ds.id.write(h5py.h5s.create_simple(values.shape), file_space, values)

    def _vlen(self, rows: list[list[bytes]]) -> np.ndarray:
        """An (n, V) object array of uint8 arrays: what h5py writes to a variable-length dataset."""
        arr = np.empty((len(rows), self.num_views), dtype=S.JPEG_DTYPE)
        for i, row in enumerate(rows):
            for v, data in enumerate(row):
                arr[i, v] = np.frombuffer(data, dtype=np.uint8)
        return arr

    def _put_param(self, name: str, shape: tuple[int, ...], block: list[StoredSample], n0: int) -> None:
        n = len(block)
        has = np.array([name in s.params for s in block], dtype=bool)
        if has.all():
            values = np.array([s.params[name] for s in block], dtype=np.float32)
        else:
            values = np.full((n, *shape), np.nan, dtype=np.float32)
            for i in np.flatnonzero(has):
                values[i] = np.asarray(block[i].params[name], dtype=np.float32)
        self._put(S.param_path(name), n0, values)
        self._put(S.has_param_path(name), n0, has)

    def finish(self, split: np.ndarray, split_seed: int) -> Path:
        """Write the split codes, close the file and rename it to ``path``. Returns ``path``."""
        if self._finished:
            raise RuntimeError("DatasetWriter.finish called twice")
        try:
            self.flush()
            split = np.asarray(split, dtype=np.uint8)
            if split.shape != (self.num_written,):
                raise ValueError(f"split has shape {split.shape}, expected ({self.num_written},)")
            if split.size and int(split.max()) >= len(S.SPLIT_NAMES):
                raise ValueError(f"split codes must be < {len(S.SPLIT_NAMES)}")
            if self.num_written:
                self._reserve(self.num_written)
                self._put(S.SPLIT, 0, split)
            if self._capacity != self.num_written:
                for ds in self._row_datasets:
                    ds.resize(self.num_written, axis=0)
            self._h5.attrs[S.ATTR_SPLIT_SEED] = int(split_seed)
            self._h5.close()
            self._stack.close()  # renames the temporary file over ``path``
        except BaseException:
            self.abort()
            raise
        self._finished = True
        return self.path

    def abort(self) -> None:
        """Discard everything: close and delete the temporary file; ``path`` is untouched."""
        self._finished = True
        with contextlib.suppress(Exception):
            if getattr(self, "_h5", None) is not None and self._h5.id.valid:
                self._h5.close()
        self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._finished:
            self.abort()
            if exc_type is None:
                raise RuntimeError("DatasetWriter closed without finish(); the output was discarded")


def _read_attr_json(attrs: Any, name: str, path: Path) -> Any:
    try:
        return json.loads(attrs[name])
    except (TypeError, ValueError):
        raise DataError("attribute is not valid JSON", path=path, field=name) from None


class DatasetReader:
    """Read a dataset file sample by sample. See the module docstring for the process model.

    Attributes read at open: ``schema_version``, ``joint_names``, ``camera_names``, ``image_size`` (W, H),
    ``world_unit_m``, ``source_kind``, ``body_model_sha256``, ``smil_version``, ``preprocess_settings``,
    ``split_seed``, ``split_names``, ``param_names`` (body parameters present), and the columns
    ``sample_id``, ``group``, ``session``, ``frame``, ``split``, ``view_valid``, ``has_mask``,
    ``has_params`` (dict name → (N,) bool).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._h5: h5py.File | None = None
        self._pid = -1
        self._inherited: list[h5py.File] = []
        self._arrays: dict[str, h5py.Dataset] = {}
        f = self._open_file()
        try:
            self._load_metadata(f)
        except OSError as exc:
            raise DataError(f"cannot read dataset metadata ({exc}); the file may be truncated or corrupt",
                            path=self.path) from None
        finally:
            f.close()

    # -- opening and validation --------------------------------------------------------------
    def _open_file(self) -> h5py.File:
        if not self.path.is_file():
            raise DataError("dataset file not found", path=self.path)
        try:
            return h5py.File(self.path, "r")
        except OSError as exc:
            reason = str(exc).split("(")[0].strip() or "unreadable"
            raise DataError(f"not a readable HDF5 file; it may be truncated or corrupt ({reason})",
                            path=self.path) from None

    def _load_metadata(self, f: h5py.File) -> None:
        p = self.path
        attrs = f.attrs
        if S.ATTR_SCHEMA_VERSION not in attrs:
            raise DataError("not a smil dataset (no schema_version attribute)", path=p, field=S.ATTR_SCHEMA_VERSION)
        version = int(attrs[S.ATTR_SCHEMA_VERSION])
        if version not in S.READABLE_VERSIONS:
            raise DataError(
                f"dataset schema version {version} is not supported by smil {__version__}, which reads "
                f"version(s) {', '.join(map(str, S.READABLE_VERSIONS))}; re-run `smil preprocess` or use the "
                f"smil that wrote it",
                path=p, field=S.ATTR_SCHEMA_VERSION,
            )
        self.schema_version = version
        missing = [a for a in S.REQUIRED_ATTRS if a not in attrs]
        if missing:
            raise DataError(f"missing attribute(s) {missing}", path=p)
        self.joint_names: list[str] = _read_attr_json(attrs, S.ATTR_JOINT_NAMES, p)
        self.camera_names: list[str] = _read_attr_json(attrs, S.ATTR_CAMERA_NAMES, p)
        self.preprocess_settings: dict[str, Any] = _read_attr_json(attrs, S.ATTR_PREPROCESS_SETTINGS, p)
        self.split_names: list[str] = _read_attr_json(attrs, S.ATTR_SPLIT_NAMES, p)
        size = np.asarray(attrs[S.ATTR_IMAGE_SIZE]).reshape(-1)
        if size.shape != (2,):
            raise DataError(f"expected (W, H), got {size.tolist()}", path=p, field=S.ATTR_IMAGE_SIZE)
        self.image_size = (int(size[0]), int(size[1]))
        self.world_unit_m = float(attrs[S.ATTR_WORLD_UNIT_M])
        self.source_kind = str(attrs[S.ATTR_SOURCE_KIND])
        self.body_model_sha256 = str(attrs[S.ATTR_BODY_MODEL_SHA256])
        self.smil_version = str(attrs[S.ATTR_SMIL_VERSION])
        self.split_seed = int(attrs[S.ATTR_SPLIT_SEED])

        missing = [d for d in S.REQUIRED_ARRAYS if d not in f]
        if missing:
            raise DataError(f"missing array(s) {missing}", path=p)
        N, V, J = int(f[S.SAMPLE_ID].shape[0]), len(self.camera_names), len(self.joint_names)
        expect = {
            S.IMAGES: (N, V), S.MASKS: (N, V), S.HAS_MASK: (N, V), S.VIEW_VALID: (N, V),
            S.K: (N, V, 3, 3), S.R: (N, V, 3, 3), S.T: (N, V, 3), S.KEYPOINTS2D: (N, V, J, 2),
            S.VISIBILITY: (N, V, J), S.KEYPOINTS3D: (N, J, 3), S.GROUP: (N,), S.SESSION: (N,),
            S.FRAME: (N,), S.SPLIT: (N,),
        }
        for name, shape in expect.items():
            if f[name].shape != shape:
                raise DataError(f"expected shape {shape} (N, V, J from the attributes), got {f[name].shape}",
                                path=p, field=name)
        self.num_samples, self.num_views, self.num_joints = N, V, J
        self.param_names: list[str] = [n for n in S.PARAM_NAMES if S.param_path(n) in f]
        self.param_shapes: dict[str, tuple[int, ...]] = {n: f[S.param_path(n)].shape[1:] for n in self.param_names}
        self.sample_id = f[S.SAMPLE_ID].asstr()[:]
        self.group = f[S.GROUP].asstr()[:]
        self.session = f[S.SESSION].asstr()[:]
        self.frame = f[S.FRAME][:]
        self.split = f[S.SPLIT][:]
        self.view_valid = f[S.VIEW_VALID][:]
        self.has_mask = f[S.HAS_MASK][:]
        self.has_params = {n: f[S.has_param_path(n)][:] for n in self.param_names}
        if self.split.size and int(self.split.max()) >= len(self.split_names):
            raise DataError(f"split codes must be < {len(self.split_names)}", path=p, field=S.SPLIT)
        self.attrs: dict[str, Any] = {k: _plain(v) for k, v in attrs.items()}

    @property
    def h5(self) -> h5py.File:
        """This process's read-only h5py handle, opened on first use (again after a fork)."""
        if self._h5 is None or self._pid != os.getpid():
            if self._h5 is not None:
                # opened by the parent before a fork: never touch it here, just stop using it
                self._inherited.append(self._h5)
            f = self._open_file()
            # name lookups cost far more than small reads in h5py: resolve the arrays once per handle
            names = list(S.PER_SAMPLE_ARRAYS) + [S.param_path(n) for n in self.param_names]
            self._arrays = {name: f[name] for name in names}
            self._h5, self._pid = f, os.getpid()
        return self._h5

    def _process_arrays(self) -> dict[str, h5py.Dataset]:
        """The per-sample arrays of this process's handle (opening it when needed)."""
        _ = self.h5
        return self._arrays

    # -- access ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_samples

    def split_indices(self, name: str) -> np.ndarray:
        """Sample indices (int64, ascending) of split ``name`` ("train", "val" or "test")."""
        if name not in self.split_names:
            raise DataError(f"unknown split {name!r}; expected one of {self.split_names}", path=self.path,
                            field="split")
        return np.flatnonzero(self.split == self.split_names.index(name)).astype(np.int64)

    def split_sizes(self) -> dict[str, int]:
        return {name: int((self.split == code).sum()) for code, name in enumerate(self.split_names)}

    def get_sample(self, index: int, *, decode_images: bool = True, masks: bool = True) -> dict[str, Any]:
        """Read sample ``index``: a dict of numpy arrays (shapes in ``docs/dataset-format.md``).

        Keys: ``index, sample_id, group, session, frame, split, view_valid (V,), has_mask (V,),
        K (V,3,3), R (V,3,3), t (V,3), keypoints2d (V,J,2), visibility (V,J), keypoints3d (J,3),
        params {name: array}, has_params {name: bool}``; with ``decode_images`` ``images`` (V,H,W,3)
        uint8 RGB (zeros for invalid views), else ``image_bytes`` (list of V bytes); with ``masks``
        ``masks`` (V,H,W) uint8 (zeros where absent).
        """
        i = int(index)
        if not -self.num_samples <= i < self.num_samples:
            raise IndexError(f"sample {index} out of range for {self.num_samples} samples in {self.path}")
        i %= max(self.num_samples, 1)
        a = self._process_arrays()
        try:
            out: dict[str, Any] = {
                "index": i,
                "sample_id": str(self.sample_id[i]),
                "group": str(self.group[i]),
                "session": str(self.session[i]),
                "frame": int(self.frame[i]),
                "split": int(self.split[i]),
                "view_valid": self.view_valid[i].copy(),
                "has_mask": self.has_mask[i].copy(),
                "K": a[S.K][i],
                "R": a[S.R][i],
                "t": a[S.T][i],
                "keypoints2d": a[S.KEYPOINTS2D][i],
                "visibility": a[S.VISIBILITY][i],
                "keypoints3d": a[S.KEYPOINTS3D][i],
                "params": {n: np.asarray(a[S.param_path(n)][i]) for n in self.param_names},
                "has_params": {n: bool(self.has_params[n][i]) for n in self.param_names},
            }
            images = a[S.IMAGES][i]
            mask_bytes = a[S.MASKS][i] if masks else None
        except OSError as exc:
            raise DataError(f"cannot read sample {i} ({exc}); the file may be truncated or corrupt",
                            path=self.path) from None
        W, H = self.image_size
        where = f"{self.path}[{i}]"
        if decode_images:
            imgs = np.zeros((self.num_views, H, W, 3), dtype=np.uint8)
            for v in range(self.num_views):
                if len(images[v]):
                    imgs[v] = decode_jpeg(images[v], path=where)
            out["images"] = imgs
        else:
            out["image_bytes"] = [bytes(b) for b in images]
        if mask_bytes is not None:
            ms = np.zeros((self.num_views, H, W), dtype=np.uint8)
            for v in range(self.num_views):
                if len(mask_bytes[v]):
                    ms[v] = decode_png_mask(mask_bytes[v], path=where)
            out["masks"] = ms
        return out

    def close(self) -> None:
        """Close this process's handle (a later read reopens it)."""
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5, self._arrays = None, {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_h5"], state["_pid"], state["_inherited"], state["_arrays"] = None, -1, [], {}
        return state

    def __enter__(self) -> "DatasetReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> dict[str, Any]:
        """A JSON-ready summary: what ``smil dataset info`` prints."""
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "num_samples": self.num_samples,
            "num_views": self.num_views,
            "num_joints": self.num_joints,
            "camera_names": self.camera_names,
            "image_size": list(self.image_size),
            "split_sizes": self.split_sizes(),
            "valid_views": int(self.view_valid.sum()),
            "views_with_mask": int(self.has_mask.sum()),
            "params": {n: {"shape": list(self.param_shapes[n]), "present": int(self.has_params[n].sum())}
                       for n in self.param_names},
            "attrs": self.attrs,
        }


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a JSON-ready value (JSON strings decoded)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str):
        if value[:1] in "[{":
            with contextlib.suppress(ValueError):
                return json.loads(value)
        return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def open_dataset(path: str | Path) -> DatasetReader:
    """Open and validate a dataset file (see :class:`DatasetReader`)."""
    return DatasetReader(path)
