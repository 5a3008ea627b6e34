import json
import os
import re
import shlex
from pathlib import Path

import yaml

from snakemake.utils import min_version, validate

min_version("9.0")

# envs/*.yaml install this checkout: pip expands ${SMIL_ROOT} in their pip section.
os.environ.update(SMIL_ROOT=str(Path(workflow.basedir).parent.resolve()))


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


def ingest_args(wildcards, input):
    spec = DATASETS[wildcards.dataset]
    # Target joints come from the body model, or (SLEAP) from the skeleton's node names.
    args = (
        []
        if spec.get("joint_names_from_skeleton")
        else ["--body-model", input.body_model]
    )
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
    targets += evaluation_targets()
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
    """The installed smil package's version: training reruns when it changes."""
    import smil

    return smil.__version__


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
    """Nothing for one process; torchrun per GPU on one node; srun/torchrun across nodes."""
    from smil.cluster import launch_prefix

    return launch_prefix(resources)


TRAIN_SHELL = (
    "{params.launcher} smil train --config {input.config} --out {params.out} "
    "--set data.dataset={input.dataset} --set body_model={input.body_model} "
    "--set name={wildcards.exp} {params.overrides} > {log} 2>&1"
)


# --- evaluation, inference and report (rules/evaluate.smk, rules/report.smk) -----------------

EVALUATION = {"split": "test", "batch_size": 16, "overlays": 4, "views_ablation": True}
EVALUATION.update(config.get("evaluation") or {})
BENCHMARK = {"batch_sizes": [1, 8], "repeats": 10, "warmup": 2}
BENCHMARK.update(config.get("benchmark") or {})
INFERENCE = config.get("inference") or {}
REPORT = {"title": "SMIL pipeline report"}
REPORT.update(config.get("report") or {})


def _check_references():
    for name, spec in INFERENCE.items():
        if spec["experiment"] not in EXPERIMENTS:
            raise ValueError(
                f"inference '{name}': experiment '{spec['experiment']}' is not in the experiment "
                f"table ({', '.join(EXPERIMENTS) or 'empty'})"
            )
        if ("dataset" in spec) == ("input" in spec):
            raise ValueError(
                f"inference '{name}': give exactly one of dataset (a name in the dataset table) "
                "or input (a path)"
            )
        if "dataset" in spec and spec["dataset"] not in DATASETS:
            raise ValueError(
                f"inference '{name}': dataset '{spec['dataset']}' is not in the dataset table "
                f"({', '.join(DATASETS) or 'empty'})"
            )


_check_references()


def experiments_with_views_ablation():
    """Multi-view experiments evaluated with 1..V views too (evaluation.views_ablation)."""
    return experiments_of_mode("multiview") if EVALUATION["views_ablation"] else []


def experiments_without_views_ablation():
    return [e for e in EXPERIMENTS if e not in experiments_with_views_ablation()]


def checked_datasets():
    """Datasets whose joints are the body model's: smil check-gt can pose them."""
    return [
        name
        for name, spec in DATASETS.items()
        if not spec.get("joint_names_from_skeleton")
    ]


def evaluation_inputs(wildcards):
    inputs = experiment_inputs(wildcards)
    return {
        "model": f"results/experiments/{wildcards.exp}/model.pt",
        "dataset": inputs["dataset"],
        "body_model": inputs["body_model"],
    }


def evaluation_gpus(wildcards):
    """Evaluation and benchmarks run on one GPU where the experiment trained on GPUs."""
    return min(experiment_gpus(wildcards), 1)


def evaluation_args(wildcards):
    e = EVALUATION
    args = [
        "--split",
        e["split"],
        "--batch-size",
        e["batch_size"],
        "--overlays",
        e["overlays"],
    ]
    return " ".join(shlex.quote(str(a)) for a in args)


def benchmark_args(wildcards):
    sizes = ",".join(str(int(b)) for b in BENCHMARK["batch_sizes"])
    args = ["--batch-sizes", sizes, "--repeats", BENCHMARK["repeats"]]
    args += ["--warmup", BENCHMARK["warmup"], "--split", EVALUATION["split"]]
    return " ".join(shlex.quote(str(a)) for a in args)


