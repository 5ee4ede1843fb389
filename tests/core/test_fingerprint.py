"""The code fingerprint of a stage run: what counts as an edit, which modules a run's code is."""
import shutil
import textwrap
from pathlib import Path

import pytest

import harness
from harness.core.fingerprint import Fingerprint, closure, fingerprint, git_state, module_hash
from harness.science import methods

PACKAGE = Path(harness.__file__).resolve().parent
SQUARED, ABSOLUTE = "(pred - target).pow(2)", "(pred - target).abs()"  # RandSAC's loss, and an edit of it


@pytest.fixture
def package(tmp_path) -> Path:
    """A copy of this repository's package (tests never edit the real one)."""
    root = tmp_path / "src" / "harness"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_comments_docstrings_and_formatting_do_not_count_and_code_does(tmp_path):
    original = module_hash(write(tmp_path / "a.py", '''
        """A module."""
        def loss(x, y):
            """The loss."""
            return ((x - y) ** 2).mean()
        '''))
    reworded = module_hash(write(tmp_path / "b.py", '''
        """Another docstring, and a comment below."""
        # why: MAE's loss
        def loss(x,
                 y):  # formatting
            return ((x-y)**2).mean()
        '''))
    edited = module_hash(write(tmp_path / "c.py", '''
        """A module."""
        def loss(x, y):
            """The loss."""
            return abs(x - y).mean()
        '''))
    as_float = module_hash(write(tmp_path / "d.py", '''
        def loss(x, y):
            return ((x - y) ** 2.0).mean()
        '''))
    assert original == reworded
    assert len({original, edited, as_float}) == 3  # 2 and 2.0 are different code


def test_closure_follows_function_imports_not_type_checking_and_stops_at_the_upper_layers(tmp_path):
    root = tmp_path / "harness"
    write(root / "__init__.py", "")
    write(root / "core" / "__init__.py", "")
    write(root / "core" / "layout.py", "X = 1\n")  # names places: not counted
    write(root / "science" / "__init__.py", "")
    write(root / "science" / "loss.py", "def loss(): return 1\n")
    write(root / "science" / "hints.py", "class Hint: pass\n")
    write(root / "run" / "__init__.py", "")
    write(root / "run" / "tracking.py", "Y = 2\n")
    write(root / "stages" / "__init__.py", "")
    write(root / "stages" / "pretrain.py", '''
        from typing import TYPE_CHECKING
        from harness.core import layout
        from harness.run import tracking
        if TYPE_CHECKING:
            from harness.science.hints import Hint
        def run():
            from harness.science.loss import loss
            return loss()
        ''')
    assert closure(["harness.stages.pretrain"], root) == [
        "harness", "harness.core", "harness.science", "harness.science.loss", "harness.stages",
        "harness.stages.pretrain"]


def test_a_stage_run_closure_is_its_stage_and_method_not_the_tables():
    randsac = set(closure(["harness.stages.pretrain", methods.REGISTRY["randsac"]]))
    control = set(closure(["harness.stages.linprobe", methods.REGISTRY["random_init"]]))
    assert {"harness.science.model", "harness.science.pixel_loss", "harness.science.segments",
            "harness.science.masks", "harness.science.encoder", "harness.stages.engine",
            "harness.core.config"} <= randsac
    assert "harness.science.encoder" in control and "harness.stages.linprobe" in control
    assert not {"harness.science.model", "harness.science.pixel_loss", "harness.science.segments"} & control
    for modules in (randsac, control):
        assert not {m for m in modules if m.split(".")[1:2] in (["run"], ["plan"], ["report"])}
        assert not {"harness.status", "harness.core.layout", "harness.science.drawing"} & modules


def test_a_loss_edit_changes_exactly_that_module_of_randsac_and_nothing_of_the_control(package):
    before = {(m, s): methods.code_fingerprint(m, s, package)
              for m, s in [("randsac", "pretrain"), ("randsac", "linprobe"), ("random_init", "linprobe"),
                           ("random_init", "finetune"), ("mae", "pretrain")]}
    assert before[("randsac", "pretrain")] == methods.code_fingerprint("randsac", "pretrain")  # a copy is the same code
    loss = package / "science" / "pixel_loss.py"
    assert SQUARED in loss.read_text()
    loss.write_text(loss.read_text().replace(SQUARED, ABSOLUTE))
    after = {key: methods.code_fingerprint(*key, package) for key in before}
    assert before[("randsac", "pretrain")].changed(after[("randsac", "pretrain")]) == ["harness.science.pixel_loss"]
    assert before[("mae", "pretrain")].changed(after[("mae", "pretrain")]) == ["harness.science.pixel_loss"]
    assert after[("random_init", "linprobe")] == before[("random_init", "linprobe")]
    assert after[("random_init", "finetune")] == before[("random_init", "finetune")]


def test_a_comment_or_a_table_module_edit_changes_no_fingerprint(package):
    keys = [(m, s) for m in ("randsac", "random_init", "dino") for s in methods.method(m).stages]
    before = {key: methods.code_fingerprint(*key, package).total for key in keys}
    loss = package / "science" / "pixel_loss.py"
    loss.write_text("# a comment\n" + loss.read_text().replace('"""Pixels as', '"""Reworded: pixels as'))
    tables = package / "report" / "tables.py"
    tables.write_text(tables.read_text().replace('MISSING = "—"', 'MISSING = "-"'))
    assert {key: methods.code_fingerprint(*key, package).total for key in keys} == before


def test_fingerprint_round_trips_and_names_added_and_dropped_modules():
    old = Fingerprint.of({"harness.a": "1", "harness.b": "2"})
    new = Fingerprint.of({"harness.a": "1", "harness.c": "3"})
    assert Fingerprint.from_json(old.to_json()) == old
    assert old.changed(new) == ["harness.b", "harness.c"] and old.changed(old) == []
    assert old.total != new.total and fingerprint(["harness.core.config"]).modules["harness.core.config"]


def test_git_state_of_a_tree_git_does_not_know(package):
    assert git_state(package) == {"commit": "unknown", "dirty": None, "diff": None}
    here = git_state(PACKAGE)
    assert len(here["commit"]) == 40 and isinstance(here["dirty"], bool)
