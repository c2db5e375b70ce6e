"""The package's module graph has no cycle (DESIGN.md: data flows one way).

Parsed, not imported: every module-level `import`/`from ... import` of a convjax module is an
edge (imports inside functions are deliberate lazy imports, and `if TYPE_CHECKING:` blocks
never run). A cycle makes import order matter and usually means two modules share a concept
that belongs in a third.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "convjax"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    found = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names}
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:  # relative import
                    anchor = name.split(".")[: len(name.split(".")) - sub.level + is_package]
                    base = ".".join([*anchor, base] if base else anchor)
                found.add(base)
                found |= {f"{base}.{a.name}" for a in sub.names}  # `from pkg import module`
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        imports = _module_level_imports(ast.parse(path.read_text()), name,
                                        path.name == "__init__.py")
        graph[name] = {m for m in imports if m in files and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_convjax():
    graph = import_graph()
    assert len(graph) > 30 and "convjax.loop" in graph["convjax.train"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_level_cache_of_compiled_programs():
    # Compiled steps live in the `Steps` object the caller holds (steps.make_steps); a
    # module-level cache would keep models alive and hide recompiles behind object identity.
    for name in ("loop.py", "steps.py", "train.py", "features.py"):
        source = (PACKAGE / name).read_text()
        assert "lru_cache" not in source and "functools.cache" not in source, name
