"""Read and write SMIL body-model files (the SMAL/SMPL pickle format), safely.

A model file is a pickled ``dict`` of arrays (see ``docs/body-model.md`` for the keys). Such files
are often old: written by Python 2, numpy 1.x, scipy sparse matrices and chumpy objects. Unpickling
them with :mod:`pickle` directly would run whatever the file names, so :func:`load_model` uses a
restricted unpickler that reconstructs only

* numpy arrays, dtypes and scalars (``numpy.core.*`` is mapped to ``numpy._core.*`` on numpy 2),
* scipy sparse matrices (``csc``/``csr``/``coo``, old and new module paths), returned dense,
* chumpy objects, as inert stand-ins whose array is read from their state (``x`` for ``Ch``;
  ``transpose``/``Reshape``/``Select``/``swapaxes``/``rollaxis`` are evaluated with numpy),
* plain containers and a few harmless builtins.

Anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, …) raises
:class:`~smil.errors.UnsafePickleError` naming the file and the refused global, before it is called.
"""

from __future__ import annotations

import codecs
import collections
import importlib
import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from smil.errors import ModelFileError, UnsafePickleError
from smil.io_utils import atomic_path, file_sha256

__all__ = [
    "REQUIRED_KEYS",
    "load_model",
    "model_sha256",
    "save_model",
    "validate_model",
]

REQUIRED_KEYS = ("v_template", "f", "weights", "kintree_table", "shapedirs")
"""Keys every model file must have (plus ``J_regressor``, or ``J`` for static-joint models)."""

_PICKLE_PROTOCOL = 4


# --------------------------------------------------------------------------------------------
# Inert stand-ins
# --------------------------------------------------------------------------------------------


def _merge_state(state: Any) -> dict:
    """A BUILD state as one dict (``(dict, slots)`` pairs are merged; anything else is ignored)."""
    if isinstance(state, tuple) and len(state) == 2:
        merged: dict = {}
        for part in state:
            if isinstance(part, dict):
                merged.update(part)
        return merged
    return dict(state) if isinstance(state, dict) else {}


class _StandIn:
    """An unpickled foreign object: remembers its class name and state, runs nothing."""

    __slots__ = ("cls_name", "state")

    def __init__(self, cls_name: str):
        self.cls_name = cls_name
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        self.state.update(_merge_state(state))


class _ChumpyStandIn(_StandIn):
    """An unpickled chumpy object; its array is taken from its ``x`` state."""

    __slots__ = ()


class _SparseStandIn(_StandIn):
    """An unpickled scipy sparse matrix: its state is kept and converted to a dense array."""

    __slots__ = ()


def _stand_in_factory(kind: type, cls_name: str) -> type:
    """What ``find_class`` returns for an allowed class: creating it (``NEWOBJ``, ``REDUCE`` or
    ``copyreg._reconstructor``) yields an inert stand-in of ``kind``; arguments are ignored."""

    class _Factory:
        __slots__ = ()
        _smil_kind = kind

        def __new__(cls, *args, **kwargs):
            return kind(cls_name)

    _Factory.__name__ = _Factory.__qualname__ = cls_name.rsplit(".", 1)[-1]
    return _Factory


# --------------------------------------------------------------------------------------------
# Restricted unpickler
# --------------------------------------------------------------------------------------------

_NUMPY_ALLOWED = {
    ("multiarray", "_reconstruct"),
    ("multiarray", "scalar"),
    ("numeric", "_frombuffer"),
}
_SPARSE_CLASSES = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"}
_SPARSE_MODULES = {"scipy.sparse", "scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr",
                   "scipy.sparse._csr", "scipy.sparse.coo", "scipy.sparse._coo",
                   "scipy.sparse._arrays"}
