"""Load a trained model and run it over data: the one place evaluation, benchmarks and inference share.

``load_trained(model.pt)`` rebuilds the regressor from its record (spec, weights, initial parameters)
and the body model it was trained with; ``predict(...)`` turns network outputs into body-model output
(vertices, joints) and cameras (``K, R, t`` per view, for the network input image). The mean-pose
baseline predicts the training set's mean parameters for every input, through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from smil.errors import SmilError
from smil.losses import body_forward, predicted_cameras
from smil.models.regressor import RegressorSpec, create_regressor
from smil.train.checkpoint import check_compatible, load_model_record
from smil.train.view_frame import to_view_frame


@dataclass
class TrainedModel:
    path: Path
    model: torch.nn.Module
    spec: RegressorSpec
    record: dict[str, Any]
    body: Any  # SMILModel
    device: torch.device

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @property
    def joint_names(self) -> list[str]:
        return list(self.record["joint_names"])

    @property
    def view_frame(self) -> bool:
        """Whether the model predicts in the view frame (single-view models; older files: world)."""
        return self.record.get("target_frame", "world") == "view"


def load_trained(path: str | Path, body_model: str | Path | None = None, device: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild a trained regressor; ``body_model`` defaults to the file it was trained with."""
    from smil.body.model import SMILModel

    path = Path(path)
    record = load_model_record(path)
    spec = RegressorSpec(**record["spec"])
    body_path = body_model or record["config"].get("body_model")
    if not body_path:
        raise SmilError("no body model recorded; pass --body-model", path=path)
    body = SMILModel.from_file(body_path)
    check_compatible(record, path, body_model=body)
    model = create_regressor(spec)
    model.load_state_dict(record["state_dict"])
    device = torch.device(device)
    model.to(device).eval()
    return TrainedModel(path=path, model=model, spec=spec, record=record, body=body.to(device), device=device)


def run_network(trained: TrainedModel, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    from smil.train.loop import run_model

    with torch.no_grad():
        return run_model(trained.model, {k: v.to(trained.device) for k, v in batch.items()}, trained.mode)


def mean_pose_prediction(trained: TrainedModel, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The mean-pose baseline: the model's initial (training-mean) parameters for every sample.

    Multi-view models in delta mode start from the calibration, so the baseline uses it too.
    """
    m = trained.model
    B = batch["image"].shape[0]
    if trained.mode == "singleview":
        x = m.init_params.unsqueeze(0).expand(B, -1)
        parts = m.layout.split(x)
    else:
        parts = m.body_layout.split(m.init_params.unsqueeze(0).expand(B, -1))
        cams = m.camera_layout.split(m.init_camera.unsqueeze(0).expand(B, -1, -1))
        from smil.models.regressor import CALIBRATED_MODES

        if trained.spec.camera_mode in CALIBRATED_MODES:  # the calibration is the baseline camera
            from smil.geometry.rotations import matrix_to_rot6d
            from smil.models.regressor import fov_from_intrinsics

            cams = {
                "fov": fov_from_intrinsics(batch["K"], trained.image_size),
                "cam_rot": matrix_to_rot6d(batch["R"]),
                "cam_trans": batch["t"],
                "principal_point": batch["K"][..., :2, 2],
            }
        parts.update(cams)
    out = {k: v.to(trained.device) for k, v in parts.items()}
    out["scale"] = torch.exp(out.pop("log_scale")[..., 0])
    return out


def decode(trained: TrainedModel, pred: dict[str, Any]) -> dict[str, np.ndarray]:
    """Network outputs → numpy: posed ``vertices (B,V,3)``, ``joints (B,J,3)`` and cameras ``K, R, t (B,V',…)``."""
    with torch.no_grad():
        body = body_forward(trained.body, pred)
        K, R, t = predicted_cameras(pred, trained.image_size)
    out = {
        "vertices": body.vertices.cpu().numpy(),
        "joints": body.joints.cpu().numpy(),
        "K": K.cpu().numpy(),
        "R": R.cpu().numpy(),
        "t": t.cpu().numpy(),
    }
    for k, v in pred.items():
        if torch.is_tensor(v):
            out[f"param/{k}"] = v.detach().cpu().numpy()
    return out


def iterate_dataset(
    trained: TrainedModel, dataset_path: str | Path, split: str | None, batch_size: int = 16, num_workers: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of a dataset split as the model sees them (no augmentation; targets in the model's frame)."""
    from smil.config import DataConfig
    from smil.data.datasets import create_dataset

    data_cfg = DataConfig(image_size=trained.image_size, augment=False, expand_views=True, random_view_subsets=False)
    ds = create_dataset(trained.mode, dataset_path, split, data_cfg, train=False)
    if trained.mode == "multiview":
        check_compatible(trained.record, trained.path, joint_names=ds.joint_names, rig=ds.camera_names)
    else:
        check_compatible(trained.record, trained.path, joint_names=ds.joint_names)
    from smil.data.batching import collate_items

    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_items)
    for batch in loader:
        yield to_view_frame(batch, trained.body, trained.image_size) if trained.view_frame else batch
