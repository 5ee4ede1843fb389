"""What `results/` holds that nothing asks for any more, and removing it when asked:

    python -m harness.status --clean                     # list it, with sizes; deletes nothing
    python -m harness.status --clean --delete            # delete it (and mark its MLflow runs deleted)

Kept, always: every run the command's plan holds (its targets, default all, with its --config:
pass the settings you run with, `seeds=[0, 1, 2]` included), every run a table plan in
results/tables names (what a table last showed), the pre-training every kept evaluation reads,
and every run that is running or queued. Listed:

- run folders no kept run is (an override tried once, a study's cell edited away, a seed dropped);
- `superseded-*` folders of kept runs (older results kept when `rerun=stale` redid a run);
- code snapshots (results/code/<hash>) that no kept run folder names, unused for a day.

Deleting marks each deleted folder's MLflow run (and a superseded folder's) deleted in the store,
which keeps it restorable (`mlflow gc` empties it for good).
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from harness.core.layout import Results, RunFolder
from harness.plan.table_plan import TablePlan


CODE_MIN_AGE_S = 86400  # as harness.run.snapshot.prune


@dataclass(frozen=True)
class Item:
    path: Path
    kind: str  # "run", "superseded", "code"
    why: str
    size: int
    mlflow_run_id: str = ""


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) if path.is_dir() \
        else path.stat().st_size


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def tabled(results: Results) -> set[str]:
    """Every signature a table plan in results/tables names (the runs a table shows, and their controls)."""
    found = set()
    for path in results.tables.glob("*.plan.json") if results.tables.exists() else []:
        try:
            found |= {sig for _, sig in TablePlan.read(path).inputs()}
        except ValueError:  # a plan file of another format: the table rule writes it anew
            continue
    return found


def parent_of(run: RunFolder) -> str | None:
    """The pre-training run an evaluation run reads, from its config.yaml."""
    import yaml

    if not run.config.exists():
        return None
    stage_config = (yaml.safe_load(run.config.read_text()) or {}).get("stage_config") or {}
    return stage_config.get("parent")


def unplanned(results: Results, planned: set[str], live: set[str]) -> list[Item]:
    """What no plan, table or live job asks for (see the module's docstring)."""
    from harness.run.snapshot import referrers

    runs_dir = results.root / "runs"
    folders = {p.name: RunFolder(p) for p in sorted(runs_dir.iterdir()) if p.is_dir()} if runs_dir.exists() else {}
    kept = (planned | tabled(results) | live) & set(folders)
    for sig in list(kept):  # the pre-training a kept evaluation reads
        parent = parent_of(folders[sig])
        if parent in folders:
            kept.add(parent)
    items = []
    for sig, run in folders.items():
        if sig in kept:
            for old in run.superseded():
                items.append(Item(old, "superseded", "older results of a kept run (rerun=stale)", size_of(old),
                                  _run_id(old / "mlflow_run_id")))
            continue
        items.append(Item(run.path, "run", "no study, table or live job asks for it", size_of(run.path),
                          _run_id(run.mlflow_run_id)))
    named = {h for h, refs in referrers(results).items() if any(r.signature in kept for r in refs)}
    for code in sorted(results.code.glob("*")) if results.code.exists() else []:
        # a launcher takes a snapshot a moment before its run folder names it: only those unused a day
        if code.is_dir() and code.name not in named and time.time() - code.stat().st_mtime > CODE_MIN_AGE_S:
            items.append(Item(code, "code", "a code snapshot no kept run names", size_of(code)))
    return items


def _run_id(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def report(items: list[Item]) -> list[str]:
    lines = [f"{human(i.size):>9}  {i.kind:<10}  {i.path}  ({i.why})" for i in items]
    total = sum(i.size for i in items)
    return lines + [f"[harness] clean: {len(items)} item(s), {human(total)} no study, table or live job asks for"
                    + ("; delete them with --clean --delete" if items else "")]


def delete(items: list[Item], store_uri: str | None, results: Results) -> list[str]:
    """Delete the items; mark their MLflow runs deleted when the store answers. Returns what it says."""
    said = []
    ids = [i.mlflow_run_id for i in items if i.mlflow_run_id]
    if ids:
        said.append(_delete_mlflow_runs(ids, store_uri, results))
    for item in items:
        if item.path.is_dir():
            shutil.rmtree(item.path)
        else:
            item.path.unlink(missing_ok=True)
        said.append(f"deleted {item.path}")
    return said


def _delete_mlflow_runs(ids: list[str], store_uri: str | None, results: Results) -> str:
    from harness.run.tracking import Store

    try:
        client = Store.of(results, store_uri).client()
        for run_id in ids:
            try:
                client.delete_run(run_id)
            except Exception as err:  # noqa: BLE001 - a run the store does not have is no error here
                if "not found" not in str(err).lower() and "does not exist" not in str(err).lower():
                    raise
        return f"[harness] clean: {len(ids)} MLflow run(s) marked deleted ({json.dumps(ids[:3])[1:-1]}...)"
    except Exception as err:  # noqa: BLE001 - the files go anyway; the store says what it could not
        return f"[harness] clean: the MLflow runs were not marked deleted ({str(err).splitlines()[0][:200]})"
