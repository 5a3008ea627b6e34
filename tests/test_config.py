"""Strict configuration loading: precedence, validation messages, epoch-keyed tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smil.config import TrainConfig, iter_fields, load_config, save_config, to_dict
from smil.errors import ConfigError


def write(tmp_path: Path, obj: dict, name: str = "cfg.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def test_mode_is_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mode"):
        load_config(write(tmp_path, {"seed": 1}))


def test_unknown_mode_lists_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allowed: singleview, multiview"):
        load_config(write(tmp_path, {"mode": "stereo"}))


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, {"mode": "singleview", "optim": {"learning_rate": 1e-3, "lr": 1}}))
    assert "optim.learning_rate" in str(err.value)
    with pytest.raises(ConfigError, match="did you mean 'model.backbone'"):
        load_config(write(tmp_path, {"mode": "singleview", "model": {"backbon": "resnet18"}}))


def test_invalid_literal_says_what_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allowed: mlp, transformer"):
        load_config(write(tmp_path, {"mode": "singleview", "model": {"head": "lstm"}}))


def test_wrong_type_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(write(tmp_path, {"mode": "singleview", "data": {"batch_size": "many"}}))
    with pytest.raises(ConfigError, match="expected true or false"):
        load_config(write(tmp_path, {"mode": "singleview", "data": {"augment": "yes"}}))


def test_heatmap_term_needs_the_heatmap_branch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="loss.curriculum.3.heatmap_keypoints2d.*needs model.keypoint_heatmaps"):
        load_config(write(tmp_path, {"mode": "singleview", "loss": {"curriculum": {"3": {"heatmap_keypoints2d": 1}}}}))
    cfg = load_config(write(tmp_path, {"mode": "singleview", "model": {"keypoint_heatmaps": True},
                                       "loss": {"weights": {"heatmap_keypoints2d": 1}}}))
    assert cfg.model.keypoint_heatmaps and cfg.loss.weights["heatmap_keypoints2d"] == 1


@pytest.mark.parametrize("cfg", [
    {"mode": "singleview", "model": {"keypoint_heatmaps": True}},
    {"mode": "multiview", "model": {}},
    {"mode": "multiview", "model": {"keypoint_heatmaps": True, "camera_mode": "absolute"}},
], ids=["singleview", "no-heatmaps", "absolute-cameras"])
def test_triangulated_keypoints_need_heatmaps_and_a_calibrated_rig(tmp_path: Path, cfg: dict) -> None:
    cfg["model"]["triangulate_keypoints"] = True
    with pytest.raises(ConfigError, match="model.triangulate_keypoints.*needs mode multiview"):
        load_config(write(tmp_path, cfg))
    ok = load_config(write(tmp_path, {"mode": "multiview", "model": {"keypoint_heatmaps": True,
                                                                      "triangulate_keypoints": True}}))
    assert ok.model.triangulate_keypoints and ok.model.camera_mode == "delta"


def test_precedence_cli_over_file_over_mode_over_base(tmp_path: Path) -> None:
    base = TrainConfig()
    cfg = load_config(write(tmp_path, {"mode": "multiview"}))
    assert base.model.cross_view_layers == 1 and base.loss.weights["triangulation"] == 0.0
    assert load_config(write(tmp_path, {"mode": "singleview"})).model.cross_view_layers == 0
    assert cfg.loss.weights["triangulation"] == 0.1  # mode default over base
    assert cfg.loss.weights["keypoints2d"] == 1.0  # base kept where nobody overrides
    cfg = load_config(write(tmp_path, {"mode": "multiview", "loss": {"weights": {"triangulation": 0.3}}}))
    assert cfg.loss.weights["triangulation"] == 0.3  # file over mode default
    cfg = load_config(
        write(tmp_path, {"mode": "multiview", "optim": {"lr": 0.1}}),
        overrides=["optim.lr=0.5", "model.backbone=vit_tiny_patch16_224"],
    )
    assert cfg.optim.lr == 0.5 and cfg.model.backbone == "vit_tiny_patch16_224"  # CLI over file


def test_epoch_keys_become_integers_and_replace_defaults(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            {
                "mode": "singleview",
                "optim": {"lr_schedule": {"0": 1e-3, "5": 1e-4}},
                "loss": {"curriculum": {"3": {"silhouette": 0.1}}},
            },
        )
    )
    assert cfg.optim.lr_schedule == {0: 1e-3, 5: 1e-4}
    assert cfg.loss.curriculum == {3: {"silhouette": 0.1}}


def test_yaml_files_load(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("mode: singleview\ndata:\n  batch_size: 3\n")
    assert load_config(path).data.batch_size == 3


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, {"mode": "multiview", "optim": {"lr_schedule": {"2": 0.01}}}))
    out = tmp_path / "resolved.json"
    save_config(cfg, out)
    again = load_config(out)
    assert to_dict(again) == to_dict(cfg)


def test_every_field_is_documented() -> None:
    for name, f in iter_fields():
        assert f.metadata.get("doc"), f"{name} has no documentation"


def test_unknown_loss_term_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'keypoints2d'"):
        load_config(write(tmp_path, {"mode": "singleview", "loss": {"weights": {"keypoint2d": 1.0}}}))
    with pytest.raises(ConfigError, match="loss.curriculum.4"):
        load_config(write(tmp_path, {"mode": "singleview", "loss": {"curriculum": {"4": {"nope": 1}}}}))


def test_value_ranges_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.epoch_fraction"):
        load_config(write(tmp_path, {"mode": "singleview", "data": {"epoch_fraction": 0}}))


def test_docs_config_reference_matches_the_dataclasses(repo_root: Path) -> None:
    from smil.config import reference_markdown

    text = (repo_root / "docs" / "model.md").read_text()
    block = text.split("<!-- BEGIN CONFIG REFERENCE -->\n")[1].split("<!-- END CONFIG REFERENCE -->")[0]
    assert block == reference_markdown(), "regenerate docs/model.md's table with smil.config.reference_markdown()"


def test_cuda_graphs_refuse_gradient_accumulation(tmp_path: Path) -> None:
    path = write(tmp_path, {"mode": "multiview", "optim": {"accumulate": 2}})
    with pytest.raises(ConfigError, match="optim.compile.*reduce-overhead.*cannot accumulate"):
        load_config(path, ["optim.compile=reduce-overhead"])
    assert load_config(path, ["optim.compile=default"]).optim.accumulate == 2
    assert load_config(path, ["optim.compile=reduce-overhead", "optim.accumulate=1"]).optim.compile == "reduce-overhead"
