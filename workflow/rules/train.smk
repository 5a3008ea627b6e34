rule train_singleview:
    input:
        unpack(experiment_inputs),
    output:
        model="results/experiments/{exp}/model.pt",
    log:
        "results/logs/train/{exp}.log",
    benchmark:
        "results/benchmarks/train/{exp}.tsv"
    wildcard_constraints:
        exp=name_pattern(experiments_of_mode("singleview")),
    conda:
        "../../envs/smil.yaml"
    threads: 2
    resources:
        gpu=experiment_gpus,
    params:
        launcher=launcher,
        out="results/experiments/{exp}",
        overrides=experiment_overrides,
        smil_version=smil_version(),
    shell:
        TRAIN_SHELL


rule train_multiview:
    input:
        unpack(experiment_inputs),
    output:
        model="results/experiments/{exp}/model.pt",
    log:
        "results/logs/train/{exp}.log",
    benchmark:
        "results/benchmarks/train/{exp}.tsv"
    wildcard_constraints:
        exp=name_pattern(experiments_of_mode("multiview")),
    conda:
        "../../envs/smil.yaml"
    threads: 2
    resources:
        gpu=experiment_gpus,
    params:
        launcher=launcher,
        out="results/experiments/{exp}",
        overrides=experiment_overrides,
        smil_version=smil_version(),
    shell:
        TRAIN_SHELL
