"""The package's import structure as docs/ARCHITECTURE.md declares it: no import circles, no private name
imported from another module, and no import from a layer above (the layer table is read from that file)."""
import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "vtg_jax")


def _modules() -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[module[:-len(".__init__")] if module.endswith(".__init__") else module] = path
    return out


MODULES = _modules()


def _imports(module: str, path: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) of every vtg_jax import in a file, wherever it is."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.startswith("vtg_jax")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            if not base.startswith("vtg_jax"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub, "", node.lineno) if sub in MODULES else (base, alias.name, node.lineno))
    return out


EDGES = {m: _imports(m, p) for m, p in MODULES.items()}


def _layers() -> dict[str, int]:
    """{top-level part of vtg_jax: layer} from the table between the `layers` markers of ARCHITECTURE.md."""
    text = open(os.path.join(ROOT, "docs", "ARCHITECTURE.md")).read()
    table = text.split("<!-- layers -->")[1]
    out = {}
    for line in table.strip().splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if m:
            for part in re.findall(r"`([\w.]+)`", m.group(2)):
                out[part] = int(m.group(1))
    return out


def _layer(module: str, layers: dict[str, int]) -> int:
    """The layer of the longest entry of the table that `module` is in (`eval.metrics` before `eval`)."""
    parts = module.split(".")[1:]
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in layers:
            return layers[".".join(parts[:k])]
    raise KeyError(module)


def test_every_package_part_has_a_layer():
    layers = _layers()
    missing = []
    for module in MODULES:
        try:
            if module != "vtg_jax":
                _layer(module, layers)
        except KeyError:
            missing.append(module)
    assert not missing, f"docs/ARCHITECTURE.md's layer table does not place {missing}"


def test_imports_only_point_down():
    layers = _layers()
    upward = []
    for module, imports in EDGES.items():
        if module == "vtg_jax":
            continue
        for target, _, line in imports:
            if target != "vtg_jax" and _layer(target, layers) > _layer(module, layers):
                upward.append(f"{MODULES[module]}:{line} imports {target}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_private_name_crosses_modules():
    crossing = [f"{MODULES[m]}:{line} imports {name} from {target}" for m, imports in EDGES.items()
                for target, name, line in imports if name.startswith("_") and target != m]
    assert not crossing, "\n".join(crossing)


def test_no_import_circles():
    graph = {m: {t for t, _, _ in imports if t in MODULES and t != m} for m, imports in EDGES.items()}
    # a package's __init__ importing its own submodules is not a circle
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import circles: {cycles}"


@pytest.mark.parametrize("folder", ["vtg_jax", "configs", "launch", "bench"])
def test_no_reference_to_files_outside_the_repository(folder):
    pattern = re.compile(r"shared/|DESIGN|porting brief")
    hits = []
    for base, _, files in os.walk(os.path.join(ROOT, folder)):
        for name in files:
            if name.endswith((".py", ".md", ".sh")):
                path = os.path.join(base, name)
                lines = enumerate(open(path, errors="replace"), 1)
                hits += [f"{path}:{k}" for k, line in lines if pattern.search(line)]
    assert not hits, "\n".join(hits)
