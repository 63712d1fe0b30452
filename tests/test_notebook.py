"""notebooks/quickstart.ipynb runs top to bottom through a real Jupyter kernel (nbclient), with
the kernel started in notebooks/ as Jupyter does, and 40 training steps instead of 2000. Its
first cell detects the runtime (here the CPU: JAX_PLATFORMS=cpu) and says which recurrence
backend trained, at how many tokens/s."""
import os
import pathlib

import pytest

if os.environ.get("CI"):  # CI installs requirements-test.txt: a missing kernel is a failure
    import nbclient
    import nbformat
else:
    nbclient = pytest.importorskip("nbclient", reason="the notebook test needs "
                                   "requirements-test.txt (nbclient, nbformat, ipykernel)")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def _text(nb) -> str:
    """Everything the cells printed or returned, in order."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stdout":
                out.append(o["text"])
            elif o.get("output_type") in ("execute_result", "display_data"):
                out.append(o.get("data", {}).get("text/plain", ""))
    return "".join(out)


@pytest.mark.slow
def test_quickstart_notebook_runs_in_a_kernel(tmp_path, monkeypatch):
    for key, value in dict(SRUPP_NOTEBOOK_STEPS="40", SRUPP_NOTEBOOK_WORKDIR=str(tmp_path),
                           MPLBACKEND="Agg", JAX_PLATFORMS="cpu").items():
        monkeypatch.setenv(key, value)            # the kernel inherits this environment
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the notebook must find the code itself
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()                              # raises CellExecutionError on any failure
    text = _text(nb)
    assert "runtime: cpu; jax" in text and "warning:" not in text
    assert "impl='auto' runs the recurrence here as scan (CPU)" in text
    assert "train.compute_dtype = float32: CPU: float32" in text    # float16 on a T4 / V100
    tokens_per_sec = text.split("recurrence backend: scan (CPU), ")[1].split(" tokens/s")[0]
    assert float(tokens_per_sec.replace(",", "")) > 0
    assert "max |h_scan - h_assoc| =" in text
    diff = float(text.split("max |h_scan - h_assoc| =")[1].split()[0])
    assert diff < 1e-4
    assert "dev BPC by step: [(10," in text and "test_bpc" in text
    assert "step 40 sample:\ndef " in text
