"""The stages of a run (pre-training, linear probe, fine-tuning) and what they share: data and
splits, the training loop, checkpoints, data-parallel processes. Imports harness.core and
harness.science, never the orchestration above it."""
