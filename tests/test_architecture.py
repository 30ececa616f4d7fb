"""The layering contract, read from the source with `ast` (nothing is imported): who may import whom,
a docstring on every file's first line, no module over 400 lines.

The layers, lowest first. A module may import its own layer and the layers below it, never one above:
the data flows one way (see ARCHITECTURE.md). A new module must be placed in LAYERS below, or the
"unclassified" test fails and names it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "regional_widgets"
MAX_LINES = 400

# layer      -> the modules in it: a folder ("sampling/") holds every module under it; a name is one
#               top-level module of the package ("session" is regional_widgets/session.py)
LAYERS = {
    "sampling": ["sampling/"],     # pure torch + numpy: model sampling, schedules, samplers, noise, masks
    "models":   ["models/"],       # denoisers behind one protocol; CFG; ToyWorld, diffusers folders
    "engines":  ["node_params", "program", "faithful", "run_context", "coherent",  # the nodes' parameters, programs
                 "regional"],  # 0.1.0's module, a deprecated alias of the three above
    "io":       ["io/"],           # plain data in and out (files, PNGs, ComfyUI): see IO_MAY_IMPORT
    "session":  ["session", "params", "node_checks", "session_checks", "session_changes", "regions",
                 "timeline", "state_tree", "arena", "persistence", "stepper", "publish", "node_functions"],  # the
                                   # observable state, its checks, its run in motion, history, files
    "studies":  ["sweep", "sweep_grid", "sweep_cells", "sweep_store", "sweep_figures", "compare", "plot",
                 "colors", "cli", "__main__", "__init__"],  # grids, comparisons, figures, the command line
    "widgets":  ["widgets/"],      # ipywidgets views over a session
}
ORDER = list(LAYERS)
# io is the session's helper (the session reads and writes its files through it, so it sits below
# the session), yet it stays plain data: it may import only itself and sampling's constants, never
# the models, the engines, the session or the widgets.
IO_MAY_IMPORT = {"io", "sampling"}
# colors.py is plain palette data importing nothing; its users are plot (studies) and the widgets,
# so it lives with the studies. If a lower layer ever needs it, move it to that layer's row.

# Imports that cross the order on purpose: (importing module, imported module) -> why.
ALLOWED = {
    ("__init__", "widgets.app"):
        "the package's lazy __getattr__: `rw.RegionalSamplerApp` imports the widgets only when asked for",
    ("__init__", "widgets.sweep_browser"):
        "the package's lazy __getattr__: `rw.SweepBrowser` imports the widgets only when asked for",
}


def module_name(path: Path) -> str:
    """``regional_widgets/io/paths.py`` -> ``io.paths``; ``io/__init__.py`` -> ``io``; the package's
    own ``__init__.py`` -> ``__init__``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def layer_of(name: str):
    """The layer of a module name (``io.paths``, ``session``, ``sampling.samplers.core``), or None."""
    top = name.split(".")[0]
    for layer, members in LAYERS.items():
        for member in members:
            if member.endswith("/"):
                if top == member[:-1]:
                    return layer
            elif name == member:
                return layer
    return None


def all_modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


MODULES = all_modules()
IDS = [module_name(p) for p in MODULES]


