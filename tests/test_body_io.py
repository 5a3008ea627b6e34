"""Body-model file I/O: real SMIL pickles, legacy (py2/numpy-1/chumpy/scipy) pickles, the
restricted unpickler's refusals, validation messages and deterministic saving."""

from __future__ import annotations

import builtins
import copy
import hashlib
import io
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from smil.body.io import load_model, model_sha256, save_model
from smil.errors import ModelFileError, UnsafePickleError


@pytest.fixture(scope="module")
def stick_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "models" / "SMILy_STICK.pkl"


@pytest.fixture(scope="module")
def mouse_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "models" / "SMILy_Mouse_static_joints.pkl"


def tiny_model(seed: int = 0) -> dict:
    """A small valid model: 4 joints (0 → 1 → 2, 0 → 3), 10 vertices, 2 betas."""
    rng = np.random.default_rng(seed)
    V, J, nb = 10, 4, 2
    weights = np.zeros((V, J))
    for v in range(V):
        a, b = rng.choice(J, 2, replace=False)
        w = rng.uniform(0.2, 0.8)
        weights[v, a], weights[v, b] = w, 1 - w
    regressor = np.zeros((J, V))
    for j in range(J):
        regressor[j, rng.choice(V, 3, replace=False)] = 1 / 3
    return {
        "f": np.array([[0, 1, 2], [2, 3, 4], [5, 6, 7], [7, 8, 9]], dtype=np.int32),
        "J_regressor": regressor,
        "kintree_table": np.array([[-1, 0, 1, 0], [0, 1, 2, 3]], dtype=np.int64),
        "J": regressor @ rng.normal(size=(V, 3)),
        "weights": weights,
        "posedirs": np.zeros((0,)),
        "v_template": rng.normal(size=(V, 3)),
        "shapedirs": 0.1 * rng.normal(size=(V, 3, nb)),
        "bs_type": "lrotmin",
        "bs_style": "lbs",
        "scaledirs": [],
        "transdirs": [],
        "J_names": ["root", "a", "b", "c"],
    }


