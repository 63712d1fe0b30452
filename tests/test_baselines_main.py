"""The baselines through main.py with their own config files (size overrides only): train a
few steps, stop, resume, evaluate, generate; and the arch-aware config checks."""
import importlib
import json
import pathlib
import subprocess
import sys

import pytest

from srupp_jax.programs import modes

ROOT = pathlib.Path(__file__).resolve().parents[1]

TINY = {
    "txl_enwik8.py": ["--config.model.d=16", "--config.model.num_layers=2",
                      "--config.model.num_heads=2", "--config.model.d_head=8",
                      "--config.model.d_inner=24"],
    "sharnn_enwik8.py": ["--config.model.d=16", "--config.model.num_layers=2",
                         "--config.model.attention_layers=(1,)",
                         "--config.model.d_inner=32"],
}
COMMON = ["--config.data.name=default", "--config.data.max_bytes=100000",
          "--config.train.batch_size=2", "--config.train.unroll=8", "--config.train.steps=4",
          "--config.train.warmup_steps=1", "--config.train.log_every=1",
          "--config.train.eval_every=2", "--config.train.checkpoint_every=2",
          "--config.train.compute_dtype=float32", "--config.eval.unroll=16",
          "--config.eval.mem_len=16", "--config.eval.max_tokens=300"]


def _main(config, workdir, *extra):
    out = subprocess.run([sys.executable, "main.py", f"--config=configs/{config}",
                          f"--workdir={workdir}", *TINY[config], *COMMON, *extra], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("config,arch", [("txl_enwik8.py", "transformer_xl"),
                                         ("sharnn_enwik8.py", "sha_rnn")])
def test_train_resume_eval_generate(tmp_path, config, arch):
    first = _main(config, tmp_path, "--config.train.stop_at=2")
    assert f"model {arch}: " in first.stderr and " parameters" in first.stderr
    second = _main(config, tmp_path)
    assert "resumed from step 2" in second.stderr
    rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert sorted(r["step"] for r in rows if r["split"] == "train") == [1, 2, 3, 4]
    ev = json.loads(_main(config, tmp_path, "--mode=eval").stdout.strip().splitlines()[-1])
    assert ev["step"] == 4 and 0 < ev["dev_bpc"] < 9 and 0 < ev["test_bpc"] < 9
    gen = _main(config, tmp_path, "--mode=generate", "--prompt=def ", "--num_tokens=12",
                "--seed=3")
    assert gen.stdout.startswith("def ") and len(gen.stdout.encode()) > 12


@pytest.mark.parametrize("arch,key,value,match", [
    ("transformer_xl", "num_heads", 3, "model.d=16 is not divisible by model.num_heads=3"),
    ("sha_rnn", "attention_layers", (5,), r"model.attention_layers=\(5,\)"),
    ("sha_rnn", "d_inner", 0, "model.d_inner=0"),
    ("lstm", None, None, "model.arch='lstm'"),
    ("transformer_xl", "train.compute_dtype", "float64", "train.compute_dtype='float64'"),
    ("sha_rnn", "train.compute_dtype", "float64", "train.compute_dtype='float64'"),
])
def test_bad_baseline_values_are_named(arch, key, value, match):
    config = importlib.import_module("configs.default").get_config()
    m = config.model
    m.arch, m.d, m.d_proj, m.d_inner = arch, 16, 16, 32
    m.d_head, m.attention_layers = 0, (1,)
    if key:
        section, name = key.split(".") if "." in key else ("model", key)
        setattr(config[section], name, value)
    with pytest.raises(ValueError, match=match):
        modes.validate_config(config, 1)