def _exists(name: str) -> bool:
    base = PACKAGE.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def internal_imports(path: Path):
    """``(line, imported module name)`` for every import of the package's own modules in ``path``,
    at the top or inside a function (a lazy import still binds the two modules together)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = list(path.parent.relative_to(PACKAGE).parts)  # where a relative import starts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "regional_widgets" or alias.name.startswith("regional_widgets."):
                    yield node.lineno, alias.name.partition(".")[2] or "__init__"
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module != "regional_widgets" and not (node.module or "").startswith("regional_widgets."):
                    continue
                base = node.module.split(".")[1:]
            else:
                base = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            for alias in node.names:  # `from . import plot` imports the module plot; `from .x import f` imports x
                sub = base + [alias.name]
                if _exists(".".join(sub)):
                    yield node.lineno, ".".join(sub)
                else:
                    yield node.lineno, ".".join(base) or "__init__"


def test_every_module_has_a_layer():
    unclassified = [name for name in IDS if layer_of(name) is None]
    assert not unclassified, (f"unclassified modules {unclassified}: add each to its layer in LAYERS at the top "
                              f"of tests/test_architecture.py")


def violations(name: str, imports) -> list:
    """What is wrong with module ``name`` importing ``(line, module)`` pairs, one text each."""
    layer = layer_of(name)
    bad = []
    for line, target in sorted(set(imports)):
        target_layer = layer_of(target)
        if (name, target) in ALLOWED:
            continue
        if target_layer is None:
            bad.append(f"line {line}: imports {target}, a module in no layer")
        elif layer == "io" and target_layer not in IO_MAY_IMPORT:
            bad.append(f"line {line}: imports {target} ({target_layer}); io may import only io and sampling")
        elif ORDER.index(target_layer) > ORDER.index(layer):
            bad.append(f"line {line}: imports {target} ({target_layer}), a layer above {layer}")
    return bad


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_imports_follow_the_layers(path):
    name = module_name(path)
    if layer_of(name) is None:
        pytest.fail(f"{path.relative_to(PACKAGE.parent)}: not in LAYERS (see test_every_module_has_a_layer)")
    bad = violations(name, internal_imports(path))
    assert not bad, f"{path.relative_to(PACKAGE.parent)} ({layer_of(name)}): " + "; ".join(bad)


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_every_file_opens_with_its_docstring(path):
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    first = tree.body[0] if tree.body else None
    where = path.relative_to(PACKAGE.parent)
    assert isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
        and isinstance(first.value.value, str), f"{where}: the first statement is not a module docstring"
    assert first.lineno == 1, f"{where}: the docstring starts on line {first.lineno}, not line 1"
    assert first.value.value.splitlines()[0].strip(), \
        f"{where}: the docstring's first line is empty; say there what the file is"


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_no_module_is_over_400_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)}: {lines} lines (at most {MAX_LINES}); split it"


# ---- the checker checks itself: each rule catches what it is for --------------------------------

def test_the_layer_table_places_known_modules():
    assert layer_of("sampling.samplers.core") == "sampling" and layer_of("models.toyworld") == "models"
    assert layer_of("faithful") == "engines" and layer_of("session") == "session"
    assert layer_of("io.paths") == "io" and layer_of("sweep_store") == "studies" and layer_of("__init__") == "studies"
    assert layer_of("widgets.app") == "widgets" and layer_of("colors") == "studies"
    assert layer_of("stepper") == "session" and layer_of("io") == "io" and layer_of("session_new") is None
    assert layer_of("brand_new_module") is None


def test_relative_imports_resolve(tmp_path, monkeypatch):
    """Imports are read as the modules they name: a lazy one inside a function counts too."""
    fake = tmp_path / "regional_widgets"
    (fake / "io").mkdir(parents=True)
    (fake / "__init__.py").write_text('"""x"""\n')
    (fake / "session.py").write_text('"""x"""\n')
    (fake / "plot.py").write_text('"""x"""\n')
    (fake / "io" / "__init__.py").write_text('"""x"""\n')
    (fake / "io" / "paths.py").write_text('"""x"""\n')
    probe = fake / "io" / "bad.py"
    probe.write_text('"""x"""\nfrom . import paths\nfrom ..session import f\n\ndef g():\n'
                     '    from .. import plot\n    import regional_widgets.session\n')
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    assert sorted(internal_imports(probe)) == [(2, "io.paths"), (3, "session"), (6, "plot"), (7, "session")]


def test_the_rules_catch_what_they_are_for():
    assert violations("models.base", [(3, "session")]) == ["line 3: imports session (session), a layer above models"]
    assert violations("io.paths", [(5, "node_params")]) == \
        ["line 5: imports node_params (engines); io may import only io and sampling"]
    assert violations("io.paths", [(5, "sampling.noise"), (6, "io.masks")]) == []
    assert violations("persistence", [(9, "io.session_files"), (10, "faithful")]) == []  # down or across
    assert violations("plot", [(4, "widgets.palette")]) == ["line 4: imports widgets.palette (widgets), a layer "
                                                             "above studies"]
    assert violations("__init__", [(20, "widgets.app")]) == []  # the allow-listed lazy __getattr__
    assert violations("compare", [(2, "nowhere")]) == ["line 2: imports nowhere, a module in no layer"]
