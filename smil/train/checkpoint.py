"""Checkpoints: the rolling training state and the final ``model.pt``.

Both load with ``torch.load(weights_only=True)``: they hold only tensors and plain containers. The
final model records everything needed to rebuild and check the network: the regressor spec (including
the rig's camera slots), the resolved config, the body model's SHA-256 and joint names, the initial
(mean) parameters, and a fingerprint of the training data. Loading it against a different body model,
joint set or rig is a clear error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smil.errors import SmilError
from smil.io_utils import atomic_path

FORMAT = "smil-model"
FORMAT_VERSION = 1


class CheckpointError(SmilError):
    """A checkpoint is unreadable or does not fit the body model / rig it is used with."""


def save_atomic(obj: Any, path: str | Path) -> None:
    with atomic_path(path, suffix=".pt.tmp") as tmp:
        torch.save(obj, tmp)


def load_weights_only(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path=path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure is an unreadable input
        raise CheckpointError(f"cannot load checkpoint ({str(exc).splitlines()[0]})", path=path) from None


def data_fingerprint(reader) -> str:
    """SHA-256 over the dataset's identity: attributes that define it, sample ids, groups and splits."""
    h = hashlib.sha256()
    for key in ("schema_version", "joint_names", "camera_names", "image_size", "world_unit_m", "source_kind"):
        h.update(json.dumps(reader.attrs.get(key), sort_keys=True, default=str).encode())
    h.update("\n".join(map(str, reader.sample_id)).encode())
    h.update("\n".join(map(str, reader.group)).encode())
    h.update(np.asarray(reader.split).tobytes())
    return h.hexdigest()


def model_record(
    model: torch.nn.Module,
    spec: Any,
    config: dict[str, Any],
    body_model: Any,
    data_fingerprints: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``model.pt``."""
    inner = model.module if hasattr(model, "module") else model
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_dict": {k: v.detach().cpu() for k, v in inner.state_dict().items()},
        "spec": dataclasses.asdict(spec),
        "config": json.loads(json.dumps(config, default=str)),
        "body_model_sha256": body_model.sha256 or "",
        "joint_names": list(body_model.joint_names),
        "rig": list(spec.rig),
        # single-view models predict in the frame of the view (smil.train.view_frame)
        "target_frame": "view" if spec.mode == "singleview" else "world",
        "data_fingerprints": dict(data_fingerprints),
        "extra": extra or {},
    }


def load_model_record(path: str | Path) -> dict[str, Any]:
    record = load_weights_only(path)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"not a smil model file (expected format '{FORMAT}')", path=path)
    if record.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"model format version {record.get('format_version')} is not supported (this smil reads {FORMAT_VERSION})",
            path=path,
        )
    return record


def check_compatible(
    record: dict[str, Any],
    path: str | Path,
    *,
    body_model: Any | None = None,
    joint_names: list[str] | None = None,
    rig: list[str] | None = None,
) -> None:
    """Refuse to use a model with another body model, joint set or camera rig."""
    if body_model is not None and record["body_model_sha256"] and body_model.sha256:
        if body_model.sha256 != record["body_model_sha256"]:
            raise CheckpointError(
                f"trained with body model sha256 {record['body_model_sha256'][:12]}…, "
                f"but the given body model is {body_model.sha256[:12]}…",
                path=path,
                field="body_model_sha256",
            )
    names = joint_names if joint_names is not None else (list(body_model.joint_names) if body_model is not None else None)
    if names is not None and list(names) != list(record["joint_names"]):
        raise CheckpointError(
            f"trained on {len(record['joint_names'])} joints {record['joint_names'][:4]}…, "
            f"but the data has {len(names)} joints {list(names)[:4]}…",
            path=path,
            field="joint_names",
        )
    if rig is not None and record["rig"] and list(rig) != list(record["rig"]):
        raise CheckpointError(
            f"trained for the camera rig {record['rig']}, but the data's cameras are {list(rig)}",
            path=path,
            field="rig",
        )