def inference_names(overlay):
    return [n for n, s in INFERENCE.items() if bool(s.get("overlay_video")) == overlay]


def inference_inputs(wildcards):
    spec = INFERENCE[wildcards.run]
    exp = spec["experiment"]
    dataset = EXPERIMENTS[exp]["dataset"]
    source = (
        f"results/datasets/{spec['dataset']}/dataset.h5"
        if "dataset" in spec
        else spec["input"]
    )
    inputs = {
        "model": f"results/experiments/{exp}/model.pt",
        "source": source,
        "body_model": body_model_path(DATASETS[dataset].get("body_model", "default")),
    }
    for key in ("bboxes", "calibration"):
        if key in spec:
            inputs[key] = spec[key]
    return inputs


def inference_args(wildcards, input):
    spec = INFERENCE[wildcards.run]
    args = []
    for key in ("split", "crop", "bbox_padding", "smooth", "fps", "batch_size"):
        if key in spec:
            args += [f"--{key.replace('_', '-')}", spec[key]]
    for key in ("bboxes", "calibration"):
        if key in spec:
            args += [f"--{key}", input[key]]
    return " ".join(shlex.quote(str(a)) for a in args)


def inference_gpus(wildcards):
    return min(
        int(EXPERIMENTS[INFERENCE[wildcards.run]["experiment"]].get("gpus", 0)), 1
    )


def report_figures():
    """The cross-experiment figures the results will have data for."""
    names = ["pck_curves", "per_joint_errors"] if EXPERIMENTS else []
    if experiments_with_views_ablation():
        names.append("error_vs_views")
    return names


def eval_file(exp, name):
    return f"results/experiments/{exp}/eval/{name}"


def figure_inputs(wildcards):
    if wildcards.figure == "error_vs_views":
        return [
            eval_file(e, "views_ablation.json")
            for e in experiments_with_views_ablation()
        ]
    files = [eval_file(e, "metrics.json") for e in EXPERIMENTS]
    if wildcards.figure == "per_joint_errors":
        files += [eval_file(e, "per_joint.csv") for e in EXPERIMENTS]
    return files


def inference_outputs(run):
    files = [f"results/inference/{run}/predictions.json"]
    if INFERENCE[run].get("overlay_video"):
        files.append(f"results/inference/{run}/overlay.mp4")
    return files


def report_inputs(wildcards):
    inputs = {
        "figures": expand(
            "results/report/figures/{figure}.png", figure=report_figures()
        ),
        "models": expand("results/experiments/{exp}/model.pt", exp=list(EXPERIMENTS)),
        "metrics": [eval_file(e, "metrics.json") for e in EXPERIMENTS],
        "benchmarks": [eval_file(e, "benchmark.json") for e in EXPERIMENTS],
        "ablations": [
            eval_file(e, "views_ablation.json")
            for e in experiments_with_views_ablation()
        ],
        "datasets": expand(
            "results/datasets/{dataset}/dataset.h5", dataset=list(DATASETS)
        ),
        "checks": expand(
            "results/datasets/{dataset}/check_gt.json", dataset=checked_datasets()
        ),
        "inference": [f for run in INFERENCE for f in inference_outputs(run)],
    }
    return inputs


def report_args(wildcards):
    args = [
        "--title",
        REPORT["title"],
        "--experiments",
        *EXPERIMENTS,
        "--datasets",
        *DATASETS,
    ]
    args += ["--inference", *INFERENCE]
    return " ".join(shlex.quote(str(a)) for a in args)


def figure_experiments(wildcards):
    names = (
        experiments_with_views_ablation()
        if wildcards.figure == "error_vs_views"
        else list(EXPERIMENTS)
    )
    return " ".join(shlex.quote(n) for n in names)


def evaluation_targets():
    targets = [eval_file(e, "metrics.json") for e in EXPERIMENTS]
    targets += [eval_file(e, "benchmark.json") for e in EXPERIMENTS]
    targets += expand(
        "results/datasets/{dataset}/check_gt.json", dataset=checked_datasets()
    )
    targets += [f for run in INFERENCE for f in inference_outputs(run)]
    targets.append("results/report/index.html")
    return targets
