"""The package's import graph (read with ast, lazy imports inside functions included): layers import downwards
only, and no module is on an import circle (issue 18). A new module must be given its layer here."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dimerec"

# lower number = lower layer; a module may import its own layer or a lower one
LAYERS = {
    0: ["dimerec", "dimerec.errors", "dimerec.markdown", "dimerec.sphere", "dimerec.metrics", "dimerec.figures",
        "dimerec.claims", "dimerec.distributed", "dimerec.processes"],
    1: ["dimerec.data"],  # and every dimerec.data.* module
    2: ["dimerec.diffusion", "dimerec.retrieval"],
    3: ["dimerec.models"],  # and every dimerec.models.* module
    4: ["dimerec.serving", "dimerec.evaluate"],  # evaluate serves through serving
    5: ["dimerec.analysis", "dimerec.explore"],
    6: ["dimerec.runs", "dimerec.trainer"],  # trainer reads and writes its runs through runs
    7: ["dimerec.options"],
    8: ["dimerec.reproduce", "dimerec.reproduce.experiments", "dimerec.reproduce.runner",
        "dimerec.reproduce.tables",  # within it: experiments -> runner -> tables -> the package's __init__
        "dimerec.diffusion_report"],  # DIFFUSION.md from the tables reproduce writes, its groups from experiments
    9: ["dimerec.cli", "dimerec.__main__"],
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    for level, names in LAYERS.items():
        if module in names or any(module.startswith(n + ".") for n in names if n in ("dimerec.data", "dimerec.models")):
            return level
    raise AssertionError(f"{module} has no layer in tests/test_layers.py: give it one")


def imports(path: Path) -> set[str]:
    """The dimerec modules `path` imports anywhere in its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "dimerec"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("dimerec", "app"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return found


GRAPH = {name: {m for m in imports(path) if m != name} for name, path in MODULES.items()}


def test_every_module_has_a_layer_and_imports_only_downwards():
    upward = []
    for name, targets in GRAPH.items():
        for target in targets:
            if target.startswith("app"):
                upward.append(f"{name} imports the app ({target})")
            elif target in MODULES and layer(target) > layer(name):
                upward.append(f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})")
    assert not upward, upward


def test_no_import_circle():
    def circle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in GRAPH.get(node, ()):
                if nxt == start:
                    return path + [start]
                if nxt not in path and nxt in GRAPH and nxt != "dimerec":
                    stack.append((nxt, path + [nxt]))
        return None

    circles = [c for name in sorted(GRAPH) if name != "dimerec" and (c := circle_from(name))]
    assert not circles, " | ".join(" -> ".join(c) for c in circles)


def test_the_checker_sees_a_circle_and_an_upward_import(tmp_path):
    """The two rules can fail: a planted upward import is caught."""
    code = "def f():\n    from dimerec.cli import main\n"
    planted = tmp_path / "evaluate.py"
    planted.write_text(code)
    assert "dimerec.cli" in imports(planted)
    assert layer("dimerec.cli") > layer("dimerec.evaluate")
