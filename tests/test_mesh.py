"""Sharding as on a TPU slice, on 8 fake CPU devices (one 8-device TPU host such as a v3-8 or
v5e-8; a v4-8 shows 4): a 1-D data mesh of 8 and a 2-D (data x fsdp) mesh of 2 x 4 train a toy
model of the large enwik8 config's structure (configs/enwik8_large.py with size overrides, on
the embedded corpus) to the losses of 1 device, save, resume bit for bit (and from one mesh on
the other), and evaluate; on the 2-D mesh parameters and optimizer state are sharded over
"fsdp" and stay so through the compiled step, batch rows and the carry over both axes. The
translation task trains a few steps on the 2-D mesh to the losses of 1 device and decodes
there. The mesh's one-line errors.

XLA_FLAGS must be set before jax starts, so the runs go in a subprocess.
"""
import pytest

from helpers import run_on_fake_devices

SCRIPT = r"""
import importlib, json, sys
sys.path[:0] = [{root!r}, {tests!r}]
import jax
from flax import nnx
assert jax.device_count() == 8, jax.devices()
from test_train import _losses
from srupp_jax.training import sharding, trainer
from srupp_jax import tasks
from srupp_jax.programs import modes
from srupp_jax.training.steps import make_train_step

TMP = {tmp!r}
MESHES = dict(one=(1, 0), data8=(8, 0), mesh2x4=(8, 4))


def large(name, **train_keys):
    # configs/enwik8_large.py (its recipe: bf16 compute, ratio d = 4 d', dropout 0.32, lr) at
    # toy sizes on the embedded corpus (no enwik8 download)
    c = importlib.import_module("configs.enwik8_large").get_config()
    c.data.name, c.data.max_bytes = "default", 200_000
    c.model.d, c.model.d_proj, c.model.num_layers = 16, 4, 2
    t, e = c.train, c.eval
    t.batch_size, t.unroll, t.steps, t.warmup_steps = 8, 16, 4, 1
    t.log_every, t.eval_every, t.checkpoint_every = 1, 4, 2
    # float32: with the recipe's bf16 the fsdp meshes' losses differ from 1 device's by
    # 1.3e-5 relative (bf16 partial sums in another order), over this test's 1e-5
    t.compute_dtype = "float32"
    e.batch_size, e.unroll, e.mem_len, e.max_tokens = 8, 32, 32, 2_000
    c.mesh.num_devices, c.mesh.fsdp_size = MESHES[name]
    for k, v in train_keys.items():
        t[k] = v
    return c


def translation(name, best):
    c = importlib.import_module("configs.translate_default").get_config()
    c.data.cache_dir = TMP + "/data"
    c.data.numbers.train_size, c.data.numbers.valid_size, c.data.numbers.test_size = 300, 16, 16
    c.model.d, c.model.d_proj, c.model.d_embed = 16, 4, 8
    c.model.encoder_layers = c.model.decoder_layers = 1
    t, e = c.train, c.eval
    t.batch_tokens, t.steps, t.warmup_steps = 256, 3, 1
    t.log_every, t.eval_every, t.checkpoint_every = 1, 3, 3
    e.batch_tokens, e.best, e.max_sentences, c.decode.beam_size = 512, best, 8, 2
    c.mesh.num_devices, c.mesh.fsdp_size = MESHES[name]
    return c


def run(config, workdir):
    last = modes.train(config, workdir)
    return dict(losses=_losses(workdir), dev=last.get("dev_loss"), status=last["status"],
                **({{"bleu": last["dev_bleu"]}} if "dev_bleu" in last else {{}}))


def spec(x):                       # P("data", None) and P("data") are the same layout
    s = list(x.sharding.spec)
    while s and s[-1] is None:
        s.pop()
    return s


def specs(tree):
    return [spec(x) for x in jax.tree.leaves(tree)]


out = {{}}
for name in MESHES:
    w = f"{{TMP}}/{{name}}"
    out[name] = dict(straight=run(large(name), w + "_straight"))
    if name != "one":
        out[name]["stopped"] = run(large(name, stop_at=2), w)
        out[name]["resumed"] = run(large(name), w)
    else:
        w += "_straight"
    out[name]["eval"] = modes.evaluate(large(name), w)
# stopped on the data mesh, resumed on the 2-D mesh (mesh.* may change between runs)
run(large("data8", stop_at=2), TMP + "/across")
out["across"] = run(large("mesh2x4"), TMP + "/across")

# The 2-D mesh's layout: a state as the trainer builds it, and after one compiled step.
config = large("mesh2x4")
task = tasks.make(config)
task.load()
mesh = sharding.from_config(config.mesh)
model = task.build_model(nnx.Rngs(0))
graphdef, tx, state, _ = trainer.initial_state(task, model, mesh)
step = make_train_step(graphdef, tx, task.loss)
batch = [sharding.global_batch(a, mesh) for a in task.batch(0)]
out["layout"] = dict(
    mesh=dict(mesh.shape), shapes=[list(x.shape) for x in jax.tree.leaves(state.params)],
    params=specs(state.params), batch=specs(batch), carry=specs(state.carry),
    opt=[[list(x.shape), spec(x)] for x in jax.tree.leaves(state.opt_state)])
params, _, opt_state, carry, _ = step(*state.args(), *batch)   # (its arrays are donated)
out["layout"].update(stepped=specs(params), opt_stepped=specs(opt_state),
                     carry_stepped=specs(carry))

# 1 device: dev loss only; the 2-D mesh also decodes (beam search on fsdp-sharded params)
for name, best in (("one", "loss"), ("mesh2x4", "bleu")):
    out["translation_" + name] = run(translation(name, best), f"{{TMP}}/translation_{{name}}")
print("RESULT" + json.dumps(out))
"""


