rule synthesize:
    input:
        body_model=dataset_body_model,
    output:
        manifest="results/datasets/{dataset}/source/manifest.jsonl",
    log:
        "results/logs/synthesize/{dataset}.log",
    benchmark:
        "results/benchmarks/synthesize/{dataset}.tsv"
    wildcard_constraints:
        dataset=name_pattern(names_of_kind("synthetic")),
    conda:
        "../../envs/smil.yaml"
    params:
        out="results/datasets/{dataset}/source",
        args=synth_args,
    shell:
        "smil synth --out {params.out} --body-model {input.body_model} {params.args} > {log} 2>&1"


rule ingest_replicant:
    input:
        source=dataset_source,
        body_model=dataset_body_model,
    output:
        manifest="results/datasets/{dataset}/source/manifest.jsonl",
    log:
        "results/logs/ingest_replicant/{dataset}.log",
    benchmark:
        "results/benchmarks/ingest_replicant/{dataset}.tsv"
    wildcard_constraints:
        dataset=name_pattern(names_of_kind("replicant")),
    conda:
        "../../envs/smil.yaml"
    params:
        args=ingest_args,
    shell:
        "smil ingest replicant {input.source} --out {output.manifest} {params.args} > {log} 2>&1"


rule ingest_sleap:
    input:
        source=dataset_source,
        body_model=dataset_body_model,
    output:
        manifest="results/datasets/{dataset}/source/manifest.jsonl",
    log:
        "results/logs/ingest_sleap/{dataset}.log",
    benchmark:
        "results/benchmarks/ingest_sleap/{dataset}.tsv"
    wildcard_constraints:
        dataset=name_pattern(names_of_kind("sleap")),
    conda:
        "../../envs/smil.yaml"
    params:
        args=ingest_args,
    shell:
        "smil ingest sleap {input.source} --out {output.manifest} {params.args} > {log} 2>&1"


rule preprocess:
    input:
        manifest="results/datasets/{dataset}/source/manifest.jsonl",
    output:
        dataset="results/datasets/{dataset}/dataset.h5",
        summary="results/datasets/{dataset}/preprocess_summary.json",
    log:
        "results/logs/preprocess/{dataset}.log",
    benchmark:
        "results/benchmarks/preprocess/{dataset}.tsv"
    conda:
        "../../envs/smil.yaml"
    threads: 2
    params:
        args=preprocess_args,
    shell:
        "smil preprocess {input.manifest} {output.dataset} --summary {output.summary} "
        "--workers {threads} --quiet {params.args} > {log} 2>&1"
