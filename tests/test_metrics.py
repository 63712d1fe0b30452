"""Tests for srupp_jax.training.metrics (JSONL/TensorBoard writer), progress, flops (FLOPs/MFU) and plot."""
import glob
import json
import math
import os
import struct

import pytest

from srupp_jax.models import flops as F
from srupp_jax.training import metrics as M
from srupp_jax.training import mfu
from srupp_jax.training.progress import Progress


class FakeClock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_jsonl_valid_with_nan_and_read_back(tmp_path):
    with M.MetricWriter(tmp_path, tensorboard=False, devices=2) as w:
        w.write(1, {"loss": 1.5, "bad": float("nan"), "big": float("inf"), "n": 3})
        w.write(2, {"bpc": -float("inf"), "devices": 4}, split="dev")
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    recs = [json.loads(line) for line in lines]      # strict JSON: no bare NaN
    for line in lines:
        assert "NaN" not in line and "Infinity" not in line
    r = recs[0]
    assert r["step"] == 1 and r["split"] == "train" and r["devices"] == 2
    assert r["bad"] == "nan" and r["big"] == "inf" and r["n"] == 3 and r["loss"] == 1.5
    assert isinstance(r["time"], float) and r["hours"] >= 0
    back = M.read_metrics(tmp_path)
    assert math.isnan(back[0]["bad"]) and back[0]["big"] == math.inf
    assert back[1]["bpc"] == -math.inf and back[1]["split"] == "dev" and back[1]["devices"] == 4
    assert [x["step"] for x in M.read_metrics(tmp_path / "metrics.jsonl", split="dev")] == [2]


def test_reserved_and_bad_values(tmp_path):
    with M.MetricWriter(tmp_path, tensorboard=False, devices=1) as w:
        with pytest.raises(ValueError, match="reserved"):
            w.write(0, {"hours": 1.0})
        with pytest.raises(TypeError, match="not a number"):
            w.write(0, {"x": "abc"})
        with pytest.raises(ValueError, match="split"):
            w.write(0, {"x": 1.0}, split="a/b")