# what pickles of plain containers name (sets, complex numbers, protocol-0 objects), nothing more
_BUILTINS_ALLOWED = {"set", "frozenset", "slice", "complex", "bytearray", "object"}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _numpy_core_module(sub: str):
    """``numpy._core.<sub>`` on numpy 2 (and 1.26), ``numpy.core.<sub>`` on older numpy."""
    for base in ("numpy._core", "numpy.core"):
        try:
            return importlib.import_module(f"{base}.{sub}")
        except ImportError:
            continue
    raise ImportError(f"numpy core module {sub!r} not found")


def _safe_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("numpy _reconstruct of a type other than numpy.ndarray")
    return _numpy_core_module("multiarray")._reconstruct(np.ndarray, shape, dtype)


def _safe_codecs_encode(obj, encoding="utf-8", errors="strict"):
    if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(obj, "latin1", errors)


def _safe_copyreg_reconstructor(cls, base, state):
    """``copyreg._reconstructor`` restricted to stand-ins built on ``object``."""
    if base is not object or not hasattr(cls, "_smil_kind"):
        raise pickle.UnpicklingError("copyreg._reconstructor of a class that is not allowed")
    return cls()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file, encoding="latin1", fix_imports=False)
        self._path = path

    def find_class(self, module: str, name: str):  # noqa: C901 - a flat whitelist reads best
        module = _PY2_MODULES.get(module, module)
        if module.startswith(("numpy.core.", "numpy._core.")):
            sub = module.split(".", 2)[2]
            if (sub, name) in _NUMPY_ALLOWED:
                obj = getattr(_numpy_core_module(sub), name)
                return _safe_reconstruct if name == "_reconstruct" else obj
        elif module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        elif module in _SPARSE_MODULES and name in _SPARSE_CLASSES:
            return _stand_in_factory(_SparseStandIn, f"{module}.{name}")
        elif module == "chumpy" or module.startswith("chumpy."):
            return _stand_in_factory(_ChumpyStandIn, f"{module}.{name}")
        elif module == "builtins" and name in _BUILTINS_ALLOWED:
            import builtins

            return getattr(builtins, name)
        elif module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        elif module == "copyreg" and name == "_reconstructor":
            return _safe_copyreg_reconstructor
        elif module == "_codecs" and name == "encode":
            return _safe_codecs_encode
        raise UnsafePickleError(
            f"refused to load global '{module}.{name}': model files may only contain numpy "
            "arrays, scipy sparse matrices, chumpy arrays and plain containers",
            path=self._path,
        )


# --------------------------------------------------------------------------------------------
# Stand-ins → numpy
# --------------------------------------------------------------------------------------------


def _sparse_to_dense(obj: _SparseStandIn, where: str, path: str) -> np.ndarray:
    import scipy.sparse as sp

    st = obj.state
    shape = st.get("_shape", st.get("shape"))
    try:
        shape = tuple(int(s) for s in shape)
        kind = obj.cls_name.rsplit(".", 1)[-1][:3]
        if kind in ("csc", "csr"):
            data = np.asarray(_to_plain(st["data"], where, path))
            indices = np.asarray(_to_plain(st["indices"], where, path))
            indptr = np.asarray(_to_plain(st["indptr"], where, path))
            ctor = sp.csc_matrix if kind == "csc" else sp.csr_matrix
            return np.asarray(ctor((data, indices, indptr), shape=shape).toarray())
        if kind == "coo":
            data = np.asarray(_to_plain(st["data"], where, path))
            if "coords" in st:
                row, col = (np.asarray(_to_plain(c, where, path)) for c in st["coords"])
            else:
                row = np.asarray(_to_plain(st["row"], where, path))
                col = np.asarray(_to_plain(st["col"], where, path))
            return np.asarray(sp.coo_matrix((data, (row, col)), shape=shape).toarray())
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(
            f"unreadable scipy sparse matrix ({obj.cls_name}): {exc}", path=path, field=where
        ) from None
    raise ModelFileError(f"unsupported sparse matrix type {obj.cls_name}", path=path, field=where)


