# randsac-harness workflow: studies/*.yaml -> stage runs -> tables.
#
#   snakemake --profile local table3                       # embedded default (scale smoke, local executor)
#   snakemake --profile slurm table3                       # paper scale, each stage a Slurm job via submitit
#   snakemake --profile local table3 --config scale=tiny 'pretrain={epochs: 1}'
#
# Config keys: scale (tiny|smoke|paper); executor (see profiles/*/harness.yaml; --config
# 'executor={mem_gb: 8}' merges into the profile's); tracking_uri (a shared MLflow server); and
# the run config's fields (method, data, model, segments, pretrain, linprobe, finetune, dino,
# seed, device) as overrides for every cell.
# Every run lives in results/runs/<signature>/; a config asked for by several tables is one run.
import sys

from harness.workflow import Plan

PY = sys.executable
PLAN = Plan.for_snakefile(config, sys.argv[1:])

onstart:
    from harness.tracking import experiment_id

    experiment_id(PLAN.results_dir)  # create the tracking store once, before jobs write to it


def launch(run_args, job_args):
    """A stage job: harness.launch submits the run through submitit and waits for it. Only
    run_args (what defines the run) are Snakemake params; job_args (executor, MLflow tags of the
    table asking) stay out of them, so another table asking for the same run does not redo it."""
    shell(f"{PY} -m harness.launch {run_args} {job_args}".replace("{", "{{").replace("}", "}}"))


wildcard_constraints:
    sig="[0-9a-f]{12}",


rule all:
    input: PLAN.table_files()
    default_target: True


for _study in PLAN.studies:
    rule:
        name: _study.name
        input: lambda wc, s=_study: PLAN.table_inputs(s), PLAN.studies_dir / f"{_study.name}.yaml"
        output: PLAN.table_files(_study)
        params: study=_study.name
        localrule: True
        shell:
            "{PY} -m harness.tables {params.study} --scale {PLAN.scale} "
            "--overrides {PLAN.overrides_json:q} --results {PLAN.results_dir:q}"


rule pretrain:
    output: "results/runs/{sig}/pretrain.json"
    params: args=lambda wc: PLAN.launch_args(wc.sig, "pretrain")
    localrule: True
    run: launch(params.args, PLAN.job_args(wildcards.sig, "pretrain"))


rule linprobe:
    input: lambda wc: PLAN.parent_result(wc.sig)
    output: "results/runs/{sig}/linprobe.json"
    params: args=lambda wc: PLAN.launch_args(wc.sig, "linprobe")
    localrule: True
    run: launch(params.args, PLAN.job_args(wildcards.sig, "linprobe"))


rule finetune:
    input: lambda wc: PLAN.parent_result(wc.sig)
    output: "results/runs/{sig}/finetune.json"
    params: args=lambda wc: PLAN.launch_args(wc.sig, "finetune")
    localrule: True
    run: launch(params.args, PLAN.job_args(wildcards.sig, "finetune"))
