"""What benchmarks/gpu_all.sh measured, set against issue 22's targets.

    python benchmarks/gpu_summary.py main WORKDIR OUT.json [--steps N]
        main.py's run in WORKDIR: its logged train rows (tokens/s, MFU) and its profile window
        (WORKDIR/profile, N steps), ops by time
    python benchmarks/gpu_summary.py summary DIR [--parts FILE]
        the parts' status (FILE: lines 'name rc seconds json'), the kernel, training and main.py
        numbers of DIR's JSON files against the targets; prints a short table, writes
        DIR/summary.json

Targets (H100/H200, bf16, the same run as the official code): recurrence forward+backward at
8x1024x3072 <= 0.6 ms and >= 3x the official kernel; >= 60% of the copy bandwidth at
16x1024x4096; batch-1 forward at 1x2560x4096 <= 0.5 ms; training tokens/s >= 2x the official
at every (k, B); MFU >= 0.40 at B=32; main.py's logged tokens/s within 5% of the benchmark's.
"""
import argparse
import collections
import glob
import json
import os

from report import save_json

TOP = 20
# Events that are not ops: XLA:CPU's around the ops, Python functions ($file:line name).
WRAPPERS = ("ThunkExecutor::", "ThreadpoolListener::", "$")


def profile_ops(profile_dir: str, steps: int) -> dict:
    """{group: {"ms_per_step", "ops": [[name, ms per step, calls per step], ...]}} of the newest
    trace under profile_dir: on a GPU the "XLA Ops" line and the kernels of the stream lines,
    on a CPU the ops XLA's threads ran."""
    from jax.profiler import ProfileData
    files = sorted(glob.glob(os.path.join(profile_dir, "**", "*.xplane.pb"), recursive=True),
                   key=os.path.getmtime)
    if not files:
        return {"error": f"no *.xplane.pb under {profile_dir}"}
    planes = list(ProfileData.from_file(files[-1]).planes)
    device = [p for p in planes if p.name.startswith("/device:")]
    groups = collections.defaultdict(list)
    for plane in device or [p for p in planes if p.name == "/host:CPU"]:
        for line in plane.lines:
            if device:
                key = "xla_ops" if line.name == "XLA Ops" else (
                    "kernels" if line.name.startswith("Stream") else None)
            else:
                key = None if line.name == "python" else "cpu_ops"
            if key:
                groups[key].append(line)
    out = {"trace": os.path.relpath(files[-1], profile_dir), "steps": steps}
    for key, lines in groups.items():
        total, calls = collections.Counter(), collections.Counter()
        for line in lines:
            for e in line.events:
                if not e.name.startswith(WRAPPERS):
                    total[e.name] += e.duration_ns / 1e6
                    calls[e.name] += 1
        out[key] = dict(ms_per_step=sum(total.values()) / steps,
                        ops=[[n, ms / steps, calls[n] / steps] for n, ms in total.most_common(TOP)])
    return out


def main_run(workdir: str, out: str, steps: int) -> dict:
    """main.py's train rows and profile, written to `out`."""
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train = [dict(step=r["step"], tokens_per_sec=r.get("tokens_per_sec"), mfu=r.get("mfu"),
                  loss=r.get("train_loss")) for r in rows if r.get("split") == "train"]
    result = dict(train=train, tokens_per_sec=train[-1]["tokens_per_sec"] if train else None,
                  profile=profile_ops(os.path.join(workdir, "profile"), steps))
    save_json(out, **result)
    return result


def _load(path):
    return json.load(open(path)) if os.path.exists(path) else None


def _check(checks, name, value, ok, text):
    checks.append(dict(target=name, value=value, met=None if value is None else bool(ok)))
    state = "-" if value is None else ("met" if ok else "MISSED")
    print(f"  {name:52} {text:>24}  {state}")


