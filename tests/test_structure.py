"""The package structure (ARCHITECTURE.md): packages by layer, lower layers importing nothing of
higher ones, checked on every import statement (functions included), and the loop short."""
import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "srupp_jax"

# What each part of srupp_jax may import from the project (itself always): the layers bottom
# up. The modules every layer shares, at the door: `errors` (one-line errors), `files` (files
# written atomically and checked when read: the data caches and the workdir's records) and
# `phases` (where a run is, for a stopped run's line and the fault tests, and the progress
# lines of long phases: data and training both have them); pallas_kernels is a leaf.
SHARED = {"errors", "files", "phases"}
ALLOWED = {
    "errors": {"phases"},
    "phases": set(),
    "files": {"phases"},
    "configs": set(),
    "nn": SHARED | {"pallas_kernels"},
    "models": SHARED | {"nn", "pallas_kernels"},
    "convert": SHARED | {"nn", "models"},
    "training": SHARED | {"configs"},
    "data": SHARED,
    "inference": SHARED | {"nn", "models", "training", "data"},
    "tasks": SHARED | {"nn", "models", "training", "data", "inference", "convert"},
    "programs": SHARED | {"nn", "models", "training", "data", "inference", "convert", "tasks",
                          "configs"},
}
# Programs that live beside the layer they run: `python -m srupp_jax.data.prepare`, and the
# door's `python -m srupp_jax.study` / `srupp_jax.plot`.
PROGRAMS = {"data/prepare.py", "study.py", "plot.py"}


def imported_modules(path: pathlib.Path) -> set:
    """Every module an import statement of `path` names, at any depth (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.update(f"{node.module}.{alias.name}" if node.module == "srupp_jax"
                         else node.module for alias in node.names)
    return names


def part_of(module: str) -> str:
    """The layer of a dotted module name: 'srupp_jax.nn.sru' -> 'nn', 'pallas_kernels' ->
    'pallas_kernels', 'srupp_jax.errors' -> 'errors'."""
    parts = module.split(".")
    if parts[0] != "srupp_jax":
        return parts[0]
    return parts[1] if len(parts) > 1 else ""


def test_every_module_belongs_to_a_layer():
    door = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert door == ["__init__.py", "errors.py", "files.py", "phases.py", "plot.py",
                    "study.py"], door
    parts = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert set(parts) == set(ALLOWED) - SHARED, parts


def test_layers_import_only_the_layers_below():
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in PROGRAMS or rel == "__init__.py":
            continue
        layer = rel.split("/")[0].removesuffix(".py")
        ours = {m for m in imported_modules(path) if part_of(m) and
                m.split(".")[0] in ("srupp_jax", "pallas_kernels")}
        bad = {m for m in ours if part_of(m) not in ALLOWED[layer] | {layer}}
        assert not bad, f"srupp_jax/{rel} ({layer}) imports {sorted(bad)}"
        checked += 1
    assert checked > 40


def test_pallas_kernels_imports_nothing_from_srupp_jax():
    files = sorted((ROOT / "pallas_kernels").rglob("*.py"))
    assert len(files) >= 3
    for path in files:
        bad = {m for m in imported_modules(path) if m.split(".")[0] == "srupp_jax"}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, pallas_kernels, pallas_kernels.inputs; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] == 'srupp_jax'))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stderr[-2000:]


def test_the_trainer_loop_stays_short():
    """A new task plugs in through tasks/base.py, not by editing the loop."""
    trainer = PACKAGE / "training" / "trainer.py"
    tree = ast.parse(trainer.read_text())
    loop = next(n for n in tree.body if getattr(n, "name", "") == "train_and_evaluate")
    assert loop.end_lineno - loop.lineno + 1 <= 90
    assert len(trainer.read_text().splitlines()) < 300


def test_no_module_is_over_400_lines():
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = len(path.read_text().splitlines())
        assert lines <= 400, f"{path.relative_to(ROOT)} has {lines} lines"


def _requirement_names(lines) -> set:
    """Distribution names (normalised) of requirement lines: 'orbax-checkpoint>=0.11 # x' ->
    'orbax-checkpoint'."""
    import re
    names = set()
    for line in lines:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[<>=!~;\[ ]", line)[0].lower().replace("_", "-"))
    return names


OPTIONAL = {"torch"}


def test_every_third_party_import_is_a_declared_dependency():
    """An import of the package, main.py or pallas_kernels that `pip install -r requirements.txt`
    would not satisfy fails on a fresh machine (CI) only: each is declared in requirements.txt
    and pyproject.toml, the same list in both. torch is optional (reading PyTorch files for
    --mode=import), so imported inside the functions that read them only."""
    import importlib.metadata
    import tomllib
    declared = _requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert _requirement_names(project) == declared
    distributions = importlib.metadata.packages_distributions()
    paths = [*PACKAGE.rglob("*.py"), *(ROOT / "pallas_kernels").rglob("*.py"), ROOT / "main.py"]
    missing = set()
    for path in paths:
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in ("srupp_jax", "pallas_kernels",
                                                         "configs", "__future__"):
                continue
            if top in OPTIONAL:
                continue
            dists = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
            if not dists & declared:
                missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, f"imported but not in requirements.txt: {sorted(missing)}"
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""])
                assert not {n.split(".")[0] for n in names} & OPTIONAL, (path, names)


def test_every_module_imports():
    """Modules a run imports lazily (a task's, a mode's) fail only when that run starts: each
    is imported here (a name another module no longer has is an ImportError)."""
    import importlib
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        importlib.import_module(name)
