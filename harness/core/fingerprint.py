"""The code fingerprint of a stage run: a hash of the harness code that decides its numbers.

Which code. The static import closure of the stage's module (`harness.stages.<stage>`) and of
its method's module (`harness.science.methods.<method>`), read from their source: imports at a
module's top and inside its functions (a method imports its model when it trains), not those
under `if TYPE_CHECKING:` (annotations run nothing), and the packages on the way (Python runs
their `__init__`). The closure stops at what cannot change a number:

- the layers above the stages (`harness.run`: launching and tracking, `harness.plan`,
  `harness.report`) and the commands (`harness.status`, ...): a stage never imports them
  (tests/test_layers.py), and an edit there changes how a run is launched, logged or shown;
- `NOT_NUMBERS`, modules of the counted layers that only name things and places or draw.

The config's models (`harness.core.config`, `harness.core.stages`) count: their defaults are
values a run reads. A dynamic import (`importlib`) is not followed; the registry of methods
loads a method by name, and that method is an entry of the closure anyway.

How. Each module's source is parsed, its docstrings dropped, and its syntax tree written out
without positions, so that comments, docstrings and formatting do not count and any other edit
does; a hash of that per module, and one hash over the (module, hash) pairs: the fingerprint.
The package is a parameter (`root`, the `harness` folder): a job fingerprints the snapshot it
imports, `harness.status` the working tree.
"""
from __future__ import annotations

import ast
import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

COUNTED = ("core", "science", "stages")  # the layers whose code a stage run executes
NOT_NUMBERS = frozenset({
    "harness.core.layout",  # where files live
    "harness.core.files",  # how they are written
    "harness.core.errors",  # exception classes
    "harness.core.metrics",  # metric names (and the tables' not-learned threshold)
    "harness.science.drawing",  # the reconstruction picture, not a number
})
HASH_CHARS = 16


def package_root() -> Path:
    """The `harness` folder this process imported (a job's: its snapshot)."""
    import harness

    return Path(harness.__file__).resolve().parent


@dataclass(frozen=True)
class Fingerprint:
    """The hash of a stage run's code: `total` over `modules` (module name -> its hash)."""

    total: str
    modules: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, modules: dict[str, str]) -> "Fingerprint":
        blob = json.dumps(sorted(modules.items()), separators=(",", ":"))
        return cls(hashlib.sha256(blob.encode()).hexdigest()[:HASH_CHARS], dict(sorted(modules.items())))

    def changed(self, today: "Fingerprint") -> list[str]:
        """The modules edited, added to or dropped from the closure between this code and `today`'s."""
        names = sorted(set(self.modules) | set(today.modules))
        return [m for m in names if self.modules.get(m) != today.modules.get(m)]

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.total, "modules": self.modules}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Fingerprint":
        return cls(data["fingerprint"], dict(data.get("modules", {})))


def counted(module: str) -> bool:
    parts = module.split(".")
    if parts[0] != "harness" or module in NOT_NUMBERS:
        return False
    return len(parts) == 1 or parts[1] in COUNTED


def source(module: str, root: Path) -> Path | None:
    """The file of `module` under the package folder `root`, or None (not a harness module)."""
    base = root.joinpath(*module.split(".")[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(module: str, tree: ast.Module, root: Path) -> set[str]:
    """The harness modules `tree` (the source of `module`) imports, anywhere but under
    `if TYPE_CHECKING:`; `from package import name` is the submodule when `name` is one."""
    own = source(module, root)
    package = module if own is not None and own.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package `level` steps up
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names
                         if source(f"{base}.{alias.name}", root) is not None)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    out = set()
    for name in found:
        if name.split(".")[0] != "harness":
            continue
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))  # the packages on the way run too
    return {m for m in out if source(m, root) is not None}


def normalized(tree: ast.Module) -> str:
    """The syntax tree without docstrings and positions, as stable text: comments, docstrings
    and formatting are not in it; empty fields are left out, so that a Python release adding
    an empty field to a node does not change it."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:]

    def canonical(value: Any) -> Any:
        if isinstance(value, ast.AST):
            return [type(value).__name__,
                    {k: canonical(v) for k, v in ast.iter_fields(value) if v is not None and v != []}]
        if isinstance(value, list):
            return [canonical(v) for v in value]
        return [type(value).__name__, repr(value)]  # 1, 1.0 and True differ

    return json.dumps(canonical(tree), separators=(",", ":"))


@lru_cache(maxsize=1024)
def _parsed(text: str) -> tuple[str, ast.Module]:
    digest = hashlib.sha256(normalized(ast.parse(text)).encode()).hexdigest()[:HASH_CHARS]
    return digest, ast.parse(text)


def parsed(path: Path) -> tuple[str, ast.Module]:
    """(hash, syntax tree) of a module file, parsed once per content (status asks for the same
    modules for every run; a file edited since is parsed again)."""
    return _parsed(path.read_text())


@lru_cache(maxsize=1024)
def _imports_of(module: str, text: str, root: Path) -> frozenset[str]:
    """`imports` of one version of a module's source, found once."""
    return frozenset(imports(module, _parsed(text)[1], root))


def module_hash(path: Path) -> str:
    """The hash of one module's normalized syntax tree."""
    return parsed(path)[0]


def closure(entries: Iterable[str], root: Path | None = None) -> list[str]:
    """Every counted harness module that `entries` import, directly or not, themselves included."""
    root = Path(root or package_root())
    seen: set[str] = set()
    todo = [m for e in entries for m in _with_packages(e)]
    while todo:
        module = todo.pop()
        if module in seen or not counted(module):
            continue
        path = source(module, root)
        if path is None:
            raise ValueError(f"{module} is not a module of the package at {root}")
        seen.add(module)
        todo.extend(_imports_of(module, path.read_text(), root) - seen)
    return sorted(seen)


def _with_packages(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def fingerprint(entries: Iterable[str], root: Path | None = None) -> Fingerprint:
    """The fingerprint of the code that `entries` (module names) run, in the package at `root`
    (default: the one imported here)."""
    root = Path(root or package_root())
    return Fingerprint.of({m: module_hash(source(m, root)) for m in closure(entries, root)})


def git_state(path: Path | None = None) -> dict[str, Any]:
    """Where the code came from: the git commit of the tree holding the package folder `path`
    (default: the imported package), whether the package differs from that commit (tracked
    files changed, staged or not, or files neither tracked nor ignored), and a hash of that
    difference (the diff, the untracked files' names and bytes). Outside a git tree (a copy, a
    snapshot): commit "unknown", dirty and diff None."""
    path = Path(path or package_root())

    def git(*args: str) -> bytes:
        return subprocess.run(["git", *args], cwd=path, capture_output=True, timeout=30, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").decode().strip()
        diff = git("diff", "HEAD", "--binary", "--", ".")
        untracked = git("ls-files", "--others", "--exclude-standard", "-z", "--", ".").split(b"\0")
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None, "diff": None}
    h = hashlib.sha256(diff)
    for name in filter(None, untracked):
        h.update(b"\0" + name + b"\0" + (path / name.decode()).read_bytes())
    dirty = bool(diff) or any(untracked)
    return {"commit": commit, "dirty": dirty, "diff": h.hexdigest()[:HASH_CHARS] if dirty else None}


def recorded(result: dict[str, Any]) -> Fingerprint | None:
    """The fingerprint a run's result file (its content) recorded; None for a result written
    before runs recorded their code."""
    code = result.get("code")
    return Fingerprint.from_json(code) if code else None
