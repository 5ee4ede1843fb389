"""The method registry: a method owns its settings and defaults; a run's signature is its
difference from the defaults, so a new field with a default renames no run."""
import subprocess
import sys

import pytest
import torch
from pydantic import create_model

from harness.core.config import deep_merge
from harness.core.stages import STAGES, PretrainConfig
from harness.science import methods
from harness.science.methods import signature
from harness.plan.studies import ConfigError, Study, expand, load_study

TOY = '''
"""A toy method: RandSAC on inputs with Gaussian noise of a set strength."""
from pydantic import Field

from harness.science.methods.base import Settings
from harness.science.methods.randsac import Method as RandSAC


class ToySettings(Settings):
    noise: float = Field(0.0, ge=0)  # std of the noise added to every input image


class Method(RandSAC):
    settings = ToySettings
    presets = {"tiny": {"toy": {"noise": 0.25}}}

    def loss(self, batch, epoch):
        import torch

        imgs, labels = batch
        self.noises = getattr(self, "noises", []) + [self.cfg.toy.noise]
        return super().loss((imgs + self.cfg.toy.noise * torch.randn_like(imgs), labels), epoch)
'''


def test_a_method_with_a_hyper_parameter_is_one_file_and_one_registry_line(tmp_path, monkeypatch, run_stage_here):
    (tmp_path / "toy_method.py").write_text(TOY)  # the file
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(methods.REGISTRY, "toy", "toy_method")  # the registry line
    study = Study(name="toy", table=99, caption="toy", datasets=["cifar10"],
                  base={"method": "toy", "segments": {"size": 2}}, metrics=["lin"])
    cell = expand(study, "tiny", controls=False)[0]
    assert cell.config.toy.noise == 0.25  # its own default at this scale
    assert expand(study, "smoke", controls=False)[0].config.toy.noise == 0.0  # its field's default
    louder = expand(study, "tiny", {"toy": {"noise": 0.5}}, controls=False)[0].config
    assert signature(louder, "pretrain") != signature(cell.config, "pretrain")
    assert signature(louder, "linprobe") != signature(cell.config, "linprobe")  # its parent differs
    with pytest.raises(ConfigError, match=r"toy.noise: Input should be greater than or equal to 0"):
        expand(study, "tiny", {"toy": {"noise": -1.0}}, controls=False)
    with pytest.raises(ConfigError, match=r"toy.volume: Extra inputs are not permitted"):
        expand(study, "tiny", {"toy": {"volume": 1}}, controls=False)
    # the segments check of the method it builds on still applies
    with pytest.raises(ConfigError, match="M=3 does not divide"):
        expand(study, "tiny", {"segments": {"size": 3}}, controls=False)
    cfg = methods.validate(deep_merge(cell.config.model_dump(), {"pretrain": {"epochs": 1}}))
    metrics = run_stage_here("pretrain", cfg, tmp_path / "run")
    assert torch.isfinite(torch.tensor(metrics["loss"]))


def test_a_new_config_field_with_a_default_renames_no_run(tiny_cfg):
    cfg = tiny_cfg()
    wider = create_model("Wider", __base__=PretrainConfig, label_noise=(float, 0.0))
    later = create_model("Later", __base__=type(cfg), pretrain=(wider, ...))  # the code, one field later
    same = later.model_validate(cfg.model_dump())
    assert [signature(same, s) for s in STAGES] == [signature(cfg, s) for s in STAGES]
    noisy = later.model_validate(deep_merge(cfg.model_dump(), {"pretrain": {"label_noise": 0.1}}))
    assert signature(noisy, "pretrain") != signature(cfg, "pretrain")
    assert signature(noisy, "finetune") != signature(cfg, "finetune")  # it reads another pre-training
    # a field set to its default is the run without it
    explicit = methods.validate(deep_merge(cfg.model_dump(), {"pretrain": {"min_lr": 0.0}}))
    assert signature(explicit, "pretrain") == signature(cfg, "pretrain")


def test_a_method_section_reaches_only_that_methods_cells():
    table7 = load_study("table7")
    before = {c.setting: c for c in expand(table7, "tiny", controls=False)}
    after = {c.setting: c for c in expand(table7, "tiny", {"dino": {"local_views": 4}}, controls=False)}
    assert after["DINO"].config.dino.local_views == 4
    assert after["DINO"].signature("pretrain") != before["DINO"].signature("pretrain")
    for setting in ("MAE (75% mask)", "RandSAC-Square 16->4", "Supervised"):
        stages = before[setting].stages(table7.metrics)
        assert [after[setting].signature(s) for s in stages] == [before[setting].signature(s) for s in stages]
        assert "dino" not in after[setting].config.model_dump()


def test_settings_of_an_unknown_method_are_refused():
    with pytest.raises(ValueError, match="unknown method 'byol'; methods are randsac, mae, dino"):
        methods.validate({**expand(load_study("table3"), "tiny")[0].config.model_dump(), "method": "byol"})


def test_planning_every_table_imports_no_torch():
    """Snakemake's plan and the launcher that waits on a job read methods' settings without torch."""
    code = ("import sys; from harness.workflow.plan import Plan; import harness.run.launch\n"
            "from harness.plan.studies import plan, load_study, available_studies\n"
            "for scale in ('tiny', 'smoke', 'paper'):\n"
            "    plan([load_study(n) for n in available_studies()], scale)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
