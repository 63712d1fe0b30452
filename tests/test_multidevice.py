"""The same training steps on 1 and on 8 (fake CPU) devices give the same losses.

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
for n in (1, 8):
    config = tiny_config(batch_size=8, steps=4, eval_every=4, checkpoint_every=4)
    config.mesh.num_devices = n
    config.eval.batch_size = 8
    workdir = {tmp!r} + f"/devices{{n}}"
    last = train.train_and_evaluate(config, workdir)
    out[n] = dict(losses=_losses(workdir), dev=last["dev_loss"])
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
    one, eight = result["1"], result["8"]
    assert sorted(one["losses"]) == ["1", "2", "3", "4"]
    for step, loss in one["losses"].items():
        assert abs(eight["losses"][step] - loss) <= 1e-5 * abs(loss), (step, loss, eight)
    assert abs(eight["dev"] - one["dev"]) <= 1e-5 * abs(one["dev"])
