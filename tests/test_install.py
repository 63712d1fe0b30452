"""`pip install .` into a fresh virtualenv: the `srupp` command trains, evaluates and generates
from another directory, with configs named by name or by path; no top-level `configs` package.

The virtualenv reuses this environment's packages through a .pth file and installs with
--no-deps --no-build-isolation, so nothing is downloaded; it builds from a copy of the checkout
(so no build/ or .egg-info is left in it).
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config.model.d=16", "--config.model.d_proj=4", "--config.model.num_layers=2",
        "--config.train.batch_size=2", "--config.train.unroll=8", "--config.train.steps=2",
        "--config.train.warmup_steps=1"]


def _run(cmd, cwd, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("PYTHONPATH", None)                         # nothing from the checkout
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, (cmd, out.stderr[-3000:])
    return out


@pytest.mark.slow
def test_installed_srupp_trains_evaluates_generates_elsewhere(tmp_path):
    venv, elsewhere = tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = pathlib.Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], cwd=tmp_path).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
          "--no-build-isolation", source], cwd=tmp_path)
    assert (site / "srupp_jax" / "configs" / "enwik8.py").is_file()
    assert not (site / "configs").exists()              # no generic top-level package
    srupp = venv / "bin" / "srupp"
    run = elsewhere / "run"
    out = _run([srupp, "--config=default", f"--workdir={run}", *TINY,
                "--config.data.max_bytes=60000", "--config.eval.max_tokens=3000",
                f"--config.data.cache_dir={tmp_path / 'cache'}"], cwd=elsewhere)
    assert json.loads(out.stdout.splitlines()[-1])["dev_bpc"] > 0
    out = _run([srupp, "--workdir=run", "--mode=eval"], cwd=elsewhere)
    assert json.loads(out.stdout.splitlines()[-1])["test_bpc"] > 0
    out = _run([srupp, "--workdir=run", "--mode=generate", "--prompt=def ", "--num_tokens=5"],
               cwd=elsewhere)
    assert out.stdout.startswith("def ")
    # paper configs by name and by path (smoke: vocab_size given, so no dataset is needed)
    for config in ("enwik8:k5", str(ROOT / "configs" / "enwik8.py") + ":k5"):
        out = _run([srupp, f"--config={config}", "--mode=smoke", *TINY,
                    "--config.model.num_layers=5", "--config.model.vocab_size=256"],
                   cwd=elsewhere)
        assert "d=16, d_proj=4, num_layers=5, k=5" in out.stdout
