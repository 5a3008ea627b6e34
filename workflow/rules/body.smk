rule default_body_model:
    output:
        "results/models/default.pkl",
    log:
        "results/logs/default_body_model.log",
    benchmark:
        "results/benchmarks/default_body_model.tsv"
    conda:
        "../../envs/smil.yaml"
    params:
        seed=config["body_model"]["seed"],
    shell:
        "smil body build-default {output} --seed {params.seed} > {log} 2>&1"


rule default_body_model_summary:
    input:
        "results/models/default.pkl",
    output:
        "results/models/default.summary.json",
    log:
        "results/logs/default_body_model_summary.log",
    benchmark:
        "results/benchmarks/default_body_model_summary.tsv"
    conda:
        "../../envs/smil.yaml"
    shell:
        "smil body info {input} --json --output {output} > {log} 2>&1"
