"""Code snapshots: content addressed, reused, written whole, imported by the job first."""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.layout import Results
from harness.run import snapshot
from harness.run.snapshot import CodeMismatch, code_hash, package_files, take


def make_package(root: Path, version: str = "1") -> Path:
    """A small package named harness: modules, a subpackage and package data."""
    pkg = root / "harness"
    (pkg / "core").mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"VERSION = {version!r}\n")
    (pkg / "core" / "__init__.py").write_text("")
    (pkg / "core" / "loss.py").write_text("def loss(a, b):\n    return (a - b) ** 2\n")
    (pkg / "core" / "classes.txt").write_text("n01440764\nn01443537\n")
    return pkg


def test_the_hash_is_of_paths_and_bytes_only(tmp_path):
    pkg = make_package(tmp_path / "a")
    h = code_hash(package_files(pkg))
    assert len(h) == snapshot.HASH_CHARS
    assert code_hash(package_files(make_package(tmp_path / "b"))) == h  # another folder, same code
    os.utime(pkg / "core" / "loss.py", (0, 0))
    assert code_hash(package_files(pkg)) == h  # times do not count
    (pkg / "core" / "loss.py").write_text("def loss(a, b):\n    return abs(a - b)\n")
    assert code_hash(package_files(pkg)) != h
    moved = make_package(tmp_path / "c")
    (moved / "core" / "loss.py").rename(moved / "core" / "losses.py")  # same bytes, another path
    assert code_hash(package_files(moved)) not in (h, code_hash(package_files(pkg)))
    data = make_package(tmp_path / "d")
    (data / "core" / "classes.txt").write_text("n01440764\n")  # package data counts too
    assert code_hash(package_files(data)) != h


def test_byte_code_and_hidden_files_are_not_the_code(tmp_path):
    pkg = make_package(tmp_path)
    h = code_hash(package_files(pkg))
    (pkg / "core" / "__pycache__").mkdir()
    (pkg / "core" / "__pycache__" / "loss.cpython-311.pyc").write_bytes(b"\x00" * 16)
    (pkg / "core" / "stray.pyc").write_bytes(b"\x00")
    (pkg / "core" / ".loss.py.swp").write_bytes(b"swap")
    assert code_hash(package_files(pkg)) == h
    snap = take(tmp_path / "code", pkg)
    files = [p for p in snap.root.rglob("*") if p.is_file()]
    copied = sorted(p.relative_to(snap.root).as_posix() for p in files if "__pycache__" not in p.parts)
    assert copied == ["harness/__init__.py", "harness/core/__init__.py", "harness/core/classes.txt",
                      "harness/core/loss.py"]
    # its own byte code, compiled from what was copied (a job does not write it), read-only like the rest
    compiled = sorted(p.relative_to(snap.root).as_posix() for p in files if "__pycache__" in p.parts)
    tag = sys.implementation.cache_tag
    assert compiled == [f"harness/__pycache__/__init__.{tag}.pyc", f"harness/core/__pycache__/__init__.{tag}.pyc",
                        f"harness/core/__pycache__/loss.{tag}.pyc"]
    loss = snap.root / "harness" / "core" / "__pycache__" / f"loss.{tag}.pyc"
    assert loss.read_bytes() != b"\x00" * 16 and all(p.stat().st_mode & 0o222 == 0 for p in files)


def test_a_snapshot_is_named_by_its_code_reused_and_never_rewritten(tmp_path):
    pkg = make_package(tmp_path / "src")
    first = take(tmp_path / "code", pkg)
    assert first.hash == code_hash(package_files(pkg)) and first.exists()
    assert (first.package / "core" / "loss.py").read_bytes() == (pkg / "core" / "loss.py").read_bytes()
    assert not os.access(first.package / "core" / "loss.py", os.W_OK) or os.geteuid() == 0  # read-only
    inode = (first.package / "core" / "loss.py").stat().st_ino
    assert take(tmp_path / "code", pkg) == first  # the same code: the same snapshot, untouched
    assert (first.package / "core" / "loss.py").stat().st_ino == inode
    (pkg / "core" / "loss.py").write_text("def loss(a, b):\n    return abs(a - b)\n")
    second = take(tmp_path / "code", pkg)
    assert second.hash != first.hash and "abs" in (second.package / "core" / "loss.py").read_text()
    assert "** 2" in (first.package / "core" / "loss.py").read_text()  # the old one is kept as it was
    assert sorted(p.name for p in (tmp_path / "code").iterdir()) == sorted([first.hash, second.hash])


