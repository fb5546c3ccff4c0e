"""The layers of DESIGN.md import one way: no cycle among p2pfl's packages, counting imports inside
functions too (a lazy import hides a cycle from Python, not from the reader)."""

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "p2pfl"


def module_files(package: Path) -> dict[str, Path]:
    files = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def unit_of(module: str, files: dict[str, Path]) -> str:
    """A subpackage is one unit (p2pfl.agents.methods); a module at the top of p2pfl is its own."""
    path = files[module]
    top = module.count(".") == 1 and path.name != "__init__.py"
    return module if path.name == "__init__.py" or top else module.rsplit(".", 1)[0]


def imported(tree: ast.AST) -> list[str]:
    """Every module an import statement anywhere in the file may name (`from a import b`: a and a.b)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def unit_graph(package: Path = PACKAGE) -> nx.DiGraph:
    files = module_files(package)
    graph = nx.DiGraph()
    for module, path in files.items():
        source = unit_of(module, files)
        for name in imported(ast.parse(path.read_text())):
            if name in files and unit_of(name, files) != source:
                graph.add_edge(source, unit_of(name, files), via=f"{module} imports {name}")
    return graph


def test_the_detector_sees_a_cycle_hidden_in_a_function(tmp_path):
    package = tmp_path / "p2pfl"
    (package / "agents" / "methods").mkdir(parents=True)
    for init in (package, package / "agents", package / "agents" / "methods"):
        (init / "__init__.py").write_text("")
    (package / "config.py").write_text("def check():\n    from p2pfl.agents.loop import run\n")
    (package / "agents" / "loop.py").write_text("from p2pfl.agents.methods.one import Method\n")
    (package / "agents" / "methods" / "one.py").write_text("from p2pfl.config import check\n")
    cycles = list(nx.simple_cycles(unit_graph(package)))
    assert [sorted(c) for c in cycles] == [["p2pfl.agents", "p2pfl.agents.methods", "p2pfl.config"]]


def test_no_import_cycle_among_p2pfl_packages():
    graph = unit_graph()
    cycles = [[graph.edges[a, b]["via"] for a, b in zip(c, c[1:] + c[:1])] for c in nx.simple_cycles(graph)]
    assert cycles == []
