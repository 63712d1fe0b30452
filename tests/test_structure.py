"""The package structure: pallas_kernels is a leaf (it imports nothing from srupp_jax)."""
import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def imported_modules(path: pathlib.Path) -> set:
    """Every module an import statement of `path` names, at any depth (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


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


TASK_OR_MODEL = ("srupp_jax.tasks", "srupp_jax.models", "srupp_jax.layers", "srupp_jax.attention",
                 "srupp_jax.recurrence", "srupp_jax.adaptive", "srupp_jax.transformer_xl",
                 "srupp_jax.sha_rnn", "srupp_jax.archs", "srupp_jax.data", "srupp_jax.seq2seq",
                 "srupp_jax.transformer_seq2seq", "srupp_jax.decode", "pallas_kernels")


def test_the_trainer_knows_no_task_or_model():
    """trainer.py (and the step it compiles) import no task, model or data module, and the
    loop stays short: a new task plugs in through tasks/base.py, not by editing the loop."""
    for name in ("trainer.py", "steps.py"):
        path = ROOT / "srupp_jax" / name
        bad = {m for m in imported_modules(path) if m.startswith(TASK_OR_MODEL)}
        assert not bad, f"srupp_jax/{name} imports {sorted(bad)}"
    tree = ast.parse((ROOT / "srupp_jax" / "trainer.py").read_text())
    loop = next(n for n in tree.body if getattr(n, "name", "") == "train_and_evaluate")
    assert loop.end_lineno - loop.lineno + 1 <= 90
    assert len((ROOT / "srupp_jax" / "trainer.py").read_text().splitlines()) < 300


def test_no_module_is_over_400_lines():
    for path in sorted((ROOT / "srupp_jax").rglob("*.py")):
        lines = len(path.read_text().splitlines())
        assert lines <= 400, f"{path.relative_to(ROOT)} has {lines} lines"
