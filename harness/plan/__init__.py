"""Planning: studies (one per paper table), the scale presets, the paper's claims, and every
cell's runs and signatures (each table's plan file), checked before any job is submitted.
Imports core and science only; the Snakemake glue that hands the plan to the Snakefile is
harness.workflow."""
