"""The smoke recipe learns: pre-training ends well below its floor and its features beat a
random encoder's. The guard of the embedded default's first table (a few minutes on a CPU)."""
import pytest

from harness.plan.studies import expand, load_study

RATIO_BAR = 0.8  # final loss / floor (the loss of predicting nothing)
LIN_MARGIN = 5.0  # points of linear-probe top-1 over the random-init control


@pytest.mark.integration
def test_a_smoke_cell_learns_beyond_its_floor_and_its_control(tmp_path, recorder, run_stage_here):
    cells = expand(load_study("table3"), "smoke")
    cell = next(c for c in cells if c.setting == "square M=2")
    control = next(c for c in cells if c.control)
    pretraining = recorder()
    final = run_stage_here("pretrain", cell.config, tmp_path / "pretrain", pretraining)
    ratios = [m["loss_ratio"] for _, m in pretraining.logged]
    print(f"loss / floor per epoch: {[round(r, 3) for r in ratios]}")
    assert final["loss_ratio"] <= RATIO_BAR
    lin = run_stage_here("linprobe", cell.config, tmp_path / "linprobe", parent=tmp_path / "pretrain")
    lin_control = run_stage_here("linprobe", control.config, tmp_path / "control")
    print(f"LIN {lin['test_acc1']:.1f} vs random init {lin_control['test_acc1']:.1f}")
    assert lin["test_acc1"] >= lin_control["test_acc1"] + LIN_MARGIN
