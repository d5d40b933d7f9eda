"""The layering of src/ (docs/architecture.md): no import cycle, and function-local imports only for
heavy or optional dependencies, at most a dozen in all."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
OPTIONAL = ("wandb", "torch.utils.tensorboard", "transformers", "datasets", "datatrove", "matplotlib", "scipy.stats",
            "torch.utils.cpp_extension", "ninja")
"""What may be imported inside a function: optional extras (wandb, tensorboard, transformers), and heavy
imports needed by one path only (datasets for source = "hf", datatrove's executors, matplotlib for figures,
scipy.stats (1.5 s) for the diagnostics' rank correlation and compare's Welch test, torch's extension
builder and ninja for the CPU kernels' first build)."""
MAX_LOCAL = 12


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> tuple[set[str], list[tuple[int, str]]]:
    """(plasticlm modules imported at module level outside TYPE_CHECKING, function-local imports)."""
    mod = _module(path)
    is_pkg = path.name == "__init__.py"
    top: set[str] = set()
    local: list[tuple[int, str]] = []

    def names(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = node.module or ""
        if node.level:
            pkg = mod.split(".")[: len(mod.split(".")) - node.level + (1 if is_pkg else 0)]
            base = ".".join(pkg + ([base] if base else []))
        return [base] + [f"{base}.{a.name}" for a in node.names]

    def walk(node: ast.AST, in_func: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                walk(child, True, type_checking)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.body:
                    walk(ast.Module(body=[sub], type_ignores=[]), in_func, True)
            elif isinstance(child, ast.Import | ast.ImportFrom):
                if in_func:
                    local.append((child.lineno, names(child)[0]))
                elif not type_checking:
                    top.update(n for n in names(child) if n.startswith("plasticlm"))
            else:
                walk(child, in_func, type_checking)

    walk(ast.parse(path.read_text()), False, False)
    return top, local


def _graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[int, str]]]]:
    files = sorted(SRC.rglob("*.py"))
    mods = {_module(p): p for p in files}
    graph, local = {}, {}
    for m, p in mods.items():
        top, loc = _imports(p)
        graph[m] = {d for d in top if d in mods and d != m}
        local[m] = loc
    return graph, local


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_src_has_no_import_cycle():
    graph, _ = _graph()
    assert len(graph) > 50  # the walk found the package
    assert _cycles(graph) == []


def test_the_checker_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


LAYERS = {
    1: ["errors", "config", "validate", "presets", "runlog", "files", "units", "progress", "dist", "runlock",
        "cachelock"],
    2: ["cpu", "cpu_kernels", "model", "optim", "step", "evaluate", "dist_checkpoint", "checkpoint"],
    3: ["data"],
    4: ["onset", "analysis", "scaling", "diagnostics", "diagnostics_analysis", "forgetting"],
    5: ["rundir", "components", "probe", "train", "mitigations", "diagnose", "hf", "probe_hf", "bench"],
    6: ["runspec", "records", "plan", "cpu_plan", "launch", "sweep", "compare"],
    7: ["report", "study", "cli", "__main__"],
}
"""docs/architecture.md, "Layers": a module imports from its own layer or earlier ones."""
ALLOWED_UPWARD = {("plasticlm.validate", "plasticlm.data.sources")}
"""The documented exception: validate reads the corpus sources' registry to check a config's languages."""


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    found = [n for n, names in LAYERS.items() if top in names]
    assert found, f"{module} is in no layer of docs/architecture.md: add it to LAYERS and to the doc"
    return found[0]


def test_every_import_points_to_the_same_or_an_earlier_layer():
    graph, _ = _graph()
    upward = sorted((m, d) for m, ds in graph.items() if m != "plasticlm" for d in ds
                    if d != "plasticlm" and _layer(d) > _layer(m) and (m, d) not in ALLOWED_UPWARD)
    assert upward == []


CLI = "plasticlm.cli"
"""The command line imports the library module a command calls inside that command's function, so that
`plasticlm --help` and each command load only what they use (tests/test_cli.py checks that parsing
imports no torch); it is the top layer, so these imports add no edge a layer could miss."""


def test_function_local_imports_are_few_and_only_for_optional_or_heavy_dependencies():
    _, local = _graph()
    found = [(m, line, name) for m, items in local.items() for line, name in items
             if not (m.startswith(CLI) and name.split(".")[0] == "plasticlm")]
    bad = [f for f in found if not any(f[2] == o or f[2].startswith(o + ".") for o in OPTIONAL)]
    assert bad == [], "function-local imports of non-optional modules (move them to the top): " + str(bad)
    assert len(found) <= MAX_LOCAL, found
