# randsac-harness workflow: studies/*.yaml -> stage runs -> tables.
#
#   snakemake --profile local table3                       # embedded default (scale smoke, local executor)
#   snakemake --profile slurm table3                       # paper scale, each stage a Slurm job via submitit
#   snakemake --profile local table3 --config scale=tiny 'pretrain={epochs: 1}'
#
# Config keys: scale (tiny|smoke|paper); executor (see profiles/*/harness.yaml; --config
# 'executor={mem_gb: 8}' merges into the profile's); tracking_uri (a shared MLflow server); rerun
# (rerun=stale: start over the finished runs made by other code than today's); and the run config's fields (method, data, model, segments, pretrain, linprobe, finetune, dino,
# seed, device) as overrides for every cell.
# Every run lives in results/runs/<signature>/; a config asked for by several tables is one run.
import sys

from harness.core.stages import STAGES, declared
from harness.workflow import jobs, snakefile, tracking

PY = sys.executable
PLAN, PREFLIGHT, STALE = snakefile.load(config, sys.argv[1:])

onstart:
    # a preflight logs nothing and launches no stage job; a table or the claims alone read result files
    if not PLAN.preflight and any(job.rule.name in STAGES for job in workflow.dag.needrun_jobs()):
        tracking.open_store(PLAN)  # created once, spools of earlier runs replayed; one line if it does not answer
        jobs.write_job_files(PLAN)  # what each stage job is launched with (results/.launch/)
    # --config rerun=stale: the stale runs this invocation redoes keep their results aside first
    STALE.start_over([(job.rule.name, job.wildcards.sig) for job in workflow.dag.needrun_jobs()
                           if job.rule.name in STAGES])


onerror:
    # a failed preflight: its one line per failed run, after Snakemake's own report of the rule
    for _line in PREFLIGHT.failure():
        print(f"randsac-harness: {_line}", file=sys.stderr, flush=True)


wildcard_constraints:
    sig="[0-9a-f]{12}",


rule all:
    input: PREFLIGHT.files("all") if PLAN.preflight else PLAN.table_files()
    default_target: True


# --config preflight=true (or 'preflight={steps: 20, warmup: 3}'): a target asks for its preflight
# report instead of its table, and no stage rule runs. The rule runs every distinct stage run of
# the target for a few steps on the executor the full runs would get (harness.run.preflight),
# prints the report and writes results/preflight/<target>.md|.csv; a failed stage run fails the
# rule with its one line. params.asked changes with every invocation: a preflight measures anew.
if PLAN.preflight:
    rule preflight:
        output: PREFLIGHT.files("{target}")
        params: asked=PLAN.asked_at
        wildcard_constraints: target="all|" + "|".join(s.name for s in PLAN.studies)
        localrule: True
        run:
            PREFLIGHT.run(wildcards.target)


# A table: its plan (results/tables/<table>.plan.json: the study's captions and numbers, the
# scale, every cell with the signatures of its runs), written from PLAN, and the result files of
# the runs it names; it renders from those alone (no tracking store, no study read again).
# The plan file is written again only when its content changes (params.content, its hash): the
# same settings asked again, or runtime settings no table shows, redo no table.
for _study in PLAN.studies:
    if PLAN.preflight:  # the table's target is its preflight report
        rule:
            name: _study.name
            input: PREFLIGHT.files(_study.name)
            localrule: True
        continue
    rule:
        name: f"{_study.name}_plan"
        output: PLAN.table_plan_file(_study)
        params:
            table=_study.name,
            content=PLAN.table_plan_digest(_study),
        localrule: True
        run:
            PLAN.write_table_plan(params.table, output[0])

    rule:
        name: _study.name
        input:
            plan=PLAN.table_plan_file(_study),
            runs=lambda wc, s=_study: PLAN.table_inputs(s),
        output: PLAN.table_files(_study)
        localrule: True
        shell: "{PY} -m harness.report.tables {input.plan}"


# The paper's claims over every table that has run (harness.report.summary): results/claims.md,
# .csv and .png, from the table plans in results/tables and their runs' result files. It starts
# no run: it waits only for the tables asked beside it, and params.read (what it reads, with
# write times) redoes it when another run finishes or a table is written again.
rule claims:
    input: PLAN.claims_inputs()
    output: PLAN.claims_files()
    params: read=PLAN.claims_digest()
    localrule: True
    shell: "{PY} -m harness.report.summary {PLAN.results.root}"


# One rule per stage. A stage job runs harness.run.launch, which submits the run through submitit
# and waits for it. params.args is what defines the run (stage, signature, parent): Snakemake
# redoes a run when it changes. params.job (`--job results/.launch/<stage>-<sig>-<hash>.json`: the
# whole config, which launch checks against the signature, executor settings, tracking store,
# MLflow tags of the table asking; a file, so that a failed job's command stays one short line)
# takes `output`, which makes it a derived param that Snakemake does not compare: another table,
# other executor or runtime settings, or a new field in a config section the run does not read,
# asking for a finished run do not redo it. params.superseded counts the times the run was started
# over with newer code (harness.workflow.stale): it grows only with --config rerun=stale for a stale
# run, so a code edit alone redoes nothing, and rerun=stale plans exactly the stale runs.
for _stage in STAGES:
    rule:
        name: _stage
        input: lambda wc: PLAN.parent_result(wc.sig)
        output: PLAN.result_pattern(_stage)
        params:
            args=lambda wc, s=_stage: PLAN.launch_args(wc.sig, s),
            job=lambda wc, output, s=_stage: jobs.job_args(PLAN, wc.sig, s),
            superseded=lambda wc: STALE.superseded(wc.sig),
        threads: PLAN.job_threads
        priority: declared(_stage).priority
        localrule: True
        shell: "{PY} -m harness.run.launch {params.args} {params.job}"