def write_raw(path: Path, obj, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


# ------------------------------------------------------------------------------------------
# Real files


def test_loads_stick_insect_with_its_dimensions(stick_path: Path) -> None:
    d = load_model(stick_path)
    assert d["v_template"].shape == (3020, 3)
    assert d["f"].shape == (6019, 3)
    assert d["J_regressor"].shape == (55, 3020)
    assert d["weights"].shape == (3020, 55)
    assert d["kintree_table"].shape == (2, 55)
    assert d["shapedirs"].shape == (3020, 3, 5)
    assert d["scaledirs"].shape == (5, 55, 3) and d["transdirs"].shape == (5, 55, 3)
    assert d["posedirs"].size == 0
    assert d["J_names"][:2] == ["b_t", "b_a_1"] and d["J_names"][-1] == "an_3_l"
    assert all(isinstance(v, np.ndarray) for k, v in d.items()
               if k not in ("J_names", "bs_type", "bs_style"))


def test_loads_static_joint_mouse(mouse_path: Path) -> None:
    d = load_model(mouse_path)
    assert d["v_template"].shape == (11263, 3)
    assert d["f"].shape == (17420, 3)
    assert d["kintree_table"].shape == (2, 31)
    assert d["shapedirs"].shape == (11263, 3, 3)
    assert d["static_joint_locs"] is True
    assert d["J"].shape == (31, 3)
    assert d["scaledirs"] == [] and d["transdirs"] == []


def test_sha256_matches_hashlib(stick_path: Path) -> None:
    assert model_sha256(stick_path) == hashlib.sha256(stick_path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------
# Refused pickles: nothing they ask for may run


class _Evil:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _attacks(target: Path) -> dict[str, object]:
    return {
        "system": _Evil(os.system, (f"touch {target}",)),
        "open": _Evil(builtins.open, (str(target), "w")),
        "eval": _Evil(builtins.eval, (f"open({str(target)!r}, 'w').close()",)),
        "subprocess": _Evil(subprocess.call, (["touch", str(target)],)),
        "numpy.save": _Evil(np.save, (str(target), np.zeros(3))),
    }


@pytest.mark.parametrize("attack", ["system", "open", "eval", "subprocess", "numpy.save"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path: Path, attack: str) -> None:
    target = tmp_path / "pwned"
    payload = _attacks(target)[attack]
    data = tiny_model()
    data["extra"] = payload  # hidden inside an otherwise valid model
    path = write_raw(tmp_path / "evil.pkl", data)
    with pytest.raises(UnsafePickleError) as err:
        load_model(path)
    message = str(err.value)
    assert str(path) in message
    expected_name = {"system": "system", "open": "open", "eval": "eval",
                     "subprocess": "subprocess.call", "numpy.save": "numpy.save"}[attack]
    assert expected_name in message and "refused" in message
    assert not target.exists() and not (tmp_path / "pwned.npy").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pkl"]


def test_malicious_pickle_with_old_protocol_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    path = write_raw(tmp_path / "evil.pkl", {"x": _attacks(target)["system"]}, protocol=0)
    with pytest.raises(UnsafePickleError, match="system"):
        load_model(path)
    assert not target.exists()


# ------------------------------------------------------------------------------------------
# Legacy pickles: Python 2 strings, numpy 1.x module paths, scipy sparse, chumpy objects


class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` (SHORT_BINSTRING/BINSTRING), like a py2 pickle."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _fake_chumpy(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Stand-in ``chumpy.ch``, ``chumpy.reordering``, ``chumpy.ch_ops`` modules to write pickles."""
    ch = types.ModuleType("chumpy.ch")
    reordering = types.ModuleType("chumpy.reordering")
    ops = types.ModuleType("chumpy.ch_ops")
    pkg = types.ModuleType("chumpy")

    def make(module, name):
        cls = type(name, (object,), {"__module__": module.__name__})
        setattr(module, name, cls)
        return cls

    ns = types.SimpleNamespace(
        Ch=make(ch, "Ch"), Select=make(reordering, "Select"),
        transpose=make(reordering, "transpose"), add=make(ops, "add"),
    )
    for name, mod in (("chumpy", pkg), ("chumpy.ch", ch), ("chumpy.reordering", reordering),
                      ("chumpy.ch_ops", ops)):
        monkeypatch.setitem(sys.modules, name, mod)
    return ns


def _chumpy_obj(cls, **state):
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


def _legacy_bytes(obj, protocol: int) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=protocol).dump(obj)
    raw = buf.getvalue()
    # numpy 1.x and old scipy module paths, as such files name them
    raw = raw.replace(b"cnumpy._core.", b"cnumpy.core.")
    raw = raw.replace(b"cscipy.sparse._csc\n", b"cscipy.sparse.csc\n")
    return raw


@pytest.mark.parametrize("protocol", [0, 2])
def test_legacy_chumpy_scipy_py2_pickle_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              protocol: int) -> None:
    plain = tiny_model()
    fake = _fake_chumpy(monkeypatch)
    legacy = dict(plain)
    ch_state = {"_dirty_vars": set(), "_itr": None, "_make_dense": False}
    legacy["v_template"] = _chumpy_obj(fake.Ch, x=plain["v_template"], **ch_state)
    flat = _chumpy_obj(fake.Ch, x=plain["shapedirs"].ravel()[::-1].copy(), **ch_state)
    idxs = np.arange(plain["shapedirs"].size)[::-1].copy()
    legacy["shapedirs"] = _chumpy_obj(fake.Select, a=flat, idxs=idxs,
                                      preferred_shape=plain["shapedirs"].shape)
    legacy["weights"] = _chumpy_obj(
        fake.transpose, a=_chumpy_obj(fake.Ch, x=plain["weights"].T.copy()), axes=None)
    legacy["J_regressor"] = sp.csc_matrix(plain["J_regressor"])
    raw = _legacy_bytes(legacy, protocol)
    assert b"numpy.core.multiarray" in raw and b"scipy.sparse.csc" in raw
    assert b"chumpy.ch" in raw
    if protocol == 2:
        assert any(op.name in ("SHORT_BINSTRING", "BINSTRING") for op, _, _ in
                   pickletools.genops(raw))
    path = tmp_path / "legacy.pkl"
    path.write_bytes(raw)
    for name in ("chumpy", "chumpy.ch", "chumpy.reordering", "chumpy.ch_ops"):
        monkeypatch.delitem(sys.modules, name)  # loading needs no chumpy
    loaded = load_model(path)
    for key in ("v_template", "shapedirs", "weights", "J_regressor", "f", "kintree_table"):
        assert isinstance(loaded[key], np.ndarray), key
        np.testing.assert_array_equal(loaded[key], plain[key], err_msg=key)
    assert loaded["J_names"] == plain["J_names"]


def test_chumpy_expression_that_needs_chumpy_names_the_field(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_chumpy(monkeypatch)
    data = tiny_model()
    data["v_template"] = _chumpy_obj(fake.add, a=data["v_template"], b=data["v_template"])
    path = tmp_path / "expr.pkl"
    path.write_bytes(_legacy_bytes(data, 2))
    with pytest.raises(ModelFileError, match="v_template.*chumpy"):
        load_model(path)


# ------------------------------------------------------------------------------------------
# Validation


def test_missing_field_names_file_and_field(tmp_path: Path) -> None:
    data = tiny_model()
    del data["weights"]
    path = write_raw(tmp_path / "m.pkl", data)
    with pytest.raises(ModelFileError) as err:
        load_model(path)
    assert str(path) in str(err.value) and "'weights'" in str(err.value)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("weights", np.ones((10, 3)) / 3, "(V, J) = (10, 4)"),
        ("v_template", np.zeros((10, 2)), "(V, 3)"),
        ("f", np.zeros((4, 4), dtype=np.int32), "(F, 3)"),
        ("f", np.array([[0, 1, 99]], dtype=np.int32), "face indices"),
        ("kintree_table", np.array([[-1, 0, 1], [0, 1, 2]]), "(V, J)"),
        ("shapedirs", np.zeros((10, 2, 2)), "(V, 3, nb)"),
        ("J_regressor", np.zeros((4, 9)), "(J, V) = (4, 10)"),
        ("kintree_table", np.array([[-1, 0, 1, -1], [0, 1, 2, 3]]), "exactly one root"),
        ("J_names", ["a", "b"], "expected 4 joint names"),
        ("scaledirs", np.zeros((2, 3, 3)), "(n, J, 3)"),
        ("v_template", np.full((10, 3), np.nan), "NaN"),
    ],
)
def test_bad_field_is_named_with_expected_shape(tmp_path: Path, field: str, value,
                                                expected: str) -> None:
    data = tiny_model()
    data[field] = value
    path = write_raw(tmp_path / "m.pkl", data)
    with pytest.raises(ModelFileError) as err:
        load_model(path)
    message = str(err.value)
    assert str(path) in message and expected in message
    if field != "kintree_table" or "root" in expected:
        assert f"'{field}'" in message


def test_flat_shapedirs_are_accepted(tmp_path: Path) -> None:
    data = tiny_model()
    data["shapedirs"] = data["shapedirs"].reshape(30, 2)
    assert load_model(write_raw(tmp_path / "m.pkl", data))["shapedirs"].shape == (30, 2)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (pickle.dumps([1, 2, 3]), "expected a pickled dict"),
        (pickle.dumps(tiny_model())[:200], "not a readable model pickle"),
        (b"not a pickle at all", "not a readable model pickle"),
    ],
)
def test_unreadable_files_are_model_file_errors(tmp_path: Path, content: bytes,
                                                expected: str) -> None:
    path = tmp_path / "m.pkl"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=expected):
        load_model(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such file"):
        load_model(tmp_path / "nope.pkl")


# ------------------------------------------------------------------------------------------
# Saving


def _globals(raw: bytes) -> set[str]:
    """Every global a pickle names (recorded by a plain unpickler while it loads)."""
    seen: set[str] = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            seen.add(f"{module}.{name}")
            return super().find_class(module, name)

    Recorder(io.BytesIO(raw)).load()
    return seen


def test_save_round_trip_and_plain_numpy_format(tmp_path: Path, stick_path: Path) -> None:
    original = load_model(stick_path)
    out = tmp_path / "copy.pkl"
    save_model(out, original)
    raw = out.read_bytes()
    assert pickletools.genops(raw).__next__()[1] == 4  # protocol 4
    assert _globals(raw) <= {"numpy._core.multiarray._reconstruct", "numpy.ndarray",
                             "numpy.dtype", "numpy.core.multiarray._reconstruct"}
    again = load_model(out)
    assert list(again) == list(original)
    for key, value in original.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(again[key], value, err_msg=key)
            assert again[key].dtype == value.dtype
        else:
            assert again[key] == value
    assert pickle.loads(raw)["J_names"] == original["J_names"]  # a plain pickle, too


def test_save_is_deterministic(tmp_path: Path) -> None:
    data = tiny_model()
    twin = copy.deepcopy(data)
    twin["v_template"] = np.asfortranarray(twin["v_template"])  # same values, other layout
    twin["weights"] = twin["weights"].astype(">f8")              # same values, big-endian
    save_model(tmp_path / "a.pkl", data)
    save_model(tmp_path / "b.pkl", twin)
    save_model(tmp_path / "c.pkl", data)
    a = (tmp_path / "a.pkl").read_bytes()
    assert a == (tmp_path / "b.pkl").read_bytes() == (tmp_path / "c.pkl").read_bytes()


def test_save_accepts_tensors_and_sparse(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    data = tiny_model()
    expected = data["J_regressor"].copy()
    data["v_template"] = torch.as_tensor(data["v_template"])
    data["J_regressor"] = sp.csr_matrix(data["J_regressor"])
    save_model(tmp_path / "m.pkl", data)
    loaded = load_model(tmp_path / "m.pkl")
    np.testing.assert_array_equal(loaded["J_regressor"], expected)
    assert isinstance(loaded["v_template"], np.ndarray)


def test_invalid_model_is_not_written_and_old_file_survives(tmp_path: Path) -> None:
    out = tmp_path / "m.pkl"
    save_model(out, tiny_model())
    before = out.read_bytes()
    bad = tiny_model()
    bad["weights"] = bad["weights"][:, :2]
    with pytest.raises(ModelFileError, match="weights"):
        save_model(out, bad)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pkl"]


def test_unsupported_value_is_refused(tmp_path: Path) -> None:
    data = tiny_model()
    data["callback"] = print
    with pytest.raises(ModelFileError, match="callback"):
        save_model(tmp_path / "m.pkl", data)
    assert not (tmp_path / "m.pkl").exists()
