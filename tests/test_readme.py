"""The README's quick start stays what CI runs, and the main command works."""
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _quick_start():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, re.S)


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_second():
    commands = _quick_start()
    assert len(commands) == 2, commands
    assert all("\n" not in c for c in commands)
    test_cmd = commands[1].split("&& pip install", 1)[1]
    assert ("pip install" + test_cmd) in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_main_command_runs(tmp_path):
    """The README's main command, shrunk by --config overrides to a few seconds of training."""
    main_cmd = _quick_start()[0].split("&& python ", 1)[1]
    args = main_cmd.split()[1:]
    assert args[0] == "--config=configs/default.py" and args[1].startswith("--workdir=")
    shrink = ["--config.model.d=16", "--config.model.d_proj=4", "--config.model.num_layers=2",
              "--config.train.steps=3", "--config.train.warmup_steps=1",
              "--config.train.batch_size=2", "--config.train.unroll=8",
              "--config.eval.unroll=16", "--config.eval.mem_len=16",
              "--config.eval.max_tokens=500", "--config.data.max_bytes=100000"]
    out = subprocess.run([sys.executable, "main.py", args[0], f"--workdir={tmp_path}", *shrink],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["mode"] == "train" and 0 < result["dev_bpc"] < 9
    assert (tmp_path / "metrics.jsonl").exists() and (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_your_own_model_example_runs_as_written_from_another_directory(tmp_path):
    """The README's "SRU++ in your own model" block, run as a script outside the checkout
    (the quick start installs the package, so `import srupp_jax` works anywhere)."""
    readme = (ROOT / "README.md").read_text()
    section = re.split(r"\n##+ ", readme.split("### SRU++ in your own model", 1)[1])[0]
    blocks = re.findall(r"```python\n(.*?)\n```", section, re.S)
    assert len(blocks) == 1 and "import srupp_jax" in blocks[0]
    script = tmp_path / "own_model.py"
    script.write_text(blocks[0])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
