"""The memory plan (main.py --mode=plan, and a line at the start of training): its total is
within 20% of the compiled step's own memory analysis on this CPU, and where the step does not
fit the memory given it names the smallest change that would."""
import json
import pathlib
import subprocess
import sys

import pytest

from srupp_jax import tasks
from srupp_jax.tasks.plan import compiled_memory, memory_plan
from test_train import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("d, unroll, batch", [(64, 64, 16), (48, 96, 6)])
def test_the_plan_is_within_20_percent_of_the_compiled_step(d, unroll, batch):
    config = tiny_config(batch_size=batch, unroll=unroll)
    config.model.d, config.model.d_proj, config.model.num_layers = d, d // 4, 3
    config.model.dropout = config.model.attn_dropout = 0.0
    task = tasks.make(config)
    plan = memory_plan(task, num_devices=1)
    compiled = compiled_memory(task, batch)["total"]
    assert 0.8 <= plan.total() / compiled <= 1.2, (plan, compiled)
    assert plan.activations["layer"] < plan.activations["attention"] < plan.activations["none"]


def _plan(*args):
    out = subprocess.run([sys.executable, "main.py", "--config=configs/default.py",
                          "--mode=plan", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout, json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_plan_through_main_says_what_fits_and_the_smallest_change():
    text, numbers = _plan()
    assert "activations      remat none:" in text and "device memory    unknown here" in text
    none, layer = numbers["activations_bytes_none"], numbers["activations_bytes_layer"]
    state = numbers["total_bytes"] - none
    between = (state + (none + layer) / 2) / 2 ** 30    # fits with remat layer only
    text, numbers = _plan(f"--device_memory={between}")
    assert numbers["fits"] == 0
    assert "does not fit; smallest change that fits: --config.model.remat=layer" in text
    text, numbers = _plan(f"--device_memory={2 * numbers['total_bytes'] / 2 ** 30}")
    assert numbers["fits"] == 1 and ": fits" in text
