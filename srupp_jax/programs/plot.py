"""Plot a dev metric against training (device) hours for one or several runs.

The paper's Figures 1 and 3 (dev BPC against GPU hours):

  python -m srupp_jax.plot --workdir runs/a --workdir runs/b --label "SRU++" --label "T-XL" \\
      --out fig.png [--metric dev_bpc|dev_ppl] [--x hours|step] [--gpus N]

Each --workdir is a run directory holding metrics.jsonl (written by
`srupp_jax.training.metrics.MetricWriter`) or the path of such a file. A metric name is looked up in a
record either as a key (`dev_bpc`) or as `<split>_<key>` (the record
`{"split": "dev", "bpc": ..}` gives `dev_bpc`). With --x hours the x axis is the record's
`hours` times the device count: --gpus N if given, else the run's recorded `devices` field,
else 1. Without --metric: dev_bpc, or dev_ppl for a word-level run. Non-finite values
(diverged runs) are dropped from the curve.
Needs matplotlib (drawn with the Agg backend, no display). A mistake (a missing metrics.jsonl,
a metric no record has, a bad flag) prints one line `error: ...` and exits with status 2.
"""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence

from srupp_jax import errors
from srupp_jax.training.metrics import METRICS_FILE, read_metrics


def metric_value(record: dict, metric: str):
    """The value of `metric` in `record` (key `metric`, or `<split>_<key>`), or None."""
    if metric in record:
        return record[metric]
    split = record.get("split")
    if isinstance(split, str) and metric.startswith(split + "_"):
        return record.get(metric[len(split) + 1:])
    return None


def _metric_name(split, key: str) -> str:
    """`key` as --metric names it: `<split>_<key>`, unless key already starts with split_."""
    return key if key.startswith(f"{split}_") else f"{split}_{key}"


def _metrics_path(path: str) -> str:
    """A workdir's metrics.jsonl, or `path` itself when it names the file."""
    path = os.fspath(path)
    if os.path.isdir(path) or (not os.path.exists(path) and not path.endswith(".jsonl")):
        path = os.path.join(path, METRICS_FILE)
    return path


def default_metric(path: str) -> str:
    """dev_bleu for a translation run, dev_ppl for a word-level run (it logged dev_ppl and no
    dev_bpc), else dev_bpc."""
    records = read_metrics(_metrics_path(path))
    logged = lambda m: any(metric_value(r, m) is not None for r in records)
    if logged("dev_bleu"):
        return "dev_bleu"
    return "dev_ppl" if logged("dev_ppl") and not logged("dev_bpc") else "dev_bpc"


def run_curve(path: str, metric: str, x: str = "hours", gpus: Optional[int] = None):
    """(xs, ys, devices) of `metric` in the run at `path` (a workdir or a metrics.jsonl).

    Raises FileNotFoundError naming the missing file, ValueError when no record has the
    metric (listing the metrics that are there)."""
    path = _metrics_path(path)
    records = read_metrics(path)                     # FileNotFoundError names the path
    xs, ys, devices = [], [], 1
    for rec in records:
        y = metric_value(rec, metric)
        if not isinstance(y, (int, float)):
            continue
        n = gpus if gpus is not None else int(rec.get("devices") or 1)
        devices = n
        xv = rec["hours"] * n if x == "hours" else rec["step"]
        if math.isfinite(y) and math.isfinite(xv):
            xs.append(xv)
            ys.append(y)
    if not xs:
        available = sorted({_metric_name(r.get("split"), k) for r in records for k in r
                            if k not in ("step", "split", "time", "hours", "devices")})
        raise ValueError(f"{path}: no finite values of metric {metric!r}; "
                         f"metrics present: {available or 'none'}")
    return xs, ys, devices


def plot_runs(paths: Sequence[str], out: str, *, labels: Optional[Sequence[str]] = None,
              metric: Optional[str] = None, x: str = "hours", gpus: Optional[int] = None,
              title: Optional[str] = None, logy: bool = False) -> str:
    """Draw `metric` against x for each run in `paths` and save a PNG to `out`; returns out.
    metric None: dev_bpc, or dev_ppl for word runs (default_metric of the first run)."""
    if labels and len(labels) != len(paths):
        raise ValueError(f"{len(labels)} --label for {len(paths)} --workdir; give one per "
                         "run or none")
    if x not in ("hours", "step"):
        raise ValueError(f"x={x!r}; expected 'hours' or 'step'")
    if gpus is not None and gpus < 1:
        raise ValueError(f"gpus={gpus}; expected >= 1")
    metric = metric or default_metric(paths[0])
    curves = [run_curve(p, metric, x, gpus) for p in paths]   # all errors before drawing

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for i, (p, (xs, ys, n)) in enumerate(zip(paths, curves)):
        label = labels[i] if labels else os.path.basename(os.path.normpath(p))
        ax.plot(xs, ys, marker="o", markersize=2, linewidth=1.2, label=label)
    if x == "hours":
        counts = {n for _, _, n in curves}
        ax.set_xlabel("device hours" if counts != {1} else "training hours (1 device)")
    else:
        ax.set_xlabel("step")
    ax.set_ylabel(metric)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_dir = os.path.dirname(os.path.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = errors.OneLineArgumentParser(
        prog="python -m srupp_jax.plot",
        description="Plot a dev metric (BPC / PPL) against training hours from metrics.jsonl.")
    parser.add_argument("--workdir", action="append", required=True,
                        help="run directory with metrics.jsonl (or the file); repeat for runs")
    parser.add_argument("--label", action="append", default=None,
                        help="legend label, one per --workdir (default: directory name)")
    parser.add_argument("--out", required=True, help="output PNG path")
    parser.add_argument("--metric", default=None,
                        help="metric key, or <split>_<key> (default: dev_bpc, or dev_ppl for "
                             "a word-level run)")
    parser.add_argument("--x", choices=("hours", "step"), default="hours",
                        help="x axis: device hours (hours x devices) or step")
    parser.add_argument("--gpus", type=int, default=None,
                        help="devices per run to multiply hours by (default: the recorded "
                             "`devices` field, else 1)")
    parser.add_argument("--title", default=None)
    parser.add_argument("--logy", action="store_true", help="log-scale y axis")
    parser.add_argument("--traceback", action="store_true", help="the full stack of an error")
    args = parser.parse_args(argv)
    with errors.front_door(traceback=args.traceback):
        try:
            out = plot_runs(args.workdir, args.out, labels=args.label, metric=args.metric,
                            x=args.x, gpus=args.gpus, title=args.title, logy=args.logy)
        except ImportError as e:
            raise ValueError(f"plotting needs matplotlib (pip install matplotlib): {e}") from None
    print(f"wrote {out}")
    return 0
