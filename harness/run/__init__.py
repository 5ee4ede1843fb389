"""Running a stage: as a submitit job (local or Slurm) that the launcher waits on, as one MLflow
run carried to the store by a forwarder, and the Slurm queries both need. Imports core,
science and stages; nothing above."""
