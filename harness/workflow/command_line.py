"""The snakemake command line, as the Snakefile reads it: its targets, whether it is a dry run,
and every --config on it (Snakemake itself keeps only the last)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.core.config import deep_merge
from harness.plan.studies import ConfigError


@dataclass(frozen=True)
class CommandLine:
    targets: list[str]
    dry_run: bool
    config_groups: list[list[str]]  # the KEY=VALUE words of each --config (-C), in order

    @classmethod
    def read(cls, argv: list[str]) -> "CommandLine":
        """Read with Snakemake's own argument parser, once; a usage error is Snakemake's to report."""
        from snakemake.cli import get_argument_parser

        try:
            args, _ = get_argument_parser().parse_known_args(argv)
        except SystemExit:
            return cls([], False, config_groups(argv))
        return cls(sorted(args.targets or []), bool(getattr(args, "dryrun", False)), config_groups(argv))

    def merged_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Snakemake's config with every --config merged in order (later values win, mappings key
        by key), so `--config 'pretrain={epochs: 20}' --config scale=tiny` means both. The last
        group is in `config` already, over the profile's configfile; it is merged again last so
        that it still wins over the groups before it."""
        groups = self.config_groups
        for words in groups[:-1]:
            config = deep_merge(config, parse_config_words(words))
        return deep_merge(config, parse_config_words(groups[-1])) if len(groups) > 1 else config


def config_groups(argv: list[str]) -> list[list[str]]:
    """The KEY=VALUE words of every --config (-C) on a command line, one list per occurrence."""
    groups, current = [], None
    for word in argv:
        if word in ("--config", "-C"):
            current = []
            groups.append(current)
        elif word.startswith("--config="):
            current = [word.split("=", 1)[1]]
            groups.append(current)
        elif word.startswith("-"):
            current = None
        elif current is not None:
            current.append(word)
    return groups


def parse_config_words(words: list[str]) -> dict[str, Any]:
    """--config's KEY=VALUE words as Snakemake reads them (values in YAML), or one line: a dotted
    key (pretrain.epochs=20) is refused with the form that works."""
    from snakemake.cli import parse_config

    for word in words:
        key, _, value = word.partition("=")
        if "." in key and "=" in word:
            *parents, leaf = key.split(".")
            form = "{" + leaf + ": " + value + "}"
            for part in reversed(parents[1:]):
                form = "{" + part + ": " + form + "}"
            raise ConfigError(f"--config {word}: a dotted key is not a config key; write it as '{parents[0]}={form}'")
    try:
        return parse_config(words)
    except ValueError as err:
        raise ConfigError(f"--config {' '.join(words)}: {err}") from None
