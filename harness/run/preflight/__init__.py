"""Preflight: every distinct stage run of a target, a few steps each, on the executor its full run
would get, before any full job (`snakemake ... TARGET --config preflight=true`).

Each stage run trains with its real recipe, its real per-device batch and its real data path for
`warmup` + `steps` steps, then stops. Measured per run: ok or the one-line error; images/s of the
whole step (data included) and of the compute alone (a data-loading stall shows as the gap);
peak device memory against the device's capacity; the seconds from the start to the first batch
(setup: data, model, a probe's cached features) and of one evaluation; from those, the projected
wall time and device-hours of the full run. Nothing of a run is kept: it trains in a temporary
folder, logs to no MLflow run and writes no result; evaluation stages start from their encoder as
initialised (no pre-training is waited for). The stage runs go in few jobs: on Slurm one per distinct model
and dataset (submitted together), on the local executor one for all (one after another, so that
they do not share the CPU). The report lands in results/preflight/<target>.md and .csv.

The bill before a target runs (`projected`): the device-hours of its unfinished runs as the
newest preflight report measuring each of them on this executor projects them; the dry run and
`python -m harness.status` print it, or say that none was measured and how to measure.

Three modules: `probe` (in the job: the meter, the memory watch, one run measured), `submit` (the
launcher's side: the jobs, their records, the report's rows), `report` (the projection, the
report's files, the bill before).
"""
from harness.run.preflight.probe import PreflightSettings
from harness.run.preflight.report import Report, projected, write
from harness.run.preflight.submit import run_preflight

__all__ = ["PreflightSettings", "Report", "projected", "run_preflight", "write"]
