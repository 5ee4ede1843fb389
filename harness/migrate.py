"""Rename the run folders of a results/ made before signatures hashed differences from defaults.

    python -m harness.migrate [results]          # what it would rename, nothing changed
    python -m harness.migrate [results] --apply  # rename, and rewrite what names a signature

Until 2026-12 a run's signature hashed whole config sections, and the method settings lived in
the shared config (`pretrain.mask_ratio`, a `dino` section in every run). Now a signature
hashes what the stage reads as its difference from the defaults, and a method's settings are a
section named after it (`mae.mask_ratio`). This maps every finished or stopped run folder of
the old form to its new signature, once: it renames the folder, rewrites its config.yaml and
result file, the `signature` / `parent` tags of its MLflow run and the signatures column of the
tables' CSV files, so a finished run is not redone. Run it with no workflow running. A folder already named by the new rule is left alone.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.core.files import write_json_atomic, write_text_atomic
from harness.core.layout import Results, RunFolder
from harness.core.stages import PRETRAIN
from harness.science import methods


def legacy_signature(stage_config: dict[str, Any]) -> str:
    """The old rule: the hash of the whole sections a stage read (config.yaml's `stage_config`)."""
    blob = json.dumps(stage_config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def translate(old: dict[str, Any]) -> dict[str, Any]:
    """An old resolved config in today's form: MAE's mask ratio in its own section. Other
    methods' sections (the `dino` section every old run carried) are dropped by validation."""
    new = copy.deepcopy(old)
    ratio = new.get(PRETRAIN, {}).pop("mask_ratio", None)
    if new.get("method") == "mae" and ratio is not None:
        new.setdefault("mae", {})["mask_ratio"] = ratio
    return new


@dataclass(frozen=True)
class Move:
    old: str
    new: str
    stage: str
    config: Any  # the validated RunConfig


def plan_moves(results: Results) -> tuple[list[Move], list[str]]:
    """(the folders to rename, one line per folder left alone and why)."""
    moves, notes = [], []
    for path in sorted((results.root / "runs").glob("*/config.yaml")):
        run = RunFolder(path.parent)
        saved = yaml.safe_load(path.read_text())
        stage = saved["stage_config"]["stage"]
        cfg = methods.validate(translate(saved["config"]))
        new = methods.signature(cfg, stage)
        if new == run.signature:
            continue
        if legacy_signature(saved["stage_config"]) != run.signature:
            notes.append(f"{run.signature}: its name is neither the old nor the new signature of its config; left alone")
        elif results.run(new).path.exists():
            notes.append(f"{run.signature} -> {new}: {new} exists already; left alone")
        else:
            moves.append(Move(run.signature, new, stage, cfg))
    return moves, notes


def apply(results: Results, moves: list[Move], tracking_uri: str | None = None) -> None:
    """Rename each folder, rewrite its config.yaml and result file, retag its MLflow run."""
    renamed = {m.old: m.new for m in moves}
    client = None
    for move in moves:
        old, run = results.run(move.old), results.run(move.new)
        old.path.rename(run.path)
        run.write_config(methods.stage_config(move.config, move.stage), move.config.model_dump(mode="json"))
        parent = methods.stage_config(move.config, move.stage).get("parent")
        tags = {"signature": move.new, **({"parent": parent} if parent else {})}
        result = run.result(move.stage)
        if result.exists():
            done, when = json.loads(result.read_text()), result.stat()
            done["signature"] = move.new
            done.setdefault("tags", {}).update({k: v for k, v in tags.items() if k in done.get("tags", {})})
            write_json_atomic(result, done)
            os.utime(result, ns=(when.st_atime_ns, when.st_mtime_ns))  # Snakemake compares their ages
        if run.mlflow_run_id.exists():
            client = client or _client(results, tracking_uri)
            if client is not None:
                run_id = run.mlflow_run_id.read_text().strip()
                for key, value in tags.items():
                    client.set_tag(run_id, key, value)
                client.set_tag(run_id, "migrated_from", move.old)
    for table in sorted(results.tables.glob("*.csv")):  # the signatures column names the runs
        old = table.read_text()
        new = re.sub(r"\b[0-9a-f]{12}\b", lambda m: renamed.get(m.group(), m.group()), old)
        if new != old:
            write_text_atomic(table, new)
    log = results.root / "migrations.jsonl"
    with log.open("a") as f:
        f.write(json.dumps({"renamed": renamed}) + "\n")


def _client(results: Results, tracking_uri: str | None):
    """The run's tracking store, or None where there is none (a copied results/ without it)."""
    from harness.run.tracking import Store

    store = Store.of(results, tracking_uri)
    if store.uri.startswith("sqlite:") and not results.mlflow_db.exists():
        return None
    return store.client()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.migrate", description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", type=Path, default=Path("results"))
    ap.add_argument("--apply", action="store_true", help="rename (without it: only say what would be renamed)")
    ap.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else the results' sqlite store")
    args = ap.parse_args(argv)
    results = Results(args.results)
    moves, notes = plan_moves(results)
    for move in moves:
        print(f"{move.stage:9s} {move.old} -> {move.new}")
    for note in notes:
        print(note)
    if args.apply and moves:
        apply(results, moves, args.tracking_uri)
        print(f"[harness] renamed {len(moves)} run folder(s); the map is in {results.root / 'migrations.jsonl'}")
    elif moves:
        print(f"[harness] {len(moves)} run folder(s) to rename: run again with --apply")
    else:
        print("[harness] nothing to rename")
    return 0


if __name__ == "__main__":
    sys.exit(main())
