from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


validate(config, schema="../schemas/config.schema.yaml")


DATASETS = config.get("datasets") or {}


wildcard_constraints:
    dataset="|".join(DATASETS) if DATASETS else "(?!)",


def body_model_path(name):
    """The body-model file a config entry names: "default" is the procedural model."""
    if name == "default":
        return "results/models/default.pkl"
    return name


def dataset_spec(wildcards):
    return DATASETS[wildcards.dataset]


def all_targets():
    targets = ["results/models/default.summary.json"]
    targets += expand("results/datasets/{dataset}/dataset.h5", dataset=list(DATASETS))
    return targets
