"""The layers of ddnn, lowest first: a module may import its own layer or a lower one, never a higher
one, and no chain of imports may come back to where it started.

`python -m ddnn.layers` checks the package's import graph (every `import` and `from ... import`, at
the top of a module or inside a function) and prints each import that points up or closes a circle,
as file:line; tests/test_layers.py runs the same check.
"""

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

# (layer, the modules in it: a package name covers its sub-modules); the order is the rule.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("ddnn.errors", "ddnn.registry", "ddnn.checkpoint", "ddnn.run_files", "ddnn.text",
                    "ddnn.files", "ddnn.layers", "ddnn.runtime")),
    ("config", ("ddnn.config",)),
    ("data", ("ddnn.data",)),
    ("models", ("ddnn.models",)),
    ("losses", ("ddnn.losses",)),
    ("methods", ("ddnn.methods",)),
    ("engine", ("ddnn.engine",)),
    ("deploy", ("ddnn.deploy", "ddnn.deploy.serve")),  # serve: the HTTP server (`ddnn serve`), named for the record
    ("experiments", ("ddnn.experiments",)),
    ("cli", ("ddnn.cli", "ddnn.__main__", "ddnn.launch", "ddnn")),  # `ddnn` itself: the package's public names
)


@dataclass(frozen=True)
class Import:
    """One import statement's target, as a module of the package."""

    source: str  # the importing module
    target: str
    file: Path
    line: int

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def layer_of(module: str) -> int:
    """The rank of `module`'s layer (0 = lowest): the longest name in LAYERS that is it or holds it."""
    best, rank = "", -1
    for i, (_, names) in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, rank = name, i
    if rank < 0:
        raise ValueError(f"module {module} is in no layer of ddnn.layers.LAYERS; add it there")
    return rank


def modules_of(package_dir: Path) -> dict[str, Path]:
    """Module name -> file for every .py file below the package folder (`src/ddnn`)."""
    package_dir = Path(package_dir)
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The package module an imported dotted name lives in (None: not ours)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import of one of `modules` in the file, wherever it stands (top level or in a function)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import: resolve it against this module's package
                package = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from ddnn.models import resnet` imports the sub-module; `from ddnn.models import X`, the package
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            target = _target(name, modules)
            if target is not None and target != module:
                found.append(Import(module, target, path, node.lineno))
    return found


def upward(imports: list[Import]) -> list[Import]:
    """The imports from a lower layer's module into a higher layer's."""
    return [i for i in imports if layer_of(i.target) > layer_of(i.source)]


def circles(imports: list[Import]) -> list[list[Import]]:
    """One closed chain of imports per strongly connected group of modules (Tarjan's algorithm)."""
    graph: dict[str, dict[str, Import]] = {}
    for i in imports:
        graph.setdefault(i.source, {}).setdefault(i.target, i)
        graph.setdefault(i.target, {})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for node in sorted(graph):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return [_chain(sorted(group), graph) for group in groups]


def _chain(group: list[str], graph: dict[str, dict[str, Import]]) -> list[Import]:
    """A shortest circle through the group's first module (breadth-first inside the group)."""
    start, members = group[0], set(group)
    came: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for target, imp in sorted(graph[node].items()):
                if target == start:
                    chain = [imp]
                    while chain[0].source != start:
                        chain.insert(0, came[chain[0].source])
                    return chain
                if target in members and target not in came:
                    came[target] = imp
                    nxt_frontier.append(target)
        frontier = nxt_frontier
    raise AssertionError(f"no circle through {start}")


def problems(package_dir: Path) -> list[str]:
    """One line per import that points up a layer or closes a circle (empty: the graph is clean)."""
    modules = modules_of(package_dir)
    imports = [i for module, path in modules.items() for i in imports_of(module, path, modules)]
    lines = [f"{i.where()}: {i.source} ({LAYERS[layer_of(i.source)][0]}) imports {i.target} "
             f"({LAYERS[layer_of(i.target)][0]}), a higher layer" for i in upward(imports)]
    for chain in circles(imports):
        lines.append("import circle: " + " -> ".join(f"{i.source} ({i.where()})" for i in chain)
                     + f" -> {chain[0].source}")
    return lines


def main() -> int:
    found = problems(Path(__file__).parent)
    print("\n".join(found) if found else "ddnn's imports only look down and close no circle")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
