"""The project's import graph between packages, read statically (every import, at module level or inside a function).

    python benchmarks/import_graph.py [TREE ...] [--out benchmarks/results/import_graph.json]

A package is the first level under ``pipelines`` (``pipelines.serve``, ``pipelines.train``, ...; a
module directly under ``pipelines`` counts as itself), ``monitoring``, ``bentos`` or ``dags``. For
each tree it writes which package imports which, and which of the heavy training libraries
(torch, timm, ultralytics) each package imports itself.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from collections import defaultdict
from pathlib import Path

HEAVY = ("torch", "torchvision", "timm", "ultralytics")
TOPS = ("pipelines", "monitoring", "bentos", "dags")


def package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] not in TOPS:
        return None
    return ".".join(parts[:2]) if parts[0] == "pipelines" and len(parts) > 1 else parts[0]


def module_name(tree: Path, path: Path) -> str:
    rel = path.relative_to(tree).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def imports(path: Path, name: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: -node.level] if not path.name == "__init__.py" else \
                    name.split(".")[: len(name.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out |= {f"{target}.{a.name}" for a in node.names}          # `from pipelines import registry`
    return out


def graph(tree: Path) -> dict:
    edges, heavy = defaultdict(set), defaultdict(set)
    for top in TOPS:
        for path in sorted((tree / top).rglob("*.py")) if (tree / top).is_dir() else []:
            name = module_name(tree, path) if top != "dags" else f"dags.{path.stem}"
            src = package(name) if top != "dags" else "dags"
            for target in imports(path, name):
                dst = package(target)
                if dst and dst != src and not (dst == "pipelines" and target.count(".") >= 1 and
                                               package(target.rsplit(".", 1)[0]) != "pipelines"):
                    edges[src].add(dst)
                if target.split(".")[0] in HEAVY:
                    heavy[src].add(target.split(".")[0])
    # `from pipelines import X` of a module X is an edge to pipelines.X, not to the package itself
    for src in edges:
        edges[src].discard("pipelines")
    tops = defaultdict(set)
    for src, dsts in edges.items():
        tops[src.split(".")[0]] |= {d.split(".")[0] for d in dsts if d.split(".")[0] != src.split(".")[0]}
    return {"top_level": {k: sorted(v) for k, v in sorted(tops.items())},
            "edges": {k: sorted(v) for k, v in sorted(edges.items())},
            "heavy_imports": {k: sorted(v) for k, v in sorted(heavy.items())},
            "mutual": sorted({tuple(sorted((a, b))) for a, bs in edges.items() for b in bs if a in edges.get(b, ())})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="*", type=Path, default=[Path(".")])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = {}
    for tree in args.trees:
        rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        result[str(tree)] = {"revision": rev, **graph(tree.resolve())}
    text = json.dumps({"command": "python benchmarks/import_graph.py " + " ".join(map(str, args.trees)),
                       "trees": result}, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
