"""Torch datasets: geometry stays consistent under augmentation, colours survive, views are masked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dataset_factory import make_dataset
from smil.config import DataConfig
from smil.data.augment import AugmentSettings
from smil.data.datasets import MultiViewDataset, SingleViewDataset, create_dataset
from smil.data.images import normalise_images
from smil.data.store import open_dataset
from smil.errors import ShapeMismatchError
from smil.geometry.camera import project
from smil.train.loop import run_model


def reprojection_error(item: dict) -> float:
    X = item["keypoints3d"].double()
    uv = project(X.unsqueeze(0), item["K"].double(), item["R"].double(), item["t"].double())
    vis = item["visibility"] > 0
    return float((uv - item["keypoints2d"].double()).norm(dim=-1)[vis].max())


@pytest.mark.parametrize("augment", [False, True])
def test_projection_matches_keypoints_after_augmentation(tmp_path: Path, augment: bool) -> None:
    path = make_dataset(tmp_path / "d.h5", num_views=3)
    strong = AugmentSettings(scale=0.3, rotation_deg=40, translate=0.1, color=0.3)
    ds = MultiViewDataset(path, None, 64, augment=augment, settings=strong, seed=3)
    for i in range(len(ds)):
        assert reprojection_error(ds[i]) < 1e-3


def test_augmentation_moves_the_image_and_keypoints_together(tmp_path: Path) -> None:
    path = make_dataset(tmp_path / "d.h5", num_joints=1)
    ds = SingleViewDataset(path, None, 96, augment=True, settings=AugmentSettings(scale=0.2, rotation_deg=30, translate=0.1, color=0.0))
    for i in range(len(ds)):
        item = ds[i]
        x, y = item["keypoints2d"][0, 0].round().long().tolist()
        if item["visibility"][0, 0] > 0:
            rgb = item["image"][0, :, y, x].float() / 255
            assert rgb[0] > 0.6 and rgb[1] < 0.35  # the red dot is where the keypoint says


def test_red_stays_red(tmp_path: Path) -> None:
    path = make_dataset(tmp_path / "d.h5", num_joints=1)
    item = SingleViewDataset(path, None, 96)[0]
    x, y = item["keypoints2d"][0, 0].round().long().tolist()
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (1, 3, 96, 96)
    r, g, b = (item["image"][0, :, y, x].float() / 255).tolist()  # channel 0 is red: RGB, channel-first
    assert r > 0.8 and g < 0.2 and b < 0.2
    net = normalise_images(item["image"])[0, :, y, x]  # and stays red in the network input
    assert net[0] > 1.5 and net[1] < -1.0 and net[2] < -1.0


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


@pytest.mark.parametrize("size", [96, 64])  # stored size (used as decoded) and resized
def test_network_input_is_the_imagenet_normalised_decoded_image(tmp_path: Path, size: int) -> None:
    path = make_dataset(tmp_path / "d.h5", num_views=2)
    ds = MultiViewDataset(path, None, size)
    item = ds[1]
    net = normalise_images(item["image"])
    assert net.dtype == torch.float32 and net.shape == (2, 3, size, size)
    if size == 96:  # the stored pixels themselves: compare with the float normalisation of the decoded image
        rgb = open_dataset(path).get_sample(int(item["index"]))["images"]  # (V,S,S,3) uint8 RGB
        assert torch.equal(item["image"], torch.from_numpy(rgb).permute(0, 3, 1, 2))
        ref = ((rgb / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2)
    else:
        ref = (item["image"].double().numpy() / 255.0 - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    np.testing.assert_allclose(net.numpy(), ref, rtol=0, atol=2e-6)


class _Capture(torch.nn.Module):
    def forward(self, images: torch.Tensor, *rest: object) -> dict:
        self.seen = images
        return {}


@pytest.mark.parametrize("mode", ["singleview", "multiview"])
def test_run_model_feeds_float32_normalised_images_under_autocast(tmp_path: Path, mode: str) -> None:
    path = make_dataset(tmp_path / "d.h5", num_views=2)
    batch = next(iter(DataLoader(MultiViewDataset(path, None, 64), batch_size=3)))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (3, 2, 3, 64, 64)
    model = _Capture()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        run_model(model, batch, mode)
    expected = normalise_images(batch["image"][:, 0] if mode == "singleview" else batch["image"])
    assert model.seen.dtype == torch.float32 and torch.equal(model.seen, expected)
    assert float(model.seen.min()) < -1.5 and float(model.seen.max()) > 1.5  # normalised, not [0, 255]


def test_normalise_images_refuses_what_is_not_uint8_rgb() -> None:
    with pytest.raises(ShapeMismatchError, match="uint8"):
        normalise_images(torch.zeros(1, 3, 4, 4))  # already float: normalising twice would be silent
    with pytest.raises(ShapeMismatchError, match="3, H, W"):
        normalise_images(torch.zeros(1, 4, 4, 3, dtype=torch.uint8))  # channel-last


def test_same_seed_and_epoch_give_the_same_augmentation(tmp_path: Path) -> None:
    path = make_dataset(tmp_path / "d.h5")
    a = SingleViewDataset(path, None, 64, augment=True, seed=1)
    b = SingleViewDataset(path, None, 64, augment=True, seed=1)
    assert torch.equal(a[2]["image"], b[2]["image"])
    b.set_epoch(1)
    assert not torch.equal(a[2]["image"], b[2]["image"])


def test_single_view_expands_the_views_of_a_multi_view_file(tmp_path: Path) -> None:
    path = make_dataset(tmp_path / "d.h5", num_samples=4, num_views=3, invalid={1: [2]})
    assert len(SingleViewDataset(path, None, 64, expand_views=True)) == 4 * 3 - 1
    assert len(SingleViewDataset(path, None, 64, expand_views=False)) == 4
    item = SingleViewDataset(path, None, 64)[0]
    assert item["image"].shape == (1, 3, 64, 64) and item["view_mask"].tolist() == [True]


def test_multi_view_masks_padded_views(tmp_path: Path) -> None:
    path = make_dataset(tmp_path / "d.h5", num_samples=3, num_views=3, invalid={0: [1]})
    item = MultiViewDataset(path, None, 64)[0]
    assert item["view_mask"].tolist() == [True, False, True]
    assert item["image"].dtype == torch.uint8 and int(item["image"][1].max()) == 0
    assert item["mask"].dtype == torch.uint8 and int(item["mask"][1].max()) == 0
    assert set(item["mask"][0].unique().tolist()) == {0, 1}
    assert float(item["visibility"][1].max()) == 0.0 and not bool(item["has_mask"][1])


def test_random_view_subsets_keep_at_least_min_views(tmp_path: Path) -> None:
    path = make_dataset(tmp_path / "d.h5", num_samples=6, num_views=4)
    ds = MultiViewDataset(path, None, 32, random_view_subsets=True, min_views=2)
    counts = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        counts |= {int(ds[i]["view_mask"].sum()) for i in range(len(ds))}
    assert min(counts) >= 2 and len(counts) > 1


def test_splits_are_respected_and_loader_workers_decode(tmp_path: Path) -> None:
    path = make_dataset(tmp_path / "d.h5", num_samples=8, num_views=2)
    cfg = DataConfig(image_size=32)
    train = create_dataset("multiview", path, "train", cfg, train=True)
    test = create_dataset("multiview", path, "test", cfg, train=False)
    assert set(train.indices.tolist()).isdisjoint(test.indices.tolist())
    loader = DataLoader(train, batch_size=3, num_workers=2)
    batches = list(loader)
    assert sum(b["image"].shape[0] for b in batches) == len(train)
    b = batches[0]
    assert b["image"].shape == (3, 2, 3, 32, 32) and b["params/betas"].shape == (3, 3)
    assert b["has_betas"].dtype == torch.bool and b["keypoints3d"].shape == (3, 5, 3)
    assert np.isfinite(b["keypoints2d"].numpy()).all()



def test_a_damaged_mask_in_a_cached_file_is_reported_when_its_item_is_read(tmp_path: Path) -> None:
    import h5py

    from smil.errors import DataError

    path = make_dataset(tmp_path / "d.h5", num_samples=4, size=32)
    with h5py.File(path, "r+") as f:
        assert f["has_mask"][2, 0]
        data = bytes(f["masks"][2, 0])
        idat = data.index(b"IDAT")
        damaged = bytearray(data)
        damaged[idat + 10] ^= 0xFF  # the IDAT checksum no longer matches
        f["masks"][2, 0] = np.frombuffer(bytes(damaged), np.uint8)
    ds = SingleViewDataset(path, None, 32)  # the in-memory copy keeps the damaged mask as bytes
    assert ds[1]["mask"].any()
    with pytest.raises(DataError, match="checksum") as err:
        ds[2]
    assert str(path) in str(err.value)
