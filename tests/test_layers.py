"""The package's folders are its layers: each imports only the layers below it, and no module
imports one that imports it back (function-level imports included)."""
import ast
from pathlib import Path

import harness

PACKAGE = Path(harness.__file__).parent
LAYERS = ["core", "science", "plan", "stages", "run", "report", "workflow"]  # bottom to top; top-level modules: commands


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every harness module `path` imports, at its top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("harness")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            for alias in node.names:  # `from harness.science import methods` imports a module
                sub = f"{node.module}.{alias.name}"
                out.add(sub if (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                        or (PACKAGE.parent / sub.replace(".", "/")).is_dir() else node.module)
    return out


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else len(LAYERS)


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_every_module_lives_in_a_layer_or_is_a_command():
    commands = sorted(m for m in GRAPH if m.count(".") == 1 and m.split(".")[1] not in LAYERS)
    assert commands == ["harness.fetch", "harness.migrate", "harness.pictures", "harness.serve", "harness.status",
                        "harness.tune"]
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(LAYERS)


def test_no_layer_imports_a_layer_above_it():
    upward = [(m, i) for m, deps in GRAPH.items() for i in deps
              if layer(i) > layer(m) and not (i == "harness" or m == "harness")]
    assert upward == []


def test_no_import_cycle():
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for dep in GRAPH.get(todo.pop(), ()):
                if dep not in seen and dep != start.rsplit(".", 1)[0]:  # a module may name its own package
                    seen.add(dep)
                    todo.append(dep)
        return seen

    cycles = sorted(m for m in GRAPH if m in reach(m))
    assert cycles == []
