"""The Snakemake glue: what the Snakefile asks of the plan (files, params, job files, preflight,
stale runs), and the snakemake command line it reads."""