def test_hours_continue_across_reopen(tmp_path, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(M.time, "monotonic", lambda: now[0])
    with M.MetricWriter(tmp_path, tensorboard=False, devices=1) as w:
        w.write(1, {"loss": 3.0})
        now[0] = 1800.0
        w.write(2, {"loss": 2.0})                 # 0.5 h
    now[0] = 10_000.0                             # downtime between sessions is not counted
    with M.MetricWriter(tmp_path, tensorboard=False, devices=1) as w:
        assert w.start_hours == pytest.approx(0.5)
        w.write(3, {"loss": 1.9})
        now[0] = 10_000.0 + 3600.0
        w.write(4, {"loss": 1.8})
    hours = [r["hours"] for r in M.read_metrics(tmp_path)]
    assert hours == pytest.approx([0.0, 0.5, 0.5, 1.5])
    assert all(a <= b for a, b in zip(hours, hours[1:]))


def test_truncated_last_line_is_skipped(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text(json.dumps({"step": 1, "split": "train", "hours": 2.0}) + "\n"
                 + '{"step": 2, "split": "tr')   # crash mid-write
    assert M.last_hours(str(p)) == 2.0
    with M.MetricWriter(tmp_path, tensorboard=False, devices=1) as w:
        w.write(3, {"loss": 1.0})
    with pytest.warns(UserWarning, match="truncated"):
        recs = M.read_metrics(p)
    assert [r["step"] for r in recs] == [1, 3] and recs[1]["hours"] >= 2.0
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        M.read_metrics(p, strict=True)


def _read_tfrecords(path):
    data = open(path, "rb").read()
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        out.append(data[pos + 12:pos + 12 + n])
        pos += 12 + n + 4
    return out


def test_tensorboard_event_files(tmp_path):
    with M.MetricWriter(tmp_path, tensorboard=True, devices=1) as w:
        w.write(5, {"loss": 2.5, "nanval": float("nan")})
        w.write(6, {"bpc": 1.25}, split="dev")
    files = glob.glob(str(tmp_path / "tensorboard" / "train" / "events.out.tfevents.*"))
    assert files and os.path.getsize(files[0]) > 0
    assert glob.glob(str(tmp_path / "tensorboard" / "dev" / "events.out.tfevents.*"))
    try:
        from tensorboardX.proto import event_pb2
    except ImportError:
        pytest.skip("no event proto to parse with")
    scalars = {}
    for rec in _read_tfrecords(files[0]):
        ev = event_pb2.Event.FromString(rec)
        for v in ev.summary.value:
            scalars[v.tag] = (ev.step, v.simple_value)
    assert scalars["loss"] == (5, 2.5) and math.isnan(scalars["nanval"][1])


def test_progress_disabled_tokens_per_sec():
    clock = FakeClock(0.0)
    p = Progress(100, initial=10, tokens_per_step=1000, disable=True, window=3, clock=clock)
    assert p.tokens_per_sec == 0.0
    for s in range(11, 16):
        clock.t += 0.5
        p.update(s, loss=1.0 + s)
    assert p.step == 15 and p.loss == 16.0
    assert p.tokens_per_sec == pytest.approx(2000.0)   # 1 step / 0.5 s * 1000 tokens
    clock.t += 10.0
    p.update(16)
    assert p.tokens_per_sec == pytest.approx(3 * 1000 / 11.0)   # window of 3 steps
    p.close()


def test_flops_formula_by_hand():
    # d=8, d'=4, 3 layers (1 attention), vocab 10, attn_len 6, d_in 5
    d, dp, V, L = 8, 4, 10, 6
    attn = 8 * dp + 2 * dp * dp + 3 * d * dp      # W_q (layer 2 reads d), W_kv, W_o
    proj1 = 5 * dp + 3 * d * dp                   # layer 1 reads d_in=5
    proj3 = d * dp + 3 * d * dp
    want = 6 * (attn + proj1 + proj3) + 12 * L * dp + 6 * d * V
    got = F.estimate_flops_per_token(d, dp, 3, 1, V, L, d_in=5, include_elementwise=False)
    assert got == want
    full = F.estimate_flops_per_token(d, dp, 3, 1, V, L, d_in=5)
    assert full == want + 3 * F.ELEMENTWISE_FLOPS_PER_D * d * 3
    with pytest.raises(ValueError, match="attn_layers"):
        F.estimate_flops_per_token(d, dp, 3, 4, V, L)


def test_flops_adaptive_by_hand():
    # d=16, factor 4, cutoffs [4, 10], vocab 20: dims (16, 4, 1), sizes (4, 6, 10)
    d, dp = 16, 8
    base = F.estimate_flops_per_token(d, dp, 1, 0, 2, 0, include_elementwise=False) - 6 * d * 2
    got = F.estimate_flops_per_token(d, dp, 1, 0, 20, 0, adaptive=True, cutoffs=[4, 10],
                                     include_elementwise=False)
    projections = 2 * (16 * d + 4 * d + 1 * d)        # input and softmax, every cluster
    head = 16 * (4 + 2)                                # shortlist words and 2 cluster logits
    tails = 4 * 6 + 1 * 10
    assert got - base == 6 * (projections + head + tails)
    # every cluster d wide (factor 1): no projections (Transformer-XL's div_val 1)
    square = F.estimate_flops_per_token(d, dp, 1, 0, 20, 0, adaptive=True, cutoffs=[4, 10],
                                        adaptive_factor=1.0, include_elementwise=False)
    assert square - base == 6 * (16 * (4 + 2) + 16 * 6 + 16 * 10)
    with pytest.warns(UserWarning, match="cutoffs"):
        F.estimate_flops_per_token(d, dp, 1, 0, 20, 0, adaptive=True)


def test_mfu_and_peak():
    assert mfu.peak_flops_per_device() is None                 # CPU test machine
    assert mfu.mfu(1e6, 1e9, None) is None
    assert mfu.mfu(1e6, 1e9, mfu.peak_flops_per_device()) is None
    assert mfu.peak_flops_per_device("NVIDIA H100 80GB HBM3") == 989e12
    assert mfu.peak_flops_per_device("NVIDIA H200") == 989e12
    assert mfu.peak_flops_per_device("NVIDIA A100-SXM4-80GB") == 312e12
    assert mfu.peak_flops_per_device("TPU v5 lite") == 197e12
    assert mfu.peak_flops_per_device("TPU v5p") == 459e12
    assert mfu.peak_flops_per_device("Some New Chip") is None
    assert mfu.mfu(1e5, 1e9, 1e15, num_devices=2) == pytest.approx(0.05)


def _synthetic_run(path, devices=2):
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "metrics.jsonl", "w") as f:
        for i in range(1, 6):
            f.write(json.dumps({"step": 100 * i, "split": "train", "time": 0.0, "hours": 0.1 * i,
                                "devices": devices, "loss": 2.0 / i}) + "\n")
            f.write(json.dumps({"step": 100 * i, "split": "dev", "time": 0.0, "hours": 0.1 * i,
                                "devices": devices, "bpc": 1.5 / i if i < 5 else "nan"}) + "\n")


def test_plot_writes_png(tmp_path, capsys):
    from srupp_jax.programs import plot
    _synthetic_run(tmp_path / "a")
    _synthetic_run(tmp_path / "b", devices=1)
    out = tmp_path / "fig" / "dev.png"
    assert plot.main(["--workdir", str(tmp_path / "a"), "--workdir", str(tmp_path / "b"),
                      "--label", "A", "--label", "B", "--out", str(out)]) == 0
    data = out.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    xs, ys, n = plot.run_curve(str(tmp_path / "a"), "dev_bpc")
    assert n == 2 and xs == pytest.approx([0.2, 0.4, 0.6, 0.8]) and len(ys) == 4  # nan dropped
    xs, _, _ = plot.run_curve(str(tmp_path / "a"), "dev_bpc", gpus=8)
    assert xs[0] == pytest.approx(0.8)


def test_plot_errors(tmp_path, capsys):
    from srupp_jax.programs import plot
    missing = tmp_path / "nope"
    with pytest.raises(SystemExit):
        plot.main(["--workdir", str(missing), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert "not found" in err and str(missing) in err
    _synthetic_run(tmp_path / "a")
    with pytest.raises(SystemExit):
        plot.main(["--workdir", str(tmp_path / "a"), "--metric", "dev_ppl",
                   "--out", str(tmp_path / "x.png")])
    assert "dev_ppl" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_plot_word_run_defaults_to_dev_ppl(tmp_path):
    """A word-level run, as the training loop logs it (dev_ppl in split "dev"): plotted without
    --metric, and the metrics listed on an error carry no doubled `dev_dev_` prefix."""
    from srupp_jax.programs import plot
    with M.MetricWriter(tmp_path, tensorboard=False) as w:
        for step in (1, 2, 3):
            w.write(step, {"train_loss": 5.0 / step, "train_ppl": 150.0 / step})
            w.write(step, {"dev_loss": 4.0 / step, "dev_ppl": 55.0 / step}, split="dev")
    assert plot.default_metric(str(tmp_path)) == "dev_ppl"
    out = tmp_path / "ppl.png"
    assert plot.main(["--workdir", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError) as e:
        plot.run_curve(str(tmp_path), "dev_bpc")
    assert "'dev_ppl'" in str(e.value) and "'train_ppl'" in str(e.value)
    assert "dev_dev_" not in str(e.value) and "train_train_" not in str(e.value)