def _chumpy_to_array(obj: _ChumpyStandIn, where: str, path: str, depth: int = 0) -> np.ndarray:
    if depth > 64:
        raise ModelFileError("chumpy expression nested too deeply", path=path, field=where)
    st = obj.state
    name = obj.cls_name.rsplit(".", 1)[-1]

    def sub(key: str) -> np.ndarray:
        value = st[key]
        if isinstance(value, _ChumpyStandIn):
            return _chumpy_to_array(value, where, path, depth + 1)
        return np.asarray(_to_plain(value, where, path))

    try:
        if name not in _CHUMPY_EVAL and "x" in st:
            return sub("x")
        if name == "transpose":
            return np.ascontiguousarray(np.transpose(sub("a"), st.get("axes")))
        if name == "Reshape":
            return sub("a").reshape(st["newshape"])
        if name == "Select":
            out = sub("a").ravel()[np.asarray(st["idxs"])].copy()
            return out.reshape(st["preferred_shape"]) if "preferred_shape" in st else out
        if name == "swapaxes":
            return np.swapaxes(sub("a"), st["axis1"], st["axis2"])
        if name == "rollaxis":
            return np.rollaxis(sub("a"), st["axis"], st.get("start", 0))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelFileError(
            f"unreadable chumpy object ({obj.cls_name}): {exc!r}", path=path, field=where
        ) from None
    raise ModelFileError(
        f"holds a chumpy expression ({obj.cls_name}) that cannot be evaluated without chumpy; "
        "re-save the model with plain numpy arrays",
        path=path,
        field=where,
    )


_CHUMPY_EVAL = {"transpose", "Reshape", "Select", "swapaxes", "rollaxis"}


def _to_plain(obj: Any, where: str, path: str) -> Any:
    """Replace stand-ins (recursively) with numpy arrays."""
    if isinstance(obj, _ChumpyStandIn):
        return _chumpy_to_array(obj, where, path)
    if isinstance(obj, _SparseStandIn):
        return _sparse_to_dense(obj, where, path)
    if isinstance(obj, dict):
        return {k: _to_plain(v, f"{where}.{k}" if where else str(k), path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_plain(v, where, path) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_plain(v, where, path) for v in obj)
    return obj


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _shape(a: Any) -> tuple[int, ...] | None:
    return tuple(a.shape) if isinstance(a, np.ndarray) else None


def _numeric(data: Mapping, key: str, path: str, *, integer: bool = False) -> np.ndarray:
    value = data[key]
    if isinstance(value, list) and len(value) == 0:
        value = np.zeros((0,))
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"not an array ({exc})", path=path, field=key) from None
    kinds = "iu" if integer else "fiub"
    if arr.dtype.kind not in kinds:
        expected = "an integer array" if integer else "a numeric array"
        raise ModelFileError(f"expected {expected}, got dtype {arr.dtype}", path=path, field=key)
    if not integer and arr.size and not np.all(np.isfinite(arr)):
        raise ModelFileError("contains NaN or infinite values", path=path, field=key)
    return arr


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (list, tuple)):
        return len(value) == 0
    return isinstance(value, np.ndarray) and value.size == 0


def parents_from_kintree(kintree_table: np.ndarray) -> list[int]:
    """Parent index of every joint (root: ``-1``) from a ``(2, J)`` SMPL kintree table.

    Row 1 holds joint ids, row 0 the parent's id; ids are mapped to columns, so tables whose ids
    are not ``0..J-1`` also work. A parent id that is not a joint id (``-1``, ``2**32-1``) marks the
    root.
    """
    kt = np.asarray(kintree_table).astype(np.int64)
    ids = [int(i) for i in kt[1]]
    col = {j: c for c, j in enumerate(ids)}
    parents = []
    for c in range(kt.shape[1]):
        p = int(kt[0, c])
        # uint32 -1 read as a big positive id, or an id that names no joint, is the root marker
        parents.append(col.get(p, -1) if p >= 0 and p != 2**32 - 1 else -1)
    return parents


