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

from harness.core.config import STAGES
from harness.workflow import Plan

PY = sys.executable
PLAN = Plan.for_snakefile(config, sys.argv[1:])

onstart:
    PLAN.store.experiment_id()  # create the tracking store once, before jobs write to it


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
        params:
            args=PLAN.table_args(_study),
            store=lambda wc, output: PLAN.store_args(),  # derived (see below): a moved results/ redoes nothing
        localrule: True
        shell: "{PY} -m harness.tables {params.args} {params.store}"


# One rule per stage. A stage job runs harness.launch, which submits the run through submitit
# and waits for it. params.args is what defines the run (stage, signature, parent): Snakemake
# redoes a run when it changes. params.job (the whole config, which launch checks against the
# signature, executor settings, tracking store, MLflow tags of the table asking) takes `output`,
# which makes it a derived param that Snakemake does not compare: another table, other executor
# or runtime settings, or a new field in a config section the run does not read, asking for a
# finished run do not redo it.
for _stage in STAGES:
    rule:
        name: _stage
        input: lambda wc: PLAN.parent_result(wc.sig)
        output: PLAN.result_pattern(_stage)
        params:
            args=lambda wc, s=_stage: PLAN.launch_args(wc.sig, s),
            job=lambda wc, output, s=_stage: PLAN.job_args(wc.sig, s),
        localrule: True
        shell: "{PY} -m harness.launch {params.args} {params.job}"
