"""The stage declarations are the one stage list: everything that lists stages derives from them."""
import importlib

import pytest

from harness.core import metrics as names
from harness.core.config import RunConfig
from harness.core.stages import BY_METRIC, DECLARED, EVALUATIONS, STAGES, declared
from harness.science import methods
from harness.plan.studies import Study


def test_every_stage_list_is_derived_from_the_declarations():
    assert STAGES == tuple(s.name for s in DECLARED)
    for stage in DECLARED:  # a config section of its declared model, and a module that runs it
        assert RunConfig.model_fields[stage.name].annotation is stage.config
        assert callable(importlib.import_module(stage.module).run)
    assert names.TABLE_METRIC_STAGE == {s.metric: s.name for s in DECLARED if s.metric}
    assert names.TABLE_METRIC_NAME == {s.metric: s.label for s in DECLARED if s.metric}
    assert methods.method("randsac").stages == STAGES
    assert methods.method("random_init").stages == EVALUATIONS == tuple(s.name for s in BY_METRIC.values())


def test_a_study_asks_only_for_declared_metrics():
    Study(name="t", table=1, caption="c", datasets=["cifar10"], metrics=list(BY_METRIC))
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['knn'\]; the stages report lin, ft"):
        Study(name="t", table=1, caption="c", datasets=["cifar10"], metrics=["knn"])


def test_an_unknown_stage_is_named():
    with pytest.raises(ValueError, match="unknown stage 'knn'; stages are pretrain, linprobe, finetune"):
        declared("knn")
