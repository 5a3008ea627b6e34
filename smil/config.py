"""Training configuration: dataclasses, JSON/YAML loading, deep merge, strict validation.

One resolution path serves both trainers::

    base defaults  <  mode defaults  <  config file  <  command-line ``--set key=value``

The file must name its ``"mode"`` (``"singleview"`` or ``"multiview"``). Unknown keys are errors with
a did-you-mean suggestion; invalid values say what is allowed. Epoch-keyed tables (curriculum stages,
the learning-rate schedule) accept string keys, as JSON requires, and become integers. The resolved
configuration is saved beside every trained model as JSON (``resolved_config.json``) and inside the
checkpoint.

Every field has an effect; fields that only describe a run (``name``, ``description``) are marked
``metadata`` in their field definition. ``docs/model.md`` lists every field; a test keeps that list in
sync with these dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from smil.errors import ConfigError

MODES = ("singleview", "multiview")


def _meta(doc: str, *, metadata_only: bool = False) -> dict[str, Any]:
    return {"doc": doc, "metadata_only": metadata_only}


@dataclass
class DataConfig:
    dataset: str = field(default="", metadata=_meta("path of the HDF5 dataset (smil preprocess output)"))
    val_dataset: str = field(
        default="", metadata=_meta("optional separate HDF5 dataset for validation; empty = the val split")
    )
    image_size: int = field(default=224, metadata=_meta("network input size in pixels (square)"))
    batch_size: int = field(default=16, metadata=_meta("samples per optimisation step and process"))
    num_workers: int = field(default=2, metadata=_meta("DataLoader worker processes"))
    augment: bool = field(default=True, metadata=_meta("photometric and geometric augmentation"))
    aug_scale: float = field(default=0.15, metadata=_meta("geometric: max relative zoom"))
    aug_rotation_deg: float = field(default=15.0, metadata=_meta("geometric: max in-plane rotation"))
    aug_translate: float = field(default=0.05, metadata=_meta("geometric: max crop jitter (fraction)"))
    aug_color: float = field(default=0.2, metadata=_meta("photometric: brightness/contrast strength"))
    epoch_fraction: float = field(
        default=1.0, metadata=_meta("fraction of the training split drawn each epoch (0, 1]")
    )
    expand_views: bool = field(
        default=True, metadata=_meta("single-view on a multi-view dataset: one sample per valid view")
    )
    random_view_subsets: bool = field(
        default=True, metadata=_meta("multi-view training: drop a random subset of views (≥ min_views)")
    )
    min_views: int = field(default=1, metadata=_meta("multi-view: fewest views kept by random subsets"))


@dataclass
class ModelConfig:
    backbone: str = field(
        default="resnet18",
        metadata=_meta("timm backbone name: resnet18/34/50/101/152, vit_tiny/small/base/large_patch16_224"),
    )
    pretrained_path: str = field(
        default="", metadata=_meta("local file with backbone weights; empty = random initialisation")
    )
    head: Literal["mlp", "transformer"] = field(
        default="transformer", metadata=_meta("regression head: MLP or transformer decoder with IEF")
    )
    hidden_dim: int = field(default=256, metadata=_meta("width of the head"))
    head_depth: int = field(default=2, metadata=_meta("decoder layers (transformer) or hidden layers (MLP)"))
    num_heads: int = field(default=4, metadata=_meta("attention heads in the decoder"))
    dropout: float = field(default=0.1, metadata=_meta("dropout in the head"))
    ief_iterations: int = field(default=3, metadata=_meta("iterative error feedback steps"))
    freeze_backbone: bool = field(default=False, metadata=_meta("freeze the backbone at the start"))
    unfreeze_epoch: int = field(
        default=-1, metadata=_meta("epoch at which a frozen backbone is unfrozen; -1 = never")
    )
    cross_view_layers: int = field(
        default=1, metadata=_meta("multi-view: self-attention layers over the views' tokens")
    )
    camera_mode: Literal["absolute", "delta", "calibrated"] = field(
        default="delta",
        metadata=_meta("multi-view cameras: absolute (uncalibrated rig), delta around the calibration, or "
                       "calibrated (the calibration as given, no camera heads)"),
    )
    keypoint_heatmaps: bool = field(
        default=False,
        metadata=_meta("per-joint heatmaps on a finer feature map; their soft-argmax 2D keypoints feed the head "
                       "(loss term heatmap_keypoints2d)"),
    )
    triangulate_keypoints: bool = field(
        default=False,
        metadata=_meta("multi-view: triangulate the heatmap keypoints through the rig calibration and feed the "
                       "3D points to the body head (needs keypoint_heatmaps and camera_mode delta or calibrated)"),
    )


@dataclass
class LossConfig:
    weights: dict[str, float] = field(
        default_factory=lambda: {
            "keypoints2d": 1.0,
            "keypoints3d": 1.0,
            "params": 0.5,
            "silhouette": 0.0,
            "triangulation": 0.0,
            "heatmap_keypoints2d": 0.0,
            "joint_angle_prior": 1e-3,
            "limb_scale_prior": 1e-3,
            "limb_trans_prior": 1e-3,
        },
        metadata=_meta("weight of each loss term (see smil.losses.LOSS_TERMS)"),
    )
    curriculum: dict[int, dict[str, float]] = field(
        default_factory=dict,
        metadata=_meta("epoch → {term: weight}: from that epoch on, these weights replace the defaults"),
    )
    ief_intermediate_weight: float = field(
        default=0.5, metadata=_meta("weight of each intermediate IEF prediction's loss")
    )
    joint_importance: dict[str, float] = field(
        default_factory=dict, metadata=_meta("joint name → weight in keypoint losses (default 1)")
    )
    ignored_joints: list[str] = field(
        default_factory=list, metadata=_meta("joint names excluded from keypoint losses")
    )
    silhouette_size: int = field(default=64, metadata=_meta("resolution of the rendered silhouette"))
    silhouette_sigma: float = field(default=1.0, metadata=_meta("soft edge width σ in squared pixels (coverage = sigmoid(−d²/σ))"))
    silhouette_backface_culling: bool = field(
        default=False,
        metadata=_meta("draw only the faces turned towards the camera: about half the rendering work, "
                       "for closed meshes (docs/rendering.md#back-face-culling)"),
    )


@dataclass
class OptimConfig:
    epochs: int = field(default=10, metadata=_meta("training epochs"))
    lr: float = field(default=1e-4, metadata=_meta("AdamW learning rate (head)"))
    weight_decay: float = field(default=1e-4, metadata=_meta("AdamW weight decay"))
    backbone_lr_mult: float = field(default=0.1, metadata=_meta("backbone LR = lr × this"))
    lr_schedule: dict[int, float] = field(
        default_factory=dict, metadata=_meta("epoch → learning rate from that epoch on")
    )
    cosine: bool = field(default=False, metadata=_meta("cosine decay to 0 over the run (after the schedule)"))
    warmup_epochs: int = field(default=0, metadata=_meta("linear warm-up epochs"))
    grad_clip: float = field(default=1.0, metadata=_meta("max gradient norm; 0 = off"))
    accumulate: int = field(default=1, metadata=_meta("gradient accumulation steps"))
    amp: Literal["off", "bf16", "fp16"] = field(
        default="off", metadata=_meta("mixed precision on CUDA (always off on CPU)")
    )
    compile: Literal["off", "default", "reduce-overhead"] = field(
        default="off",
        metadata=_meta("torch.compile the regressor's parts but the backbone, and the loss terms, with this "
                       "mode (reduce-overhead: CUDA graphs on a GPU; no gradient accumulation)"),
    )


@dataclass
class TrainConfig:
    mode: Literal["singleview", "multiview"] = field(
        default="singleview", metadata=_meta("which regressor: singleview or multiview")
    )
    name: str = field(default="", metadata=_meta("experiment name", metadata_only=True))
    description: str = field(default="", metadata=_meta("free text", metadata_only=True))
    body_model: str = field(default="", metadata=_meta("SMIL body-model pickle"))
    seed: int = field(default=0, metadata=_meta("random seed"))
    deterministic: bool = field(default=False, metadata=_meta("deterministic algorithms (CPU exact)"))
    val_every: int = field(default=1, metadata=_meta("validate every N epochs"))
    best_metric: str = field(default="val/keypoints2d_px", metadata=_meta("metric that picks the best model"))
    checkpoint_every: int = field(default=1, metadata=_meta("rolling checkpoint every N epochs"))
    log_every: int = field(default=10, metadata=_meta("log a line every N steps in batch jobs"))
    data: DataConfig = field(default_factory=DataConfig, metadata=_meta("data loading"))
    model: ModelConfig = field(default_factory=ModelConfig, metadata=_meta("network"))
    loss: LossConfig = field(default_factory=LossConfig, metadata=_meta("objective"))
    optim: OptimConfig = field(default_factory=OptimConfig, metadata=_meta("optimiser and schedule"))


#: Mode defaults, applied over the base defaults and under the file.
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "singleview": {"model": {"cross_view_layers": 0}},
    "multiview": {
        "model": {"head": "transformer", "cross_view_layers": 1},
        "loss": {"weights": {"triangulation": 0.1}},
    },
}


# ---------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    data: dict[str, Any] | None = None,
) -> TrainConfig:
    """Resolve a training config: base < mode defaults < file (or ``data``) < ``--set`` overrides."""
    where = str(path) if path is not None else "<config>"
    raw = read_config_file(path) if path is not None else dict(data or {})
    for item in overrides or []:
        _apply_override(raw, item)
    mode = raw.get("mode")
    if mode is None:
        raise ConfigError('missing; expected "singleview" or "multiview"', path=where, field="mode")
    if mode not in MODES:
        raise ConfigError(
            f"invalid value {mode!r}; allowed: {', '.join(MODES)}", path=where, field="mode"
        )
    defaults = deep_merge(to_dict(TrainConfig()), MODE_DEFAULTS[mode])
    cfg = from_dict(TrainConfig, deep_merge(defaults, raw), where)
    validate_semantics(cfg, where)
    return cfg


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config ({exc.strerror})", path=path) from None
    try:
        obj = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}", path=path) from None
    if not isinstance(obj, dict):
        raise ConfigError("expected a mapping at the top level", path=path)
    return obj


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a copy of ``base``; nested mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in _REPLACE_KEYS:
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# Tables whose file value replaces the default wholesale rather than merging into it.
_REPLACE_KEYS = frozenset({"curriculum", "lr_schedule"})


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain JSON-compatible data (epoch keys stay integers until dumped)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    from smil.io_utils import write_json_atomic

    write_json_atomic(path, to_dict(cfg))


def from_dict(cls: type, obj: Any, where: str, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, strictly."""
    if not isinstance(obj, dict):
        raise ConfigError(f"expected a mapping, got {type(obj).__name__}", path=where, field=prefix or None)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in obj.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"unknown key{hint}", path=where, field=dotted)
        kwargs[key] = _convert(hints[key], value, where, dotted)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str, name: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, prefix=f"{name}.")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"invalid value {value!r}; allowed: {', '.join(map(str, allowed))}", path=where, field=name
            )
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where, name)
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {value!r}", path=where, field=name)
        out = {}
        for k, v in value.items():
            out[_convert(key_tp, k, where, f"{name}[{k!r}]")] = _convert(val_tp, v, where, f"{name}.{k}")
        return out
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"expected a list, got {value!r}", path=where, field=name)
        return [_convert(item_tp, v, where, f"{name}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"expected true or false, got {value!r}", path=where, field=name)
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"expected an integer, got {value!r}", path=where, field=name)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)  # epoch keys arrive as strings from JSON
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"expected an integer, got {value!r}", path=where, field=name)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"expected a number, got {value!r}", path=where, field=name)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"expected a string, got {value!r}", path=where, field=name)
    raise ConfigError(f"unsupported field type {tp!r}", path=where, field=name)


