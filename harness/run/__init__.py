"""Running a stage: as a submitit job (local or Slurm) that the launcher waits on, as one MLflow
run, and the Slurm queries both need. Imports core, science, plan and stages; nothing above."""
