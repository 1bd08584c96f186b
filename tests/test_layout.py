"""The package picture in docs/architecture.md is the code's import graph, and the layout's rules hold."""
from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("streams", "models", "schemas")


def _unit(module: str) -> str | None:
    """vigil.streams.pumps.edge -> 'pumps'; vigil.models.x -> 'models'; the picture's node names."""
    parts = module.split(".")
    if parts[0] != "vigil" or len(parts) < 2 or parts[1] not in FOLDERS:
        return None
    if parts[1] == "streams" and len(parts) >= 3 and (REPO / "streams" / parts[2]).is_dir():
        return parts[2]
    return parts[1]


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [node.module] if node.module != "vigil" else [f"vigil.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return found


def import_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for folder in FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            me = _unit("vigil." + ".".join(path.relative_to(REPO).with_suffix("").parts))
            for target in map(_unit, _imports(path)):
                if target and target != me:
                    edges[me].add(target)
    return edges


def documented_graph() -> dict[str, set[str]]:
    text = (REPO / "docs" / "architecture.md").read_text()
    block = text.split("## Packages: what imports what", 1)[1].split("```mermaid", 1)[1].split("```", 1)[0]
    edges: dict[str, set[str]] = defaultdict(set)
    for source, target in re.findall(r"^\s*(\w+)(?:\[[^\]]*\])? --> (\w+)", block, flags=re.M):
        edges[source].add(target)
    return edges


def test_the_package_picture_matches_the_imports():
    assert documented_graph() == import_graph()


def test_models_import_no_kafka_faust_or_streams():
    offenders = {}
    for path in (REPO / "models").rglob("*.py"):
        bad = [m for m in _imports(path) if m.split(".")[0] in {"faust", "confluent_kafka", "aiokafka", "streams"}
               or m.startswith("vigil.streams")]
        if bad:
            offenders[path.name] = bad
    assert offenders == {}


def test_nothing_imports_the_folders_by_their_bare_names():
    # installed, they exist only as vigil.streams, vigil.models, vigil.schemas
    bare = {}
    for folder in ("streams", "models", "schemas", "tests", "loadtest", "vigil"):
        for path in (REPO / folder).rglob("*.py"):
            bad = [m for m in _imports(path) if m.split(".")[0] in FOLDERS]
            if bad:
                bare[str(path.relative_to(REPO))] = bad
    assert bare == {}

