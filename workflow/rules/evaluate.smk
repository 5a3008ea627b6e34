# Evaluation stage: accuracy against the mean-pose baseline (smil evaluate), speed (smil benchmark),
# the ground-truth check of every dataset (smil check-gt), and inference runs (smil infer).

EVALUATE_SHELL = (
    "smil evaluate {input.model} {input.dataset} --out {params.out} "
    "--body-model {input.body_model} {params.args} {params.ablation} --quiet > {log} 2>&1"
)


rule evaluate:
    input:
        unpack(evaluation_inputs),
    output:
        metrics="results/experiments/{exp}/eval/metrics.json",
        per_joint="results/experiments/{exp}/eval/per_joint.csv",
        per_sample="results/experiments/{exp}/eval/per_sample.csv",
    log:
        "results/logs/evaluate/{exp}.log",
    benchmark:
        "results/benchmarks/evaluate/{exp}.tsv"
    wildcard_constraints:
        exp=name_pattern(experiments_without_views_ablation()),
    conda:
        "../../envs/smil.yaml"
    resources:
        gpu=evaluation_gpus,
    params:
        out="results/experiments/{exp}/eval",
        args=evaluation_args,
        ablation="",
    shell:
        EVALUATE_SHELL


rule evaluate_views:
    input:
        unpack(evaluation_inputs),
    output:
        metrics="results/experiments/{exp}/eval/metrics.json",
        per_joint="results/experiments/{exp}/eval/per_joint.csv",
        per_sample="results/experiments/{exp}/eval/per_sample.csv",
        ablation="results/experiments/{exp}/eval/views_ablation.json",
    log:
        "results/logs/evaluate/{exp}.log",
    benchmark:
        "results/benchmarks/evaluate/{exp}.tsv"
    wildcard_constraints:
        exp=name_pattern(experiments_with_views_ablation()),
    conda:
        "../../envs/smil.yaml"
    resources:
        gpu=evaluation_gpus,
    params:
        out="results/experiments/{exp}/eval",
        args=evaluation_args,
        ablation="--views-ablation",
    shell:
        EVALUATE_SHELL


rule benchmark_model:
    input:
        unpack(evaluation_inputs),
    output:
        json="results/experiments/{exp}/eval/benchmark.json",
        markdown="results/experiments/{exp}/eval/benchmark.md",
    log:
        "results/logs/benchmark/{exp}.log",
    benchmark:
        "results/benchmarks/benchmark/{exp}.tsv"
    conda:
        "../../envs/smil.yaml"
    resources:
        gpu=evaluation_gpus,
    params:
        args=benchmark_args,
    shell:
        "smil benchmark {input.model} {input.dataset} --out {output.json} "
        "--markdown {output.markdown} --body-model {input.body_model} {params.args} --quiet "
        "> {log} 2>&1"


rule check_gt:
    input:
        dataset="results/datasets/{dataset}/dataset.h5",
        body_model=dataset_body_model,
    output:
        "results/datasets/{dataset}/check_gt.json",
    log:
        "results/logs/check_gt/{dataset}.log",
    benchmark:
        "results/benchmarks/check_gt/{dataset}.tsv"
    wildcard_constraints:
        dataset=name_pattern(checked_datasets()),
    conda:
        "../../envs/smil.yaml"
    shell:
        "smil check-gt {input.dataset} --body-model {input.body_model} --out {output} > {log} 2>&1"


INFER_SHELL = (
    "smil infer {input.model} {input.source} --out {params.prefix} --body-model {input.body_model} "
    "{params.args} {params.overlay} --quiet > {log} 2>&1"
)


rule infer:
    input:
        unpack(inference_inputs),
    output:
        npz="results/inference/{run}/predictions.npz",
        json="results/inference/{run}/predictions.json",
    log:
        "results/logs/infer/{run}.log",
    benchmark:
        "results/benchmarks/infer/{run}.tsv"
    wildcard_constraints:
        run=name_pattern(inference_names(overlay=False)),
    conda:
        "../../envs/smil.yaml"
    resources:
        gpu=inference_gpus,
    params:
        prefix="results/inference/{run}/predictions",
        args=inference_args,
        overlay="",
    shell:
        INFER_SHELL


rule infer_overlay:
    input:
        unpack(inference_inputs),
    output:
        npz="results/inference/{run}/predictions.npz",
        json="results/inference/{run}/predictions.json",
        video="results/inference/{run}/overlay.mp4",
    log:
        "results/logs/infer/{run}.log",
    benchmark:
        "results/benchmarks/infer/{run}.tsv"
    wildcard_constraints:
        run=name_pattern(inference_names(overlay=True)),
    conda:
        "../../envs/smil.yaml"
    resources:
        gpu=inference_gpus,
    params:
        prefix="results/inference/{run}/predictions",
        args=inference_args,
        overlay="--overlay-video results/inference/{run}/overlay.mp4",
    shell:
        INFER_SHELL
