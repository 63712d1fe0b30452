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