def test_an_interrupted_snapshot_leaves_nothing_half_written(tmp_path, monkeypatch):
    pkg = make_package(tmp_path / "src")
    real, written = Path.write_bytes, []

    def fail_on_third(self, data):
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(self)
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", fail_on_third)
    with pytest.raises(OSError, match="No space left"):
        take(tmp_path / "code", pkg)
    assert list((tmp_path / "code").iterdir()) == []  # no snapshot, no temporary folder
    monkeypatch.setattr(Path, "write_bytes", real)
    assert take(tmp_path / "code", pkg).exists()


def test_two_launchers_taking_the_same_code_at_once_share_one_snapshot(tmp_path, monkeypatch):
    """The other launcher's rename lands first: this one's copy is dropped, its snapshot used."""
    pkg = make_package(tmp_path / "src")
    theirs, rename = take(tmp_path / "other", pkg), os.rename

    def other_first(src, dst):
        rename(theirs.root, dst)  # the other launcher's whole snapshot lands first
        rename(src, dst)  # raises: the folder is there, not empty

    monkeypatch.setattr(snapshot.os, "rename", other_first)
    snap = take(tmp_path / "code", pkg)
    assert snap.exists() and [p.name for p in (tmp_path / "code").iterdir()] == [snap.hash]


def test_the_job_python_imports_the_snapshot_before_the_source_tree_and_the_editable_install(tmp_path):
    """The job's working directory may be the repository root, which has today's `harness/`,
    and the editable install resolves `harness` to the source tree: the snapshot wins over both."""
    pkg = make_package(tmp_path / "src", version="old")
    snap = take(tmp_path / "code", pkg)
    (pkg / "__init__.py").write_text("VERSION = 'edited'\n")
    cmd = [*shlex.split(snap.python()), "-c", "import harness; print(harness.VERSION, harness.__file__)"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(cmd, cwd=pkg.parent, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["old", str(snap.package / "__init__.py")]


def test_a_run_without_checkpoint_takes_todays_code_and_records_it(tmp_path):
    pkg, results = make_package(tmp_path / "src"), Results(tmp_path / "results")
    run = results.run("abc123")
    snap, today = snapshot.for_run(run, "pretrain", results, pkg)
    assert snap.hash == today == code_hash(package_files(pkg)) and snap.root.parent == results.code
    rec = json.loads(run.code.read_text())
    assert rec["snapshot"] == snap.hash and rec["stage"] == "pretrain" and rec["source"] == str(pkg)


def test_a_run_with_a_checkpoint_resumes_with_the_code_that_wrote_it(tmp_path):
    pkg, results = make_package(tmp_path / "src"), Results(tmp_path / "results")
    run = results.run("abc123")
    old, _ = snapshot.for_run(run, "pretrain", results, pkg)
    run.checkpoint.write_bytes(b"epoch 3")
    (pkg / "core" / "loss.py").write_text("def loss(a, b):\n    return abs(a - b)\n")
    snap, today = snapshot.for_run(run, "pretrain", results, pkg)
    assert snap == old and today != old.hash
    assert json.loads(run.code.read_text())["snapshot"] == old.hash
    assert not (results.code / today).exists()  # today's code is not snapshotted for nothing


@pytest.mark.parametrize("case", ["snapshot deleted", "checkpoint before snapshots"])
def test_a_checkpoint_whose_code_is_unknown_is_refused_in_one_line(tmp_path, case):
    pkg, results = make_package(tmp_path / "src"), Results(tmp_path / "results")
    run = results.run("abc123")
    old, today = snapshot.for_run(run, "pretrain", results, pkg)
    run.checkpoint.write_bytes(b"epoch 3")
    if case == "snapshot deleted":
        snapshot.shutil.rmtree(old.root)
    else:
        run.code.unlink()
    with pytest.raises(CodeMismatch) as err:
        snapshot.for_run(run, "pretrain", results, pkg)
    line = str(err.value)
    assert "\n" not in line and "mix two versions" in line and f"delete (or move aside) {run.checkpoint}" in line
    assert (f"snapshot {old.hash}, which is gone" in line) if case == "snapshot deleted" else "kept no snapshot" in line
    assert f"today's code (snapshot {today})" in line
    assert run.checkpoint.exists()  # the user decides: nothing is thrown away


def test_a_job_refuses_code_other_than_its_snapshot_and_a_checkpoint_of_other_code(tmp_path, monkeypatch):
    pkg, results = make_package(tmp_path / "src"), Results(tmp_path / "results")
    run = results.run("abc123")
    snap, _ = snapshot.for_run(run, "pretrain", results, pkg)
    with pytest.raises(CodeMismatch, match=f"imports harness from .*, not from its snapshot {snap.package}"):
        snapshot.check_job(snap.hash, run, results)  # this process imports the source tree
    monkeypatch.setattr(snapshot, "source_package", lambda: snap.package.resolve())  # as a job of it does
    assert snapshot.check_job(snap.hash, run, results) == snap
    run.checkpoint.write_bytes(b"epoch 3")
    assert snapshot.check_job(snap.hash, run, results) == snap
    (pkg / "core" / "loss.py").write_text("x = 1\n")
    other = take(results.code, pkg)
    monkeypatch.setattr(snapshot, "source_package", lambda: other.package.resolve())
    with pytest.raises(CodeMismatch, match=f"written by snapshot {snap.hash}, this job runs snapshot {other.hash}"):
        snapshot.check_job(other.hash, run, results)


def test_prune_removes_only_the_snapshots_no_run_names(tmp_path, capsys):
    pkg, results = make_package(tmp_path / "src"), Results(tmp_path / "results")
    kept, _ = snapshot.for_run(results.run("aaa"), "pretrain", results, pkg)
    (pkg / "core" / "loss.py").write_text("x = 1\n")
    orphan = take(results.code, pkg)
    assert snapshot.referrers(results) == {kept.hash: [results.run("aaa")], orphan.hash: []} or \
        snapshot.referrers(results) == {orphan.hash: [], kept.hash: [results.run("aaa")]}
    assert snapshot.main([str(results.root)]) == 0
    assert f"{kept.hash}: 1 run(s) aaa" in capsys.readouterr().out
    assert snapshot.prune(results) == []  # just taken: a launcher may be about to name it
    for snap in (kept, orphan):
        os.utime(snap.root, (0, 0))
    assert snapshot.prune(results) == [orphan.root]
    assert kept.exists() and not orphan.root.exists()
    take(results.code, pkg)  # the orphan's code taken again
    results.run("aaa").code.unlink()  # now no run names either
    for snap in (kept, orphan):
        os.utime(snap.root, (0, 0))
    take(results.code, make_package(tmp_path / "again"))  # the kept one's code reused: marked used
    assert snapshot.prune(results, min_age_s=3600) == [orphan.root] and kept.exists()


def test_the_record_keeps_the_git_state_of_the_source_at_submission(tmp_path):
    """The job runs later, when the tree may have moved on: the commit is the one submitted."""
    pkg, results = make_package(tmp_path / "src"), Results(tmp_path / "results")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(pkg.parent)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    first = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    run = results.run("abc123")
    snapshot.for_run(run, "pretrain", results, pkg)
    (pkg / "core" / "loss.py").write_text("x = 1\n")
    subprocess.run([*git, "commit", "-q", "-am", "two"], check=True)
    assert json.loads(run.code.read_text())["git"] == {"commit": first, "dirty": False, "diff": None}
