"""Seeds that mean what they say, and a study's names checked at planning: its claims, its
paper's numbers and its setting template, each mistake one line before anything runs."""
from pathlib import Path

import pytest
import yaml

from harness.plan.studies import ConfigError, expand, load_study
from harness.plan.table_plan import table_plan
from harness.workflow.jobs import mlflow_tags
from harness.workflow.plan import Plan
from harness.report.tables import collect

STUDIES = Path(__file__).resolve().parents[2] / "studies"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_seed_override_is_the_seed_of_every_cell_label_and_run_name(workdir):
    cells = expand(load_study("table3"), "tiny", {"seed": 1})
    assert {c.seed for c in cells} == {1} and {c.config.seed for c in cells} == {1}
    plan = Plan.from_snakemake_config({"scale": "tiny", "seed": 1}, ["table3"])
    names = [mlflow_tags(plan, sig, run.stage)["mlflow.runName"] for sig, run in plan.runs.items()]
    assert names and all(" · s1 · table3" in n for n in names)
    assert {c.seed for c in plan.table_plan("table3").cells} == {1}
    seeds1 = Plan.from_snakemake_config({"scale": "tiny", "seeds": [1]}, ["table3"])
    assert set(seeds1.runs) == set(plan.runs)  # seed=1 is seeds=[1]


