import json
import re
import shlex

import yaml

from snakemake.utils import min_version, validate

min_version("9.0")


validate(config, schema="../schemas/config.schema.yaml")


DATASETS = config.get("datasets") or {}
PREPROCESS_DEFAULTS = {
    "image_size": 128,
    "padding": 1.2,
    "jpeg_quality": 90,
    "split": [0.8, 0.1, 0.1],
    "seed": 0,
    "skip_bad": False,
    "border": "shift",
}


def names_of_kind(kind):
    return [name for name, spec in DATASETS.items() if spec["kind"] == kind]


def name_pattern(names):
    """A wildcard constraint matching exactly these names (or nothing)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


wildcard_constraints:
    dataset=name_pattern(list(DATASETS)),


def body_model_path(name):
    """The body-model file a config entry names: "default" is the procedural model."""
    return "results/models/default.pkl" if name in (None, "default") else name


def dataset_body_model(wildcards):
    return body_model_path(DATASETS[wildcards.dataset].get("body_model", "default"))


def dataset_source(wildcards):
    return DATASETS[wildcards.dataset]["path"]


def synth_args(wildcards):
    spec = DATASETS[wildcards.dataset]
    args = ["--num-samples", spec["num_samples"], "--views", spec.get("views", 1)]
    for key in ("rig", "image_size", "seed", "world_unit_m"):
        if key in spec:
            args += [f"--{key.replace('_', '-')}", spec[key]]
    return " ".join(shlex.quote(str(a)) for a in args)


def ingest_args(wildcards):
    spec = DATASETS[wildcards.dataset]
    args = []
    for key in ("joint_map", "group_by", "calibration", "world_unit_m"):
        if key in spec:
            args += [f"--{key.replace('_', '-')}", spec[key]]
    for d in spec.get("video_dirs", []):
        args += ["--video-dir", d]
    if spec.get("joint_names_from_skeleton"):
        args.append("--joint-names-from-skeleton")
    if spec.get("skip_bad"):
        args.append("--skip-bad")
    return " ".join(shlex.quote(str(a)) for a in args)


def preprocess_settings(dataset):
    settings = dict(PREPROCESS_DEFAULTS)
    settings.update(config.get("preprocess") or {})
    settings.update(DATASETS[dataset].get("preprocess") or {})
    return settings


def preprocess_args(wildcards):
    s = preprocess_settings(wildcards.dataset)
    args = [
        "--image-size",
        s["image_size"],
        "--padding",
        s["padding"],
        "--jpeg-quality",
        s["jpeg_quality"],
        "--border",
        s["border"],
        "--seed",
        s["seed"],
        "--split",
        ",".join(str(x) for x in s["split"]),
    ]
    if s["skip_bad"]:
        args.append("--skip-bad")
    return " ".join(shlex.quote(str(a)) for a in args)


def all_targets():
    targets = ["results/models/default.summary.json"]
    targets += expand("results/datasets/{dataset}/dataset.h5", dataset=list(DATASETS))
    targets += expand("results/experiments/{exp}/model.pt", exp=list(EXPERIMENTS))
    return targets


EXPERIMENTS = config.get("experiments") or {}


def _experiment_mode(name):
    spec = EXPERIMENTS[name]
    if spec["dataset"] not in DATASETS:
        raise ValueError(
            f"experiment '{name}': dataset '{spec['dataset']}' is not in the dataset table "
            f"({', '.join(DATASETS) or 'empty'})"
        )
    with open(spec["config"]) as fh:
        mode = (yaml.safe_load(fh) or {}).get("mode")
    if mode not in ("singleview", "multiview"):
        raise ValueError(
            f"experiment '{name}': {spec['config']} must set mode to singleview or multiview"
        )
    return mode


EXPERIMENT_MODES = {name: _experiment_mode(name) for name in EXPERIMENTS}


def experiments_of_mode(mode):
    return [name for name, m in EXPERIMENT_MODES.items() if m == mode]


def smil_version():
    """The smil package version: training reruns when it changes."""
    text = open(workflow.source_path("../../smil/__init__.py")).read()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def experiment_inputs(wildcards):
    spec = EXPERIMENTS[wildcards.exp]
    dataset = spec["dataset"]
    return {
        "config": spec["config"],
        "dataset": f"results/datasets/{dataset}/dataset.h5",
        "body_model": body_model_path(DATASETS[dataset].get("body_model", "default")),
    }


def experiment_overrides(wildcards):
    sets = EXPERIMENTS[wildcards.exp].get("set") or {}
    args = []
    for key, value in sets.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    return " ".join(shlex.quote(a) for a in args)


def experiment_gpus(wildcards):
    return int(EXPERIMENTS[wildcards.exp].get("gpus", 0))


def launcher(wildcards, resources):
    """torchrun with one process per GPU (one process on CPU)."""
    n = max(int(resources.get("gpu", 0) or 0), 1)
    return f"torchrun --standalone --nproc-per-node {n}"


TRAIN_SHELL = (
    "{params.launcher} -m smil train --config {input.config} --out {params.out} "
    "--set data.dataset={input.dataset} --set body_model={input.body_model} "
    "--set name={wildcards.exp} {params.overrides} > {log} 2>&1"
)
