"""Planning: studies (one per paper table), the scale presets, and the plan Snakemake reads
(every cell's runs and signatures, each table's plan file), checked before any job is
submitted. Imports the layers below it (core, science, run); nothing above."""
