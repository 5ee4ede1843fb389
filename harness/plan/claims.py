"""The paper's claims a study states: which setting beats which, from which sentence of the paper.

In a study file:

    claims:
      - setting: square M=2                    # the setting the paper favours (or a list of them)
        better_than: [square M=1, square M=4]  # or no_better_than: a claim of no gain
        source: "Table 3: ..."                 # the paper's sentence (or table) it comes from
        metrics: [lin]                         # default: the study's metrics
        datasets: [cifar10]                    # default: the study's datasets
      - for_each: K                            # one comparison per value of factor K:
        setting: "blob K={K}"                  # the names are templates over it
        better_than: "shuffled K={K}"

A list on either side makes one comparison per pair. `better_than` says the setting's number is
higher; `no_better_than` says it is not (Table 9: "a different patch size P does not lead to
improved representation"). The other side may name another method's published number
(`reported:`, Table 8): that comparison is against a fixed value, not paired runs.

`comparisons` expands a study's claims into the comparisons its table checks
(harness.report.claims), and refuses, in one line, a claim naming a setting, metric, dataset
or factor the study does not have.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

BETTER, NO_BETTER = "better", "no_better"
SYMBOL = {BETTER: ">", NO_BETTER: "≯"}  # how a comparison reads: "square M=2 > square M=1"


def _listed(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


class Claim(BaseModel):
    """One claim of the paper about a study's settings, as written in the study file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    setting: str | list[str]
    better_than: str | list[str] | None = None
    no_better_than: str | list[str] | None = None
    source: str
    metrics: list[str] | None = None
    datasets: list[str] | None = None
    for_each: str | None = None

    @model_validator(mode="after")
    def _one_relation(self) -> "Claim":
        if (self.better_than is None) == (self.no_better_than is None):
            raise ValueError("a claim says better_than or no_better_than (one of them)")
        return self

    @property
    def relation(self) -> str:
        return BETTER if self.better_than is not None else NO_BETTER

    def pairs(self) -> list[tuple[str, str]]:
        """(setting, other) of every comparison, before for_each fills the templates."""
        others = _listed(self.better_than if self.relation == BETTER else self.no_better_than)
        return [(s, o) for s in _listed(self.setting) for o in others]


class Comparison(BaseModel):
    """One comparison a table checks: `setting` against `other`, on the given datasets and metrics."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    claim: int  # 1-based index of the claim in the study file
    setting: str
    other: str
    relation: Literal["better", "no_better"]
    metrics: list[str]
    datasets: list[str]
    source: str

    @property
    def statement(self) -> str:
        return f"{self.setting} {SYMBOL[self.relation]} {self.other}"


def comparisons(name: str, claims: list[Claim], settings: list[str], factor_values: dict[str, list],
                metrics: list[str], datasets: list[str], reported: dict[str, dict]) -> list[Comparison]:
    """Every comparison of a study's claims. `settings`: the study's setting names; `factor_values`:
    factor -> the values its setting template takes; `reported`: dataset -> other methods'
    published numbers. Raises ValueError, one line, for a name the study does not have."""
    out = []
    for i, claim in enumerate(claims, 1):
        where = f"study {name}, claim {i}"
        for metric in claim.metrics or []:
            if metric not in metrics:
                raise ValueError(f"{where}: metric {metric!r} is not one the table reports ({', '.join(metrics)})")
        for dataset in claim.datasets or []:
            if dataset not in datasets:
                raise ValueError(f"{where}: dataset {dataset!r} is not one of the study's ({', '.join(datasets)})")
        if claim.for_each is not None and claim.for_each not in factor_values:
            raise ValueError(f"{where}: for_each {claim.for_each!r} is not a factor of the study "
                             f"({', '.join(factor_values) or 'it has none'})")
        values = factor_values[claim.for_each] if claim.for_each else [None]
        for value in values:
            for setting, other in claim.pairs():
                if claim.for_each:
                    try:
                        setting, other = (s.format(**{claim.for_each: value}) for s in (setting, other))
                    except (KeyError, IndexError) as err:
                        raise ValueError(f"{where}: {{{err.args[0]}}} in a setting name is not its for_each "
                                         f"factor {{{claim.for_each}}}") from None
                known = set(settings) | {s for numbers in reported.values() for s in numbers}
                for named in (setting, other):
                    if named not in known:
                        raise ValueError(f"{where}: no setting {named!r}; the study's settings are "
                                         f"{', '.join(settings)}")
                if setting not in settings:
                    raise ValueError(f"{where}: {setting!r} is another method's reported number; a claim's "
                                     f"setting must be one the table runs")
                out.append(Comparison(claim=i, setting=setting, other=other, relation=claim.relation,
                                      metrics=claim.metrics or list(metrics), datasets=claim.datasets or list(datasets),
                                      source=claim.source))
    return out
