"""The same training steps on 1 and on 8 (fake CPU) devices, data parallel and with FSDP of
parameters and optimizer state, give the same losses.

XLA_FLAGS must be set before jax starts, so the comparison runs in a subprocess.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
sys.path[:0] = [{root!r}, {tests!r}]
import jax
assert jax.device_count() == 8, jax.devices()
from test_train import tiny_config, _losses
from srupp_jax import train
out = {{}}
for name, n, fsdp in (("one", 1, False), ("eight", 8, False), ("fsdp", 8, True)):
    config = tiny_config(batch_size=8, steps=4, eval_every=4, checkpoint_every=4)
    config.mesh.num_devices, config.mesh.fsdp = n, fsdp
    config.eval.batch_size = 8
    workdir = {tmp!r} + "/" + name
    last = train.train_and_evaluate(config, workdir)
    out[name] = dict(losses=_losses(workdir), dev=last["dev_loss"])
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_one_and_eight_devices_agree(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    script = SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"), tmp=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.split("RESULT", 1)[1])
    one = result["one"]
    assert sorted(one["losses"]) == ["1", "2", "3", "4"]
    for name in ("eight", "fsdp"):
        other = result[name]
        for step, loss in one["losses"].items():
            assert abs(other["losses"][step] - loss) <= 1e-5 * abs(loss), (name, step, other)
        assert abs(other["dev"] - one["dev"]) <= 1e-5 * abs(one["dev"]), name
