"""``python -m infra.check_imports`` (in ``make check``): the package import graph has no cycle, and no
production module imports benchmark code.

The graph is built from the source with :mod:`ast` (nothing is imported): every ``import`` and
``from ... import`` anywhere in a module counts, at module level, inside a function or under
``if TYPE_CHECKING:``, because each is a dependency of the design even when it runs late. Its nodes
are the top-level packages, except that :data:`LAYERS` also names ``lake.serve``: the serving layer
lives under ``lake/`` for its command (``python -m lake.serve``) but sits on top of the extractors
and the Spark jobs, so it is a node of its own, and ``lake`` means the lake core without it.

Two rules, each failure named with the import that breaks it (file and line):

- **no cycle** between nodes: ``a -> b -> a`` fails with one import of every edge of the cycle;
- **no benchmark import**: only :mod:`infra.bench` itself (and ``tests/``) may import
  ``infra.bench``.

The intended layering, bottom to top (docs/architecture.md): :data:`LAYERS`. The check enforces
the absence of cycles, not the order; ``--graph`` prints the edges found.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The nodes of the graph, bottom layer first: each may import only from those before it.
LAYERS: tuple[str, ...] = ("lake", "extractors", "expectations", "spark_jobs", "lake.serve", "infra")
#: Benchmark code: importable only from inside itself.
BENCH = "infra.bench"


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement: the module that has it, where, and the module it names."""

    module: str
    path: str
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} ({self.module}) imports {self.target}"


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(root: Path, name: str) -> bool:
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(root: Path, path: Path) -> list[Import]:
    """Every import in the file at ``path`` (under ``root``), resolved to absolute module names."""
    module = _module_name(root, path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = str(path.relative_to(root))
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(module, rel, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if alias.name != "*" and _is_module(root, sub) else base
                found.append(Import(module, rel, node.lineno, target))
    return found


def node_of(module: str, layers: Sequence[str] = LAYERS) -> str | None:
    """The graph node a module belongs to: the longest of ``layers`` that is it or a parent of it."""
    best = None
    for name in layers:
        if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best)):
            best = name
    return best


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def scan(root: Path, layers: Sequence[str] = LAYERS) -> list[Import]:
    """Every import in the packages of ``layers`` under ``root``."""
    tops = sorted({name.split(".")[0] for name in layers})
    found: list[Import] = []
    for top in tops:
        for path in sorted((root / top).rglob("*.py")):
            found += imports_of(root, path)
    return found


def edges(found: Iterable[Import], layers: Sequence[str] = LAYERS) -> dict[tuple[str, str], list[Import]]:
    """``(from node, to node) -> the imports that make the edge``; imports within a node are left out."""
    out: dict[tuple[str, str], list[Import]] = {}
    for imp in found:
        a, b = node_of(imp.module, layers), node_of(imp.target, layers)
        if a is not None and b is not None and a != b:
            out.setdefault((a, b), []).append(imp)
    return out


def cycles(graph: dict[tuple[str, str], list[Import]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected group of nodes (Tarjan)."""
    succ: dict[str, list[str]] = {}
    for a, b in sorted(graph):
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return [_shortest_cycle(group[0], succ, set(group)) for group in groups]


def _shortest_cycle(start: str, succ: dict[str, list[str]], members: set[str]) -> list[str]:
    """The shortest ``[start, ..., start]`` within ``members`` (breadth first; one exists)."""
    parent: dict[str, str | None] = {start: None}
    queue = [start]
    for v in queue:
        for w in succ[v]:
            if w == start:
                path = [v]
                while (up := parent[path[-1]]) is not None:
                    path.append(up)
                return [*reversed(path), start]
            if w in members and w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"{start} is in no cycle")


def problems(root: Path, layers: Sequence[str] = LAYERS, *, bench: str = BENCH) -> list[str]:
    """What breaks the two rules under ``root``, one message each (empty: the tree passes)."""
    found = scan(root, layers)
    out: list[str] = []
    graph = edges(found, layers)
    for cycle in cycles(graph):
        lines = [f"import cycle: {' -> '.join(cycle)}"]
        for a, b in itertools.pairwise(cycle):
            lines.append(f"  {a} -> {b}: {graph[(a, b)][0]}" + _more(len(graph[(a, b)])))
        out.append("\n".join(lines))
    for imp in found:
        if _within(imp.target, bench) and not _within(imp.module, bench):
            out.append(
                f"benchmark import from a production module: {imp} "
                f"(benchmark code lives in {bench.replace('.', '/')}/; only it and tests/ import it)"
            )
    return out


def _more(n: int) -> str:
    return f" (and {n - 1} more)" if n > 1 else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.check_imports", description=__doc__)
    parser.add_argument("--root", default=".", help="the repository root (default: the current folder)")
    parser.add_argument("--graph", action="store_true", help="also print every edge between nodes")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if args.graph:
        for (a, b), found in sorted(edges(scan(root)).items()):
            print(f"{a} -> {b}: {found[0]}{_more(len(found))}")
    failed = problems(root)
    for message in failed:
        print(message, file=sys.stderr)
    if failed:
        print(
            f"check_imports: {len(failed)} problem(s); layering, bottom to top: {' < '.join(LAYERS)}",
            file=sys.stderr,
        )
        return 1
    print(f"check_imports: no import cycle between {', '.join(LAYERS)}; no benchmark import")
    return 0


if __name__ == "__main__":
    sys.exit(main())
