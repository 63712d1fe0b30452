"""The same training steps on 1 and on 8 (fake CPU) devices, data parallel and with FSDP of
parameters and optimizer state, and on 2 processes of 2 devices each (multi-host on one
machine), give the same losses.

XLA_FLAGS must be set before jax starts, so the comparison runs in a subprocess.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from helpers import run_on_fake_devices

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
sys.path[:0] = [{root!r}, {tests!r}]
import jax
assert jax.device_count() == 8, jax.devices()
from test_train import tiny_config, _losses
from srupp_jax.programs import modes
out = {{}}
for name, n, fsdp in (("one", 1, False), ("eight", 8, False), ("fsdp", 8, True)):
    config = tiny_config(batch_size=8, steps=4, eval_every=4, checkpoint_every=4)
    config.mesh.num_devices, config.mesh.fsdp = n, fsdp
    config.eval.batch_size = 8
    workdir = {tmp!r} + "/" + name
    last = modes.train(config, workdir)
    out[name] = dict(losses=_losses(workdir), dev=last["dev_loss"])
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_one_and_eight_devices_agree(tmp_path):
    result = run_on_fake_devices(SCRIPT, tmp_path, timeout=900)
    one = result["one"]
    assert sorted(one["losses"]) == ["1", "2", "3", "4"]
    for name in ("eight", "fsdp"):
        other = result[name]
        for step, loss in one["losses"].items():
            assert abs(other["losses"][step] - loss) <= 1e-5 * abs(loss), (name, step, other)
        assert abs(other["dev"] - one["dev"]) <= 1e-5 * abs(one["dev"]), name


PROCESS_SCRIPT = r"""
import json, sys
sys.path[:0] = [{root!r}, {tests!r}]
from srupp_jax.training import sharding
sharding.initialize_distributed()
import jax
from test_train import tiny_config, _losses
from srupp_jax.programs import modes
config = tiny_config(batch_size=8, steps=4, eval_every=4, checkpoint_every=2, stop_at={stop_at})
config.eval.batch_size = 8
last = modes.train(config, {workdir!r})
if jax.process_index() == 0:
    print("RESULT" + json.dumps(dict(losses=_losses({workdir!r}), dev=last.get("dev_loss"),
                                     processes=jax.process_count(),
                                     devices=jax.device_count())))
"""


def _run_processes(tmp_path, workdir, num_processes, devices_per_process, stop_at=0, port=0):
    """Run PROCESS_SCRIPT as `num_processes` JAX processes (CPU, gloo collectives) and return
    process 0's result."""
    script = PROCESS_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"),
                                   workdir=str(workdir), stop_at=stop_at)
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
    if num_processes > 1:
        env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                   JAX_NUM_PROCESSES=str(num_processes))
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                              env=dict(env, JAX_PROCESS_ID=str(i)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for i in range(num_processes)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    return json.loads(outs[0][0].split("RESULT", 1)[1])


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_checkpoint_and_resume(tmp_path):
    """Multi-host on one machine: 2 JAX processes x 2 CPU devices, each reading only its own
    streams, stopped at step 2 (an orbax checkpoint written by both) and restarted, give the
    losses and dev loss of 1 process on 1 device running straight through."""
    one = _run_processes(tmp_path, tmp_path / "one", 1, 1)
    assert sorted(one["losses"]) == ["1", "2", "3", "4"]
    part = _run_processes(tmp_path, tmp_path / "two", 2, 2, stop_at=2, port=_free_port())
    assert (part["processes"], part["devices"]) == (2, 4)
    assert sorted(part["losses"]) == ["1", "2"]
    two = _run_processes(tmp_path, tmp_path / "two", 2, 2, port=_free_port())
    assert sorted(two["losses"]) == ["1", "2", "3", "4"]
    for step, loss in one["losses"].items():
        assert abs(two["losses"][step] - loss) <= 1e-5 * abs(loss), (step, one, two)
    assert abs(two["dev"] - one["dev"]) <= 1e-5 * abs(one["dev"])


@pytest.mark.parametrize("env, match", [
    (dict(JAX_PROCESS_ID="0"), "JAX_NUM_PROCESSES must be a non-negative integer, got "
                               "JAX_NUM_PROCESSES=''"),
    (dict(JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="x"), "JAX_PROCESS_ID='x'"),
    (dict(JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="2"), "JAX_PROCESS_ID=2; expected < "
                                                      "JAX_NUM_PROCESSES=2"),
])
def test_bad_process_settings_are_named(monkeypatch, env, match):
    from srupp_jax.training import sharding
    for name in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        sharding.initialize_distributed()


STOP_SCRIPT = r"""
import json, sys
sys.path[:0] = [{root!r}, {tests!r}]
from srupp_jax.training import sharding
sharding.initialize_distributed()
import jax
from test_train import tiny_config
from srupp_jax.programs import modes
config = tiny_config(batch_size=8, steps=100000, eval_every=100000, checkpoint_every=100000)
config.eval.batch_size = 8
last = modes.train(config, {workdir!r})
print("RESULT" + json.dumps(dict(status=last["status"], step=last["step"],
                                 process=jax.process_index())))
"""


@pytest.mark.slow
def test_a_signal_to_one_process_stops_both_at_the_same_step(tmp_path):
    """SIGTERM to process 1 only (process 0 never sees it): both agree on the stop step, save
    it together and return `preempted` (a process that decided alone would hang the other
    in the collective save)."""
    import signal
    import time
    script = STOP_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"),
                                workdir=str(tmp_path))
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_PROCESSES="2",
               XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_COORDINATOR_ADDRESS=f"localhost:{_free_port()}")
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                              env=dict(env, JAX_PROCESS_ID=str(i)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=300) for p in procs]
    results = []
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
        results.append(json.loads(out.split("RESULT", 1)[1]))
    assert [r["status"] for r in results] == ["preempted", "preempted"]
    assert results[0]["step"] == results[1]["step"] >= 3
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert saved == [results[0]["step"]]
