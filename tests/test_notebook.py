"""notebooks/quickstart.ipynb runs top to bottom (its code cells, in order, in one fresh
process, with 40 training steps instead of 2000)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def _code(path):
    cells = json.loads(path.read_text())["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] == "code":
            # IPython-only lines (shell escapes, magics) are for Colab; none may be live here
            src = "".join(cell["source"])
            assert not any(l.lstrip().startswith(("!", "%")) for l in src.splitlines()), src
            lines.append(src)
    return "\n\n".join(lines)


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path):
    env = dict(os.environ, SRUPP_NOTEBOOK_STEPS="40", SRUPP_NOTEBOOK_WORKDIR=str(tmp_path),
               MPLBACKEND="Agg", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _code(NOTEBOOK)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    text = out.stdout
    assert "max |h_scan - h_assoc| =" in text
    diff = float(text.split("max |h_scan - h_assoc| =")[1].split()[0])
    assert diff < 1e-4
    assert "dev BPC by step: [(10," in text and "test_bpc" in text
    assert "step 40 sample:\ndef " in text
