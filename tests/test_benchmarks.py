"""The benchmark scripts run end to end at toy sizes (their numbers are not checked: tests
never assert timings), and the recurrence benchmark's reference check can fail."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
import inference as bench_inference  # noqa: E402
import recurrence as bench_recurrence  # noqa: E402


@pytest.mark.slow
@pytest.mark.torch_ref
def test_recurrence_benchmark_all_variants(tmp_path):
    """scan, a tuned Pallas variant (interpret mode here) and the official `sru` package (its
    CPU path here, its CUDA kernel on a GPU) on one shape; each agrees with scan before it is
    timed, and the JSON holds a row per variant."""
    if not os.environ.get("CI"):   # CI installs requirements-test.txt: there sru must import
        pytest.importorskip("sru", reason="the official variant needs sru==3.0.0.dev6")
    out = tmp_path / "r.json"
    rows = bench_recurrence.main(["--impls", "scan,pallas:8:1:2,official", "--sizes", "2x5x12",
                                  "--repeats", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert [r["impl"] for r in saved["rows"]] == ["scan", "pallas:8:1:2", "official"]
    assert saved["env"]["official"]["sru"] == "3.0.0.dev6"
    for r in rows:
        assert r["rel_err"] < 1e-5 and r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0


def test_recurrence_benchmark_stops_on_a_wrong_variant(tmp_path):
    with pytest.raises(SystemExit, match=r"assoc at 2x5x12 float32: relative error .* against "
                                         r"scan, more than --max_err 1e-30"):
        bench_recurrence.main(["--impls", "scan,assoc", "--sizes", "2x5x12", "--repeats", "1",
                               "--max_err", "1e-30", "--out", str(tmp_path / "r.json")])


def test_recurrence_benchmark_runs_the_tpu_kernel(tmp_path):
    """--impls pallas_tpu (default options) and pallas_tpu:B:D:T, the command a TPU runs
    (Pallas interprets the kernel here), each checked against scan before it is timed."""
    rows = bench_recurrence.main(["--impls", "pallas_tpu,pallas_tpu:1:128:2,scan", "--sizes",
                                  "2x5x12", "--repeats", "1", "--out", str(tmp_path / "r.json")])
    assert [r["impl"] for r in rows] == ["pallas_tpu", "pallas_tpu:1:128:2", "scan"]
    assert all(r["rel_err"] < 1e-5 and r["fwd_bwd_ms"] > 0 for r in rows)
    assert bench_recurrence.parse_impl("pallas_tpu:2:3072:16") == (
        "pallas_tpu", dict(block_b=2, block_d=3072, chunk=16))


@pytest.mark.parametrize("spec", ["pallas:64:x", "scan:32", "cuda", "pallas:1:2:3:4",
                                  "pallas_tpu:1:2:3:4"])
def test_recurrence_benchmark_bad_impl(spec):
    with pytest.raises(SystemExit, match=f"--impls entry '{spec}'"):
        bench_recurrence.parse_impl(spec)


@pytest.mark.slow
def test_inference_benchmark_runs(tmp_path):
    """Both rows (k = 1 and k = 5) of the Table 7 measurement at a toy shape."""
    out = tmp_path / "i.json"
    rows = bench_inference.main(["--d", "16", "--d_proj", "8", "--vocab", "40",
                                 "--cutoffs", "10,20", "--attn_len", "8", "--tokens", "32",
                                 "--gen_tokens", "4", "--repeats", "1", "--out", str(out)])
    assert [r["variant"] for r in rows] == ["k=1", "k=5"]
    assert [r["attention_layers"] for r in rows] == [10, 2]
    assert all(r["eval_tokens_per_sec"] > 0 and r["gen_ms_per_token"] > 0 for r in rows)
    assert json.loads(out.read_text())["results"] == rows


@pytest.mark.slow
@pytest.mark.torch_ref
def test_training_benchmark_runs_ours_and_the_official(tmp_path):
    """configs/enwik8.py and its :k5 variant at a toy width, our step and sru.SRUpp's, one
    row each with positive speeds; the JSON holds the rows the issue names."""
    if not os.environ.get("CI"):
        pytest.importorskip("sru", reason="the official rows need sru==3.0.0.dev6")
    sys.path.insert(0, os.path.dirname(bench_inference.__file__))
    import training as bench_training
    out = tmp_path / "t.json"
    rows = bench_training.main(["--d", "32", "--d_proj", "8", "--layers", "5", "--unroll", "16",
                                "--batches", "2", "--impls", "scan", "--dtype", "float32",
                                "--warmup", "1", "--steps", "2", "--out", str(out)])
    assert [(r["impl"], r["k"], r["attention_layers"]) for r in rows] == [
        ("scan", 1, 5), ("official", 1, 5), ("scan", 5, 1), ("official", 5, 1)]
    saved = json.loads(out.read_text())
    for r in saved["rows"]:
        assert r["tokens_per_sec"] > 0 and r["step_ms"] > 0 and r["batch"] == 2
        assert {"mfu", "peak_memory_gb", "flops_per_token"} <= set(r)
    assert saved["versions"]["sru"] and saved["device"]["kind"]


def test_translation_benchmark_at_toy_sizes(tmp_path):
    """Training tokens/s of the three Table 8 models and greedy / beam 5 decoding in one run
    (toy widths here; the same command at Table 8 sizes on a GPU)."""
    import translation as bench_translation
    out = tmp_path / "t.json"
    rows = bench_translation.main(["--sizes", "toy", "--vocab", "64", "--length", "8",
                                   "--batch_tokens", "64", "--decode_batches", "1,4",
                                   "--steps", "1", "--warmup", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    train = [r for r in saved["rows"] if r["kind"] == "train"]
    assert [r["model"] for r in train] == ["srupp", "srupp_k2", "transformer"]
    assert train[0]["params"] > train[1]["params"]          # k = 2: fewer attention layers
    decoded = {(r["model"], r["beam"], r["batch"]) for r in rows if r["kind"] == "decode"}
    assert len(decoded) == 12 and all(r["sentences_per_sec"] > 0 for r in rows
                                      if r["kind"] == "decode")