def _close(a, b, what):
    assert abs(a - b) <= 1e-5 * abs(b), (what, a, b)


@pytest.mark.slow
def test_data_and_fsdp_meshes_train_resume_and_evaluate(tmp_path):
    out = run_on_fake_devices(SCRIPT, tmp_path, timeout=1200,
                              JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax"),
                              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    one = out["one"]["straight"]
    assert sorted(one["losses"]) == ["1", "2", "3", "4"]
    for name in ("data8", "mesh2x4"):
        runs = out[name]
        # the same losses and dev loss as 1 device
        for step, loss in one["losses"].items():
            _close(runs["straight"]["losses"][step], loss, (name, step))
        _close(runs["straight"]["dev"], one["dev"], (name, "dev"))
        # stopped at step 2 (saved), rerun: exactly the straight run on the same mesh
        assert runs["stopped"]["status"] == "stopped"
        assert sorted(runs["stopped"]["losses"]) == ["1", "2"]
        assert runs["resumed"]["status"] == "finished"
        assert runs["resumed"]["losses"] == runs["straight"]["losses"], name
        assert runs["resumed"]["dev"] == runs["straight"]["dev"], name
        # --mode=eval's path on the mesh: the whole dev and test splits, as on 1 device
        assert runs["eval"]["step"] == 4
        for key in ("dev_loss", "test_loss"):
            _close(runs["eval"][key], out["one"]["eval"][key], (name, key))

    for step, loss in one["losses"].items():
        _close(out["across"]["losses"][step], loss, ("across", step))

    lay = out["layout"]
    assert lay["mesh"] == {"data": 2, "fsdp": 4}
    # every parameter split over "fsdp" along an axis divisible by 4 (toy sizes: all have
    # one), never over "data"; the compiled step keeps the layout
    for shape, spec in zip(lay["shapes"], lay["params"]):
        if not shape:
            assert spec == [], spec                            # alpha, a scalar: replicated
            continue
        assert spec.count("fsdp") == 1 and "data" not in spec, (shape, spec)
        assert shape[spec.index("fsdp")] % 4 == 0
    assert lay["stepped"] == lay["params"]
    # RAdam's two moments of each parameter, laid out as the parameter; the counts scalars
    moments = [spec for shape, spec in lay["opt"] if shape]
    assert len(moments) == 2 * sum(map(bool, lay["shapes"]))
    assert all("fsdp" in spec for spec in moments), lay["opt"]
    assert [spec for _, spec in lay["opt"]] == lay["opt_stepped"]
    # batch rows and the batch-first carry over both axes
    assert all(spec[0] == ["data", "fsdp"] for spec in lay["batch"] + lay["carry"]), lay
    assert lay["carry_stepped"] == lay["carry"]

    one, two = out["translation_one"], out["translation_mesh2x4"]
    assert sorted(one["losses"]) == ["1", "2", "3"] and two["status"] == "finished"
    for step, loss in one["losses"].items():
        _close(two["losses"][step], loss, ("translation", step))
    _close(two["dev"], one["dev"], ("translation", "dev"))
    assert "bleu" not in one and 0 <= two["bleu"] <= 100


def test_bad_mesh_sizes_are_named():
    import jax
    from srupp_jax.training import sharding
    n = jax.device_count()
    with pytest.raises(ValueError, match=rf"^mesh.fsdp_size={n + 1} does not divide the {n} "
                       rf"devices in use \(mesh.num_devices=0\); expected 0 or 1 \(no fsdp "
                       rf"axis\) or a divisor of {n}$"):
        sharding.make_mesh(None, n + 1)
    with pytest.raises(ValueError, match=r"^mesh.fsdp_size=-2 does not divide"):
        sharding.make_mesh(None, -2)
    with pytest.raises(ValueError, match=rf"^mesh.num_devices={n + 1}; expected 0 \(all\) or "
                       rf"1\.\.{n}$"):
        sharding.make_mesh(n + 1, 0)
