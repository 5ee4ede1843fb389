"""randsac-harness: the RandSAC paper's ablation tables, end to end.

Layers, each importing only those before it:
    core     what a run is: config sections, stage declarations, dataset facts, results layout
    science  the paper: segments, masks, models, augmentations, one file per method
    plan     studies, scale presets, claims: which runs each table needs, with which configs
    stages   one file per training stage and the training loop they share
    run      a stage as a submitit job (local or Slurm) and as one MLflow run
    report   tables and figures from the runs' result files
    workflow the Snakemake glue: the plan the Snakefile reads, job files, preflight, stale runs
and the commands on top: status, tune, pictures, fetch, migrate.
"""
