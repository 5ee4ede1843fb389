"""randsac-harness: the RandSAC paper's ablation tables, end to end.

Layers, each importing only those before it:
    core     what a run is: config sections, stage declarations, dataset facts, results layout
    science  the paper: segments, masks, models, augmentations, one file per method
    stages   one file per training stage and the training loop they share
    run      a stage as a submitit job (local or Slurm) and as one MLflow run
    plan     studies, scale presets, the plan Snakemake reads
    report   tables and figures from the runs' result files
and the commands on top: status, tune, pictures, fetch, migrate.
"""
