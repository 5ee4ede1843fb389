"""What a run is: its config, the dataset facts, where its files live, its metric names.

The lowest layer: imports nothing else of the harness and nothing heavy (no torch)."""
