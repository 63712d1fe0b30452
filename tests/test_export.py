"""--mode=export: the artifacts reload in a fresh process WITHOUT srupp_jax (jax and numpy
only) and give the model's own outputs: the LM forward over two segments with the state
carried, and translation's encoder, decoder state and decoder steps."""
import json
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from srupp_jax.programs import modes
from srupp_jax.training import run_config

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The server: jax alone, as the README shows (srupp_jax must not be importable by accident).
SERVE_LM = """
import json, sys, numpy as np, jax
from jax import export
d = sys.argv[1]
meta = json.load(open(d + "/export.json"))
params = dict(np.load(d + "/params.npz"))
forward = export.deserialize(open(d + "/lm_forward.bin", "rb").read())
tokens = np.load(sys.argv[2])["tokens"]                  # [b, 2 segments, l]
b = tokens.shape[0]
state = {k: np.full([b] + s["shape"][1:], s["initial"], s["dtype"])
         for k, s in meta["state"].items()}
out = []
for i in range(tokens.shape[1]):
    logp, state = forward.call(params, tokens[:, i], state)
    out.append(np.asarray(logp))
assert not any(m.startswith("srupp_jax") for m in sys.modules)
np.savez(sys.argv[3], logp=np.stack(out, 1))
"""

SERVE_MT = """
import json, sys, numpy as np, jax
from jax import export
d = sys.argv[1]
meta = json.load(open(d + "/export.json"))
params = dict(np.load(d + "/params.npz"))
f = {n: export.deserialize(open(f"{d}/{n}.bin", "rb").read())
     for n in ("encoder", "decoder_init", "decoder_step")}
src = np.load(sys.argv[2])["src"]
x, pad = f["encoder"].call(params, src)
state = f["decoder_init"].call(params, x, pad)
tokens, out = np.full(src.shape[0], meta["bos_id"], np.int32), []
for t in range(4):                                       # greedy
    logp, state = f["decoder_step"].call(params, state, tokens, np.int32(t))
    tokens = np.asarray(logp).argmax(-1).astype(np.int32)
    out.append(np.asarray(logp))
assert not any(m.startswith("srupp_jax") for m in sys.modules)
np.savez(sys.argv[3], logp=np.stack(out, 1))
"""


def _serve(script, out_dir, inputs, tmp_path):
    np.savez(tmp_path / "in.npz", **inputs)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}     # no PYTHONPATH: no srupp_jax
    done = subprocess.run([sys.executable, "-c", script, str(out_dir), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(tmp_path / "out.npz")["logp"]


def _main(*args):
    out = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_lm_export_serves_without_the_package(tmp_path):
    w, out = tmp_path / "run", tmp_path / "export"
    _main("--config=configs/default.py", f"--workdir={w}", "--config.model.d=16",
          "--config.model.d_proj=4", "--config.model.num_layers=2", "--config.train.steps=4",
          "--config.train.warmup_steps=1", "--config.data.max_bytes=100000",
          "--config.eval.max_tokens=1000", "--config.eval.mem_len=8")
    result = _main(f"--workdir={w}", "--mode=export", f"--output={out}")
    assert result["files"] == 3 and json.load(open(out / "export.json"))["vocab"][:3] == [0, 1, 2]
    tokens = np.random.RandomState(0).randint(0, 256, (3, 2, 5)).astype(np.int32)
    config = run_config.load(str(w))
    model, params, rest, _ = modes.restore(config, str(w))
    nnx.update(model, params, rest)
    model.eval()
    state, want = model.init_state(3, 8), []
    for i in range(2):
        logp, state = model.log_probs(jnp.asarray(tokens[:, i]), state)
        want.append(np.asarray(logp))
    got = _serve(SERVE_LM, out, {"tokens": tokens}, tmp_path)
    np.testing.assert_allclose(got, np.stack(want, 1), rtol=1e-5, atol=1e-5)
    got7 = _serve(SERVE_LM, out, {"tokens": tokens[:2, :, :4]}, tmp_path)   # other b and l
    np.testing.assert_allclose(got7[:, 0], want[0][:2, :4], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_translation_export_serves_without_the_package(tmp_path):
    from test_translation_main import NUMBERS, SIZES
    w, out = tmp_path / "run", tmp_path / "export"
    _main(*NUMBERS, *SIZES, f"--workdir={w}", "--config.train.steps=4",
          "--config.train.eval_every=4", "--config.train.checkpoint_every=4",
          "--config.eval.max_sentences=4", "--config.eval.best=loss",
          f"--config.data.cache_dir={tmp_path}/cache")
    _main(f"--workdir={w}", "--mode=export", f"--output={out}")
    meta = json.load(open(out / "export.json"))
    config = run_config.load(str(w))
    model, params, rest, _ = modes.restore(config, str(w))
    nnx.update(model, params, rest)
    model.eval()
    src = np.random.RandomState(1).randint(3, 50, (2, meta["src_len"])).astype(np.int32)
    src[1, 5:] = meta["pad_id"]
    state = model.init_decode_state(model.encode(jnp.asarray(src)), meta["max_len"])
    tokens, want = jnp.full((2,), meta["bos_id"], jnp.int32), []
    for t in range(4):
        logp, state = model.decode_step(state, tokens, t)
        tokens = logp.argmax(-1).astype(jnp.int32)
        want.append(np.asarray(logp))
    got = _serve(SERVE_MT, out, {"src": src}, tmp_path)
    np.testing.assert_allclose(got, np.stack(want, 1), rtol=1e-5, atol=1e-5)