def validate_model(data: Any, path: str | Path = "<model>") -> dict:
    """Check a model dict's keys and shapes; return it. Raises :class:`ModelFileError`."""
    path = str(path)
    if not isinstance(data, dict):
        raise ModelFileError(
            f"expected a pickled dict of arrays, got {type(data).__name__}", path=path
        )
    for key in REQUIRED_KEYS:
        if key not in data:
            raise ModelFileError("missing (a SMIL/SMPL model file needs it)", path=path,
                                 field=key)
    vt = _numeric(data, "v_template", path)
    if vt.ndim != 2 or vt.shape[1] != 3 or vt.shape[0] == 0:
        raise ModelFileError(f"expected shape (V, 3), got {vt.shape}", path=path,
                             field="v_template")
    V = vt.shape[0]
    f = _numeric(data, "f", path, integer=True)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ModelFileError(f"expected shape (F, 3), got {f.shape}", path=path, field="f")
    if f.size and (f.min() < 0 or f.max() >= V):
        raise ModelFileError(
            f"face indices must lie in [0, {V - 1}], got [{f.min()}, {f.max()}]",
            path=path, field="f",
        )
    kt = _numeric(data, "kintree_table", path, integer=True)
    if kt.ndim != 2 or kt.shape[0] != 2 or kt.shape[1] == 0:
        raise ModelFileError(f"expected shape (2, J), got {kt.shape}", path=path,
                             field="kintree_table")
    J = kt.shape[1]
    if len(set(int(i) for i in kt[1])) != J:
        raise ModelFileError("joint ids in row 1 are not unique", path=path,
                             field="kintree_table")
    parents = parents_from_kintree(kt)
    roots = [j for j, p in enumerate(parents) if p < 0]
    if len(roots) != 1:
        raise ModelFileError(f"expected exactly one root joint, found {len(roots)}", path=path,
                             field="kintree_table")
    for j in range(J):  # every joint must reach the root without a cycle
        seen, k = set(), j
        while parents[k] >= 0:
            if k in seen:
                raise ModelFileError(f"joint {j} is on a cycle", path=path,
                                     field="kintree_table")
            seen.add(k)
            k = parents[k]
    w = _numeric(data, "weights", path)
    if w.shape != (V, J):
        raise ModelFileError(f"expected shape (V, J) = ({V}, {J}), got {w.shape}", path=path,
                             field="weights")
    sd = _numeric(data, "shapedirs", path)
    if not (sd.ndim == 3 and sd.shape[:2] == (V, 3)) and not (sd.ndim == 2
                                                               and sd.shape[0] == V * 3):
        raise ModelFileError(
            f"expected shape (V, 3, nb) = ({V}, 3, nb) or (V*3, nb) = ({V * 3}, nb), "
            f"got {sd.shape}", path=path, field="shapedirs",
        )
    static = bool(data.get("static_joint_locs", False))
    if static or "J_regressor" not in data:
        if "J" not in data:
            raise ModelFileError(
                "missing: a model needs 'J_regressor' (J, V), or 'J' (J, 3) with "
                "static_joint_locs", path=path, field="J_regressor" if not static else "J",
            )
    if "J_regressor" in data:
        jr = _numeric(data, "J_regressor", path)
        if jr.shape != (J, V):
            raise ModelFileError(f"expected shape (J, V) = ({J}, {V}), got {jr.shape}",
                                 path=path, field="J_regressor")
    if "J" in data:
        jj = _numeric(data, "J", path)
        if jj.shape != (J, 3):
            raise ModelFileError(f"expected shape (J, 3) = ({J}, 3), got {jj.shape}",
                                 path=path, field="J")
    if not _is_empty(data.get("posedirs")):
        pd = _numeric(data, "posedirs", path)
        P = 9 * (J - 1)
        if pd.shape not in ((V, 3, P), (V * 3, P)):
            raise ModelFileError(
                f"expected shape (V, 3, 9·(J-1)) = ({V}, 3, {P}) or empty, got {pd.shape}",
                path=path, field="posedirs",
            )
    for key in ("scaledirs", "transdirs"):
        if not _is_empty(data.get(key)):
            arr = _numeric(data, key, path)
            if arr.ndim != 3 or arr.shape[1:] != (J, 3):
                raise ModelFileError(f"expected shape (n, J, 3) = (n, {J}, 3) or empty, "
                                     f"got {arr.shape}", path=path, field=key)
    if "J_names" in data and data["J_names"] is not None:
        names = data["J_names"]
        if not isinstance(names, (list, tuple, np.ndarray)) or len(names) != J:
            got = len(names) if hasattr(names, "__len__") else type(names).__name__
            raise ModelFileError(f"expected {J} joint names, got {got}", path=path,
                                 field="J_names")
    return data


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _unpickle(raw: bytes, path: str) -> Any:
    try:
        return _RestrictedUnpickler(io.BytesIO(raw), path).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
            IndexError, KeyError, ImportError, UnicodeDecodeError, MemoryError) as exc:
        raise ModelFileError(f"not a readable model pickle ({type(exc).__name__}: {exc})",
                             path=path) from None


