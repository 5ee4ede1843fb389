"""What a command line asks to plan: the cells every table gets, and the studies its targets need."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness.core.stages import STAGES
from harness.plan.studies import STUDIES_DIR, ConfigError, available_studies, load_study, plan


class CellOptions(BaseModel):
    """Which cells every table gets: `seeds` (replaces each study's), `controls` (the random-init
    control beside the paper's cells)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seeds: list[int] | None = Field(None, min_length=1)
    controls: bool = True


def studies_for(targets: list[str], studies_dir: Path = STUDIES_DIR) -> list[str] | None:
    """Studies a command line needs planned: the ones it names; None (all) for `all`, for no
    target or for a file target. A bare word that names nothing is refused."""
    names = available_studies(studies_dir)
    rules = {"all", "claims", *STAGES}
    for target in targets:
        if "/" not in target and "." not in target and target not in names and target not in rules:
            raise ConfigError(f"unknown target {target!r}; targets are all, {', '.join(names)} "
                              f"(one per studies/*.yaml) and claims (the paper's claims over every table that has run)")
    if not targets or any(t not in names for t in targets):
        return None
    return list(targets)


def studies_of_files(files: list[str], scale: str, overrides: dict[str, Any], cells: CellOptions,
                     studies_dir: Path = STUDIES_DIR) -> list[str]:
    """The studies whose runs or tables the file targets are (results/runs/<sig>/<stage>.json,
    results/tables/<table>.<ext>): only those are planned, so an override that suits them is not
    refused for an unrelated table."""
    names = available_studies(studies_dir)
    tables = {Path(f).name.split(".")[0] for f in files if Path(f).parent.name == "tables"} & set(names)  # .plan.json
    signatures = {Path(f).parent.name for f in files if Path(f).parent.parent.name == "runs"}
    found, planned = set(tables), set()
    for name in names if signatures else []:
        try:
            runs = plan([load_study(name, studies_dir)], scale, overrides, seeds=cells.seeds, controls=cells.controls)
        except ConfigError:
            continue  # this table cannot be planned with these settings: it cannot hold the run either
        if signatures & set(runs):
            found.add(name)
            planned |= set(runs)
    unknown = signatures - planned
    if unknown or not found:
        raise ConfigError(f"no study plans {', '.join(sorted(unknown)) or ', '.join(files)} at scale {scale} with these "
                          f"settings; a run folder's name is the signature of its config (see its config.yaml)")
    return sorted(found, key=names.index)
