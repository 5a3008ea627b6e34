"""smil.data.store: the HDF5 dataset writer and reader."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from smil.data import schema as S
from smil.data.images import encode_jpeg, encode_png_mask
from smil.data.store import DatasetWriter, StoredSample, open_dataset
from smil.errors import DataError

V, J, SIZE = 2, 3, 16


def sample(n: int, *, betas: bool = True, invalid_view: int | None = None) -> StoredSample:
    rng = np.random.default_rng(n)
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[..., 0] = 10 * n % 250  # recognisable red level per sample
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[4:12, 4:12] = 255
    images = [encode_jpeg(img, 95) for _ in range(V)]
    masks = [encode_png_mask(mask), b""]
    valid = np.ones(V, bool)
    if invalid_view is not None:
        images[invalid_view], masks[invalid_view], valid[invalid_view] = b"", b"", False
    params = {"trans": rng.normal(size=3), "joint_rot": rng.normal(size=(J - 1, 3))}
    if betas:
        params["betas"] = rng.normal(size=5)
    return StoredSample(
        sample_id=f"s{n}", group=f"g{n // 2}", session="sess", frame=n, images=images, masks=masks,
        view_valid=valid, K=np.tile(np.eye(3), (V, 1, 1)) * (n + 1), R=np.tile(np.eye(3), (V, 1, 1)),
        t=rng.normal(size=(V, 3)), keypoints2d=rng.uniform(0, SIZE, size=(V, J, 2)),
        visibility=np.ones((V, J)), keypoints3d=rng.normal(size=(J, 3)), params=params,
    )


def write(path: Path, n: int = 70, **kw: object) -> Path:
    """``n`` samples (more than one write block); betas only from sample 40 on; sample 5 misses view 1."""
    with DatasetWriter(path, joint_names=["a", "b", "c"], camera_names=["left", "right"], image_size=(SIZE, SIZE),
                       world_unit_m=0.001, source_kind="synthetic", body_model_sha256="abc",
                       preprocess_settings={"image_size": SIZE}, **kw) as w:
        for i in range(n):
            w.append(sample(i, betas=i >= 40, invalid_view=1 if i == 5 else None))
        w.finish(np.arange(n) % 3, split_seed=7)
    return path


def test_roundtrip(tmp_path: Path) -> None:
    path = write(tmp_path / "d.h5")
    with open_dataset(path) as ds:
        assert (len(ds), ds.num_views, ds.num_joints) == (70, V, J)
        assert ds.joint_names == ["a", "b", "c"] and ds.camera_names == ["left", "right"]
        assert ds.image_size == (SIZE, SIZE) and ds.world_unit_m == 0.001
        assert ds.source_kind == "synthetic" and ds.body_model_sha256 == "abc" and ds.split_seed == 7
        assert ds.schema_version == S.SCHEMA_VERSION
        for i in (0, 5, 63, 64, 69):
            want, got = sample(i, betas=i >= 40, invalid_view=1 if i == 5 else None), ds.get_sample(i)
            assert got["sample_id"] == f"s{i}" and got["group"] == f"g{i // 2}" and got["frame"] == i
            for key in ("K", "R", "t", "keypoints2d", "visibility", "keypoints3d"):
                np.testing.assert_allclose(got[key], getattr(want, key), rtol=1e-6, atol=1e-6)
                assert got[key].dtype == np.float32
            assert got["images"].shape == (V, SIZE, SIZE, 3)
            assert abs(int(got["images"][0, 8, 8, 0]) - 10 * i % 250) <= 3
            assert got["has_mask"].tolist() == [True, False]
            assert got["masks"][0, 8, 8] == 255 and not got["masks"][1].any()
            np.testing.assert_allclose(got["params"]["trans"], want.params["trans"], rtol=1e-6)
        s5 = ds.get_sample(5)
        assert s5["view_valid"].tolist() == [True, False] and not s5["images"][1].any()


def test_parameters_missing_in_early_samples_read_as_absent(tmp_path: Path) -> None:
    path = write(tmp_path / "d.h5")
    with open_dataset(path) as ds:
        assert ds.param_names == ["joint_rot", "betas", "trans"]
        assert ds.has_params["betas"].tolist() == [False] * 40 + [True] * 30
        early, late = ds.get_sample(3), ds.get_sample(50)
        assert not early["has_params"]["betas"] and np.isnan(early["params"]["betas"]).all()
        assert late["has_params"]["betas"] and np.isfinite(late["params"]["betas"]).all()
    with h5py.File(path, "r") as f:
        assert "scale" not in f[S.PARAMS] and "has_scale" not in f[S.PARAMS]


def test_layout_follows_the_schema(tmp_path: Path) -> None:
    path = write(tmp_path / "d.h5", n=5)
    with h5py.File(path, "r") as f:
        for name in S.PER_SAMPLE_ARRAYS:  # a sample never straddles two chunks
            assert f[name].chunks == (S.SAMPLE_CHUNK, *f[name].shape[1:]), name
        assert f[S.IMAGES].chunks == (16, V) and f[S.K].chunks == (16, V, 3, 3)
        assert f[S.IMAGES].dtype == S.JPEG_DTYPE and f[S.SPLIT].dtype == np.uint8
        assert f[S.VIEW_VALID].dtype == bool and f[S.FRAME].dtype == np.int64
        assert f.attrs[S.ATTR_SPLIT_NAMES] == '["train", "val", "test"]'
        assert list(f.attrs[S.ATTR_IMAGE_SIZE]) == [SIZE, SIZE]
        assert set(S.REQUIRED_ATTRS) <= set(f.attrs)


def test_image_bytes_without_decoding(tmp_path: Path) -> None:
    with open_dataset(write(tmp_path / "d.h5", n=6)) as ds:
        s = ds.get_sample(5, decode_images=False, masks=False)
        assert s["image_bytes"][0][:2] == b"\xff\xd8" and s["image_bytes"][1] == b""
        assert "images" not in s and "masks" not in s


def test_splits(tmp_path: Path) -> None:
    with open_dataset(write(tmp_path / "d.h5", n=9)) as ds:
        assert ds.split_indices("val").tolist() == [1, 4, 7]
        assert ds.split_sizes() == {"train": 3, "val": 3, "test": 3}
        with pytest.raises(DataError, match="unknown split 'dev'"):
            ds.split_indices("dev")


def test_failed_write_leaves_nothing_and_keeps_the_previous_file(tmp_path: Path) -> None:
    path = write(tmp_path / "d.h5", n=4)
    before = path.read_bytes()
    with pytest.raises(ZeroDivisionError):
        with DatasetWriter(path, joint_names=["a", "b", "c"], camera_names=["left", "right"],
                           image_size=(SIZE, SIZE), world_unit_m=1.0, source_kind="synthetic") as w:
            for i in range(100):
                w.append(sample(i))
            1 / 0
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.h5"]


def test_writer_without_finish_discards_the_output(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="without finish"):
        with DatasetWriter(tmp_path / "d.h5", joint_names=["a"], camera_names=["c"], image_size=(8, 8),
                           world_unit_m=1.0, source_kind="synthetic"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_wrong_shapes_are_rejected(tmp_path: Path) -> None:
    with DatasetWriter(tmp_path / "d.h5", joint_names=["a", "b"], camera_names=["left", "right"],
                       image_size=(SIZE, SIZE), world_unit_m=1.0, source_kind="synthetic") as w:
        with pytest.raises(DataError, match="keypoints2d"):
            w.append(sample(0))  # three joints, the writer expects two
        w.abort()
    assert list(tmp_path.iterdir()) == []


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "d.h5", n=3)
    with h5py.File(path, "a") as f:
        f.attrs[S.ATTR_SCHEMA_VERSION] = 99
    with pytest.raises(DataError) as err:
        open_dataset(path)
    assert "schema version 99" in str(err.value) and str(path) in str(err.value)


def test_truncated_file_is_one_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path / "d.h5", n=20)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        open_dataset(path)
    assert str(path) in str(err.value) and "truncated or corrupt" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"hello, not hdf5"])
def test_not_hdf5(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "d.h5"
    path.write_bytes(content)
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        open_dataset(path)


def test_missing_file_and_missing_array(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        open_dataset(tmp_path / "nope.h5")
    path = write(tmp_path / "d.h5", n=3)
    with h5py.File(path, "a") as f:
        del f[S.KEYPOINTS2D]
    with pytest.raises(DataError, match="keypoints2d"):
        open_dataset(path)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = 1
    with pytest.raises(DataError, match="not a smil dataset"):
        open_dataset(plain)


def _child_read(reader: object, index: int, queue: multiprocessing.Queue) -> None:
    s = reader.get_sample(index)  # type: ignore[attr-defined]
    queue.put((s["sample_id"], float(s["keypoints2d"].sum()), int(s["images"][0, 8, 8, 0])))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_reader_works_in_worker_processes(tmp_path: Path, method: str) -> None:
    path = write(tmp_path / "d.h5", n=10)
    ds = open_dataset(path)
    parent = ds.get_sample(7)  # the parent holds an open handle when the child starts
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_read, args=(ds, 7, queue))
    proc.start()
    got = queue.get(timeout=60)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert got == ("s7", float(parent["keypoints2d"].sum()), int(parent["images"][0, 8, 8, 0]))
    assert ds.get_sample(3)["sample_id"] == "s3"  # the parent's handle still works
    ds.close()


def test_reader_pickles_without_its_handle(tmp_path: Path) -> None:
    ds = open_dataset(write(tmp_path / "d.h5", n=4))
    ds.get_sample(0)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.get_sample(2)["sample_id"] == "s2"
    clone.close()
    ds.close()


def test_masks_are_lossless_and_binary_masks_are_one_bit() -> None:
    import cv2

    from smil.data.images import decode_png_mask

    binary = np.zeros((40, 50), np.uint8)
    cv2.ellipse(binary, (25, 20), (18, 7), 30, 0, 360, 255, -1)
    graded = binary.copy()
    graded[3, 4], graded[5, 6] = 7, 128
    for mask in (binary, graded, np.zeros((8, 8), np.uint8), np.full((8, 8), 255, np.uint8)):
        data = encode_png_mask(mask)
        assert np.array_equal(decode_png_mask(data), mask)
    # PNG IHDR: bit depth is byte 24 of the file
    assert encode_png_mask(binary)[24] == 1
    assert encode_png_mask(graded)[24] == 8
    # a caller that knows the mask is binary (preprocessing thresholds it) gets the same file
    assert encode_png_mask(binary, binary=True) == encode_png_mask(binary)
    # its rows are unfiltered: the loaders' one-inflate decoder reads it, no OpenCV fallback
    from smil.data.images import _bilevel_png_bits

    assert np.array_equal(_bilevel_png_bits(encode_png_mask(binary), "m.png"), binary // 255)


def test_one_bit_masks_are_standard_pngs_and_damage_is_reported() -> None:
    import cv2

    from smil.data.images import decode_mask_bits, decode_png_mask

    mask = np.zeros((37, 53), np.uint8)  # width not a multiple of 8
    cv2.circle(mask, (30, 17), 12, 255, -1)
    data = encode_png_mask(mask)
    # any PNG reader gives the same 0/255 image
    assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE), mask)
    out = np.full(mask.shape, 9, np.uint8)
    assert np.array_equal(decode_mask_bits(data, out), mask // 255)
    # 1-bit PNGs from other writers (filtered rows) still decode
    ok, other = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_BILEVEL, 1])
    assert ok and np.array_equal(decode_png_mask(other.tobytes()), mask)
    assert np.array_equal(decode_mask_bits(other.tobytes(), out), mask // 255)
    with pytest.raises(DataError, match="expected 10×10"):
        decode_mask_bits(data, np.zeros((10, 10), np.uint8), path="m.png")
    idat = data.index(b"IDAT")
    flipped = bytearray(data)
    flipped[idat + 10] ^= 0xFF
    for damaged in (bytes(flipped), data[: idat + 20]):
        with pytest.raises(DataError, match="m.png"):
            decode_png_mask(damaged, path="m.png")


@pytest.mark.parametrize("expected", [3, 70, 500])
def test_expected_samples_is_only_a_hint(tmp_path: Path, expected: int) -> None:
    """Arrays sized up front for more samples than come are trimmed; fewer are grown: same file either way."""
    plain = write(tmp_path / "plain.h5")
    hinted = write(tmp_path / "hinted.h5", expected_samples=expected)
    with h5py.File(plain, "r") as a, h5py.File(hinted, "r") as b:
        names: list[str] = []
        a.visit(names.append)
        for name in names:
            x, y = a[name], b[name]
            if isinstance(x, h5py.Dataset):
                assert (x.shape, x.chunks, x.maxshape) == (y.shape, y.chunks, y.maxshape), name
                vx, vy = x[()], y[()]
                if vx.dtype == object:
                    assert all(np.array_equal(p, q) for p, q in zip(vx.ravel(), vy.ravel())), name
                else:
                    assert np.array_equal(vx, vy, equal_nan=vx.dtype.kind == "f"), name