def load_model(path: str | Path) -> dict:
    """Load a SMAL/SMIL/SMPL-format model pickle safely and validate it.

    Returns the file's dict with every array as a plain ``numpy.ndarray`` (sparse matrices and
    chumpy objects converted to dense arrays); other values (names, flags, strings) unchanged.

    Raises:
        ModelFileError: missing/unreadable file, or a missing or mis-shaped field (named).
        UnsafePickleError: the pickle references anything but arrays and plain containers.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError("no such file", path=path) from None
    except IsADirectoryError:
        raise ModelFileError("is a directory, not a model file", path=path) from None
    except OSError as exc:
        raise ModelFileError(f"cannot read ({exc.strerror or exc})", path=path) from None
    data = _unpickle(raw, str(path))
    if isinstance(data, dict):
        data = {str(k): _to_plain(v, str(k), str(path)) for k, v in data.items()}
    return validate_model(data, path)


def _canonical(value: Any, key: str) -> Any:
    """Plain, deterministic-to-pickle form of one value."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor
        value = value.detach().cpu().numpy()
    if hasattr(value, "toarray") and hasattr(value, "nnz"):  # scipy sparse
        value = value.toarray()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf" and value.dtype.kind != "U":
            raise ModelFileError(f"cannot save an array of dtype {value.dtype}", field=key)
        # canonical native-order dtype object and a fresh C-contiguous buffer: the pickled bytes
        # then depend only on the values, not on aliasing or memory layout
        return np.array(value, dtype=np.dtype(value.dtype.str.replace(">", "<")), order="C",
                        copy=True)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        items = [_canonical(v, key) for v in value]
        return items if isinstance(value, list) else tuple(items)
    raise ModelFileError(f"cannot save a value of type {type(value).__name__}", field=key)


def save_model(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as a model pickle (plain numpy arrays, protocol 4), atomically.

    The dict is validated first (a file that :func:`load_model` would refuse is never written);
    torch tensors and scipy sparse matrices are converted to numpy arrays. Equal data (same keys in
    the same order, equal arrays and dtypes) gives byte-identical files.
    """
    if not isinstance(data, Mapping):
        raise ModelFileError(f"expected a dict of arrays, got {type(data).__name__}", path=path)
    plain = {str(k): _canonical(v, str(k)) for k, v in data.items()}
    validate_model(plain, path)
    raw = pickle.dumps(plain, protocol=_PICKLE_PROTOCOL)
    with atomic_path(path) as tmp:
        tmp.write_bytes(raw)


def model_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (what checkpoints record to pin their body model)."""
    try:
        return file_sha256(path)
    except FileNotFoundError:
        raise ModelFileError("no such file", path=path) from None
    except OSError as exc:
        raise ModelFileError(f"cannot read ({exc.strerror or exc})", path=path) from None