def summary(folder: str, parts_file: str = "") -> dict:
    """The table of the whole run (see the module docstring); writes folder/summary.json."""
    parts = []
    if parts_file and os.path.exists(parts_file):
        for line in open(parts_file):
            name, rc, seconds, *json_path = line.split()
            parts.append(dict(part=name, rc=int(rc), seconds=int(seconds),
                              json=json_path[0] if json_path else None,
                              status={0: "ok", 124: "TIMED OUT", 137: "KILLED"}.get(
                                  int(rc), f"FAILED ({rc})")))
    print("parts:")
    for p in parts:
        print(f"  {p['part']:14} {p['status']:12} {p['seconds']:4d} s  {p['json'] or ''}")
    checks = []
    kernel = _load(os.path.join(folder, "recurrence_gpu_bfloat16.json"))
    tune = _load(os.path.join(folder, "recurrence_tune.json"))
    device = (kernel or tune or {}).get("env", {}).get("device_kind")
    print(f"device: {device}")
    if tune and tune["rows"]:
        best = min(tune["rows"], key=lambda r: r["fwd_bwd_ms"])
        print(f"sweep at {best['batch']}x{best['length']}x{best['d']}: best {best['impl']} "
              f"{best['fwd_bwd_ms']:.3f} ms fwd+bwd of {len(tune['rows'])} variants")
    rows = {(r["impl"], r["batch"], r["length"], r["d"]): r for r in (kernel or {}).get("rows", [])}
    print("targets:")
    shapes = sorted({k[1:] for k in rows}, key=lambda s: s[0] * s[1] * s[2])
    for shape in shapes:
        ours = min((r for k, r in rows.items() if k[1:] == shape and k[0].startswith("pallas")),
                   key=lambda r: r["fwd_bwd_ms"], default=None)
        official = rows.get(("official",) + shape)
        label = "x".join(map(str, shape))
        if ours is None:
            continue
        print(f"  kernel {label}: {ours['impl']} fwd {ours['fwd_ms']:.3f} ms, fwd+bwd "
              f"{ours['fwd_bwd_ms']:.3f} ms ({100 * ours['fwd_bwd_copy_frac']:.0f}% of copy)"
              + (f"; official {official['fwd_ms']:.3f} / {official['fwd_bwd_ms']:.3f} ms"
                 if official else ""))
        if shape == (8, 1024, 3072):
            _check(checks, "fwd+bwd 8x1024x3072 <= 0.6 ms", ours["fwd_bwd_ms"],
                   ours["fwd_bwd_ms"] <= 0.6, f"{ours['fwd_bwd_ms']:.3f} ms")
            x = official and official["fwd_bwd_ms"] / ours["fwd_bwd_ms"]
            _check(checks, "fwd+bwd 8x1024x3072 >= 3x official", x, x and x >= 3,
                   f"{x:.2f}x" if x else "no official")
        if shape == (16, 1024, 4096):
            frac = ours["fwd_bwd_copy_frac"]
            _check(checks, "fwd+bwd 16x1024x4096 >= 60% of copy bandwidth", frac, frac >= 0.6,
                   f"{100 * frac:.0f}%")
        if shape == (1, 2560, 4096):
            _check(checks, "fwd 1x2560x4096 <= 0.5 ms", ours["fwd_ms"], ours["fwd_ms"] <= 0.5,
                   f"{ours['fwd_ms']:.3f} ms")
    training = _load(os.path.join(folder, "training_gpu.json"))
    bench = {}
    for r in (training or {}).get("rows", []):
        bench.setdefault((r["k"], r["batch"]), {})[r["impl"]] = r
    for (k, batch), impls in sorted(bench.items()):
        ours = next((r for name, r in impls.items() if name != "official"), None)
        official = impls.get("official")
        if ours is None:
            continue
        x = official and ours["tokens_per_sec"] / official["tokens_per_sec"]
        _check(checks, f"training k={k} B={batch} >= 2x official", x, x and x >= 2.0,
               f"{ours['tokens_per_sec']:,.0f} tok/s" + (f", {x:.2f}x" if x else ""))
        if batch == 32:
            _check(checks, f"MFU k={k} B=32 >= 0.40", ours["mfu"],
                   ours["mfu"] is not None and ours["mfu"] >= 0.40,
                   "-" if ours["mfu"] is None else f"{ours['mfu']:.3f}")
    precision = _load(os.path.join(folder, "training_precision_gpu.json"))
    if precision:
        print("precision and remat (enwik8 base k=1):")
        for r in precision["rows"]:
            peak = "-" if r["peak_memory_gb"] is None else f"{r['peak_memory_gb']:.1f} GB"
            print(f"  B={r['batch']} {r['dtype']:9s} remat {r['remat']:6s} "
                  f"{r['tokens_per_sec']:,.0f} tok/s, peak {peak}")
    main = _load(os.path.join(folder, "main_train.json"))
    ref = min((r for (k, b), impls in bench.items() for name, r in impls.items()
               if name != "official" and k == 1 and r["variant"] == "base"),
              key=lambda r: r["batch"], default=None)     # main.py runs at the smallest B
    if main and main["tokens_per_sec"] and ref:
        gap = main["tokens_per_sec"] / ref["tokens_per_sec"] - 1
        _check(checks, f"main.py tokens/s within 5% of the benchmark (B={ref['batch']})", gap,
               abs(gap) <= 0.05, f"{main['tokens_per_sec']:,.0f} vs "
                                 f"{ref['tokens_per_sec']:,.0f}")
    if main and isinstance(main.get("profile"), dict):
        prof = main["profile"]
        for key in ("xla_ops", "kernels", "cpu_ops"):
            if key in prof:
                top = ", ".join(f"{n} {ms:.2f}" for n, ms, _ in prof[key]["ops"][:5])
                print(f"profile {key}: {prof[key]['ms_per_step']:.1f} ms/step; top ms/step: {top}")
    result = dict(device=device, parts=parts, checks=checks)
    save_json(os.path.join(folder, "summary.json"), **result)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    m = sub.add_parser("main")
    m.add_argument("workdir")
    m.add_argument("out")
    m.add_argument("--steps", type=int, default=10, help="steps in the profile window")
    s = sub.add_parser("summary")
    s.add_argument("folder")
    s.add_argument("--parts", default="")
    a = p.parse_args(argv)
    if a.what == "main":
        return main_run(a.workdir, a.out, a.steps)
    return summary(a.folder, a.parts)


if __name__ == "__main__":
    main()