@pytest.mark.parametrize("config, message", [
    ({"seeds": [0, 0]}, "seeds [0, 0] repeats 0: one seed is one run"),
    ({"seed": 1, "seeds": [0, 1]}, "seed=1 and seeds=[0, 1] both given: seed=N is seeds=[N]"),
])
def test_seeds_that_would_count_one_run_twice_are_refused(workdir, config, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Plan.from_snakemake_config({"scale": "tiny", **config}, ["table3"])


def test_a_table_never_counts_one_run_twice():
    study = load_study("table3")
    cells = [c for c in expand(study, "tiny") if not c.control]
    plan = table_plan(study, "tiny", cells + cells, "results")  # every cell asked twice
    runs = [{"signature": c.signature("linprobe"), "stage": "linprobe", "value": 50.0 + i, "ratio": None,
             "changed": ""} for i, c in enumerate(cells)]
    import pandas as pd

    long = collect(plan, pd.DataFrame(runs))
    lin = long[long.metric == "LIN"]
    assert list(lin["n"]) == [1, 1, 1] and list(lin["seeds"]) == [1, 1, 1] and lin["std"].isna().all()


def write_study(folder: Path, name: str, change) -> Path:
    raw = yaml.safe_load((STUDIES / f"{name}.yaml").read_text())
    change(raw)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


def _claim(raw, **fields):
    raw["claims"] = [{"source": "a sentence", **fields}]


@pytest.mark.parametrize("change, message", [
    (lambda r: _claim(r, setting="square M=3", better_than="square M=1"),
     "study table3, claim 1: no setting 'square M=3'; the study's settings are square M=1, square M=2, square M=4"),
    (lambda r: _claim(r, setting="square M=2", better_than="square M=1", metrics=["acc"]),
     "study table3, claim 1: metric 'acc' is not one the table reports (lin, ft)"),
    (lambda r: _claim(r, setting="square M=2", better_than="square M=1", datasets=["imagenet100"]),
     "study table3, claim 1: dataset 'imagenet100' is not one of the study's (cifar10)"),
    (lambda r: _claim(r, setting="square M={K}", better_than="square M=1", for_each="K"),
     "study table3, claim 1: for_each 'K' is not a factor of the study (M)"),
    (lambda r: _claim(r, setting="square M=2"), "a claim says better_than or no_better_than"),
    (lambda r: r["paper"]["cifar10"]["square M=2"].update(fT=91.0),
     "paper: cifar10: square M=2: metric 'fT' is not one the table reports (lin, ft)"),
    (lambda r: r["paper"]["cifar10"].update({"square M=3": {"lin": 80.0}}),
     "paper: cifar10: no cell 'square M=3'; the cells are square M=1, square M=2, square M=4"),
    (lambda r: r.update(setting="square M={m}"),
     "study table3: setting 'square M={m}' names {m}, which is not a factor; its factors are M"),
    (lambda r: r.update(seeds=[0, 1, 1]), "seeds [0, 1, 1] repeats 1"),
])
def test_a_study_naming_what_it_does_not_have_is_one_line(tmp_path, change, message):
    folder = write_study(tmp_path, "table3", change)
    with pytest.raises(ConfigError) as err:
        load_study("table3", folder)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_every_study_states_the_papers_claims():
    for name in [p.stem for p in STUDIES.glob("*.yaml")]:
        study = load_study(name)
        assert study.comparisons(), f"{name} states no claim"
        assert all(c.source for c in study.comparisons())


def test_the_default_data_root_is_data_in_the_repository(monkeypatch):
    from harness.core.config import default_data_root

    monkeypatch.delenv("RANDSAC_DATA", raising=False)
    assert Path(default_data_root()) == STUDIES.parent / "data"  # where README and harness.fetch put it


def test_every_config_of_a_command_line_counts_later_values_win(workdir):
    argv = ["--profile", "local", "table3", "--config", "pretrain={epochs: 3}", "scale=smoke", "-n",
            "--config", "scale=tiny", "seeds=[1]"]
    config = {"scale": "tiny", "seeds": [1]}  # what Snakemake passes: the last --config alone
    from harness.workflow import snakefile

    plan = snakefile.load(config, argv).plan
    once = Plan.from_snakemake_config({"scale": "tiny", "seeds": [1], "pretrain": {"epochs": 3}}, ["table3"])
    assert set(plan.runs) == set(once.runs) and plan.scale == "tiny"
    assert {r.config.pretrain.epochs for r in plan.runs.values()} == {3}


def test_a_dotted_key_is_refused_with_the_form_that_works():
    from harness.workflow.command_line import parse_config_words

    with pytest.raises(ConfigError, match=r"--config pretrain.epochs=20: a dotted key is not a config key; "
                                          r"write it as 'pretrain=\{epochs: 20\}'"):
        parse_config_words(["scale=tiny", "pretrain.epochs=20"])
    with pytest.raises(ConfigError, match=r"'model=\{x: \{y: 1\}\}'"):
        parse_config_words(["model.x.y=1"])


def test_two_studies_of_one_table_number_are_refused(tmp_path, workdir):
    folder = write_study(tmp_path / "studies", "table3", lambda r: None)
    write_study(folder, "table2", lambda r: r.update(table=3))
    with pytest.raises(ConfigError, match=r"table3.yaml and .*table2.yaml both say table: 3|"
                                          r"table2.yaml and .*table3.yaml both say table: 3"):
        Plan("tiny", {"kind": "local"}, {}, studies_dir=folder)


def test_status_into_a_closed_pipe_exits_quietly(workdir):
    import subprocess
    import sys

    # every table: more than one pipe buffer of lines, so status writes after head has gone
    out = subprocess.run(f"{sys.executable} -m harness.status all --config scale=tiny | head -1", shell=True,
                         capture_output=True, text=True, timeout=300, cwd=STUDIES.parent)
    assert out.returncode == 0 and out.stderr == "" and out.stdout.startswith("not started  table1")


def test_the_claims_target_comes_after_the_tables_asked_beside_it(workdir):
    alone = Plan.from_snakemake_config({"scale": "tiny"}, ["claims"])
    assert alone.claims_inputs() == []  # it reads what exists (params), and starts no run
    both = Plan.from_snakemake_config({"scale": "tiny"}, ["table3", "claims"])
    table3 = next(s for s in both.studies if s.name == "table3")
    assert set(both.table_files(table3)) <= set(both.claims_inputs())
    assert not any("table1" in f for f in both.claims_inputs())  # only the tables asked for
