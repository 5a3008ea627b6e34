# Report stage: cross-experiment figures (smil figures) and the self-contained HTML report
# (smil report). Figures and the page are also registered for `snakemake --report report.html`.


rule figures:
    input:
        figure_inputs,
    output:
        png=report(
            "results/report/figures/{figure}.png",
            caption="../report/figure.rst",
            category="Figures across experiments",
            labels={"figure": "{figure}"},
        ),
        pdf="results/report/figures/{figure}.pdf",
    log:
        "results/logs/figures/{figure}.log",
    benchmark:
        "results/benchmarks/figures/{figure}.tsv"
    wildcard_constraints:
        figure="pck_curves|per_joint_errors|error_vs_views",
    conda:
        "../../envs/smil.yaml"
    params:
        experiments=figure_experiments,
    shell:
        "smil figures --results results --out results/report/figures --figures {wildcards.figure} "
        "--experiments {params.experiments} --datasets > {log} 2>&1"


rule report:
    input:
        unpack(report_inputs),
    output:
        report(
            "results/report/index.html",
            caption="../report/index.rst",
            category="Report",
            labels={"page": "index.html"},
        ),
    log:
        "results/logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        "../../envs/smil.yaml"
    params:
        args=report_args,
    shell:
        "smil report --results results --out results/report {params.args} "
        "--figure-files {input.figures} > {log} 2>&1"