def _apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply ``key.sub=value`` (value parsed as YAML) to the raw mapping."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[parts[-1]] = value


def iter_fields(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """Every leaf field of the config tree as (dotted name, Field)."""
    out = []
    for f in dataclasses.fields(cls):
        hints = typing.get_type_hints(cls)
        if dataclasses.is_dataclass(hints[f.name]):
            out.extend(iter_fields(hints[f.name], prefix=f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", f))
    return out


def validate_semantics(cfg: TrainConfig, where: str = "<config>") -> None:
    """Checks across fields and value ranges that types alone do not express."""
    checks = [
        (cfg.data.batch_size >= 1, "data.batch_size", "must be ≥ 1"),
        (0 < cfg.data.epoch_fraction <= 1, "data.epoch_fraction", "must be in (0, 1]"),
        (cfg.data.image_size >= 32, "data.image_size", "must be ≥ 32"),
        (cfg.data.num_workers >= 0, "data.num_workers", "must be ≥ 0"),
        (cfg.data.min_views >= 1, "data.min_views", "must be ≥ 1"),
        (cfg.model.ief_iterations >= 1, "model.ief_iterations", "must be ≥ 1"),
        (cfg.model.hidden_dim % max(cfg.model.num_heads, 1) == 0, "model.hidden_dim",
         "must be divisible by model.num_heads"),
        (0 <= cfg.model.dropout < 1, "model.dropout", "must be in [0, 1)"),
        (cfg.optim.epochs >= 1, "optim.epochs", "must be ≥ 1"),
        (cfg.optim.lr > 0, "optim.lr", "must be > 0"),
        (cfg.optim.accumulate >= 1, "optim.accumulate", "must be ≥ 1"),
        (cfg.optim.grad_clip >= 0, "optim.grad_clip", "must be ≥ 0 (0 = off)"),
        (cfg.val_every >= 1, "val_every", "must be ≥ 1"),
        (cfg.checkpoint_every >= 1, "checkpoint_every", "must be ≥ 1"),
    ]
    for ok, name, msg in checks:
        if not ok:
            raise ConfigError(msg, path=where, field=name)
    from smil.losses import LOSS_TERMS

    tables = [("loss.weights", cfg.loss.weights)] + [
        (f"loss.curriculum.{epoch}", table) for epoch, table in cfg.loss.curriculum.items()
    ]
    if cfg.model.triangulate_keypoints and not (
        cfg.mode == "multiview" and cfg.model.keypoint_heatmaps and cfg.model.camera_mode != "absolute"
    ):
        raise ConfigError("triangulate_keypoints needs mode multiview, model.keypoint_heatmaps: true and "
                          "model.camera_mode: delta or calibrated", path=where, field="model.triangulate_keypoints")
    if cfg.optim.compile == "reduce-overhead" and cfg.optim.accumulate > 1:
        # The CUDA graph replay of a later micro-batch overwrites the gradients of the earlier ones
        # (pytorch/pytorch#169545): the sum would be wrong, so the combination is refused.
        raise ConfigError("optim.compile reduce-overhead (CUDA graphs) cannot accumulate gradients over micro-batches; "
                          "use optim.compile: default with optim.accumulate > 1", path=where, field="optim.compile")
    for name, table in tables:
        for term in table:
            if term not in LOSS_TERMS:
                close = difflib.get_close_matches(term, LOSS_TERMS, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; known terms: {', '.join(LOSS_TERMS)}"
                raise ConfigError(f"unknown loss term '{term}'{hint}", path=where, field=name)
        if table.get("heatmap_keypoints2d", 0) != 0 and not cfg.model.keypoint_heatmaps:
            raise ConfigError("the heatmap_keypoints2d term needs model.keypoint_heatmaps: true", path=where,
                              field=f"{name}.heatmap_keypoints2d")


def reference_markdown() -> str:
    """The config reference table (docs/model.md embeds it; a test keeps the two identical)."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    defaults = to_dict(TrainConfig())
    for name, f in iter_fields():
        node: Any = defaults
        for part in name.split("."):
            node = node[part]
        tp = str(f.type).replace("typing.", "").replace("|", "\\|")
        doc = f.metadata.get("doc", "")
        if f.metadata.get("metadata_only"):
            doc += " (metadata: recorded, no effect on training)"
        rows.append(f"| `{name}` | `{tp}` | `{json.dumps(node, default=str)}` | {doc} |")
    return "\n".join(rows) + "\n"
