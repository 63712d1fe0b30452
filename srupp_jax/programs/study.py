"""The compute-efficiency study: a dev metric against training time, every model the same budget.

    python -m srupp_jax.study --config=study_enwik8 --budget=8h --workdir=DIR
    python -m srupp_jax.study --config=configs/study_enwik8.py:cpu --budget=2m --workdir=DIR

The config is found by name (`study_enwik8`, `study_iwslt14`) from any directory, or by path,
as `srupp` finds its configs; errors are one line (srupp_jax/errors.py), logs short lines.

For each run of `config.study.order` (the config's `study.runs[name]`: a label, the paper row
it stands for and its `model` overrides of the shared config), one after another on the same
device and data: train with `modes.train` in `DIR/<name>` until `--budget` seconds
of training (the steps themselves; not the dev evaluations, checkpoint saves or the first
step after each (re)start, which compiles), evaluating `study.metric` (dev_bpc; translation
studies: dev_bleu) whenever the training time passes one of the marks budget * i /
study.marks. Runs resume from their checkpoints (a run that finished is skipped), so an
interrupted study continues where it stopped when started again with the same command.

Then it writes, in DIR:
  study.json   per run: label, paper row, parameters, FLOPs per token, tokens/s (trained
               tokens / training seconds), steps, the dev metric at each mark (a run that
               reached train.steps before a mark: its last evaluation), the dev curve
  study.md     the same as a Markdown table
  study.png    the dev metric against training time (the paper's Figures 1 and 3)
"""
from __future__ import annotations

import copy
import json
import os
import re
import sys
from typing import Optional

from absl import app, flags, logging
from ml_collections import config_flags

from srupp_jax import errors
from srupp_jax.programs import cli, config_keys, logs

STUDY_FILES = ("study.json", "study.md", "study.png")


def parse_budget(text: str) -> float:
    """'90', '90s', '20m', '1.5h' -> seconds (> 0); ValueError naming the text otherwise."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(text))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"budget={text!r}; expected a positive time such as 90, 90s, 20m or 2h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def time_marks(budget: float, marks: int) -> tuple[float, ...]:
    """The training times (seconds) at which the dev metric is measured: budget * i / marks."""
    if marks < 1:
        raise ValueError(f"study.marks={marks}; expected >= 1")
    return tuple(budget * (i + 1) / marks for i in range(marks))


def config_of_run(config, name: str, budget: float):
    """The training config of run `name`: the shared config, the run's `model` (and `train`,
    if it has one) overrides, the time budget and marks; no `study` section."""
    if name not in config.study.runs:
        raise ValueError(f"study.order names {name!r}, which is not in study.runs "
                         f"({', '.join(config.study.runs)})")
    run = config.study.runs[name]
    for section in ("model", "train"):
        for key in run.get(section, {}):
            if key not in config[section]:
                raise ValueError(config_keys.unknown(
                    f"{section}.{key}", name=f"study.runs.{name}.{section}.{key}"))
    cfg = copy.deepcopy(config)
    with cfg.unlocked():
        del cfg["study"]
        for section in ("model", "train"):
            for key, value in run.get(section, {}).items():
                cfg[section][key] = tuple(value) if isinstance(value, list) else value
        cfg.train.time_budget = float(budget)
        cfg.train.eval_marks = time_marks(budget, config.study.marks)
    return cfg


def _finished(workdir: str) -> Optional[dict]:
    path = os.path.join(workdir, "done.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def train_run(cfg, workdir: str, budget: float) -> None:
    """Train one run to its budget (resuming), then mark it done; SystemExit if it stopped
    early (SIGTERM), so that the study stops too and a rerun resumes it."""
    from srupp_jax.programs import modes
    from srupp_jax.training.metrics import read_metrics, train_seconds
    from srupp_jax.training.workdir import EXIT_CODES
    if _finished(workdir):
        logging.info("%s: finished earlier, skipped", workdir)
        return
    status = modes.train(cfg, workdir)["status"]
    seconds = train_seconds(workdir, 10 ** 12)
    steps = max([r["step"] for r in read_metrics(workdir)] or [0])
    if seconds < budget and steps < cfg.train.steps:
        logging.warning("%s %s after %.0f of %.0f training seconds; run the same command again "
                        "to resume the study", workdir, status, seconds, budget)
        raise SystemExit(EXIT_CODES.get(status) or 1)
    logging.info("%s: done, %.0f s of training, %d steps%s", workdir, seconds, steps,
                 " (train.steps reached)" if steps >= cfg.train.steps else "")
    with open(os.path.join(workdir, "done.json"), "w") as f:
        json.dump({"train_seconds": seconds, "steps": steps}, f)


def summarize(config, name: str, workdir: str, budget: float) -> dict:
    """One table row: sizes, speed and the dev curve of a trained run."""
    import jax
    from flax import nnx

    from srupp_jax import tasks
    from srupp_jax.training.metrics import read_metrics, train_seconds
    from srupp_jax.training.steps import count_params

    cfg = config_of_run(config, name, budget)
    run, metric = config.study.runs[name], study_metric(config)
    task = tasks.make(cfg)
    task.load()                       # the data's sizes (vocabulary, translation lengths)
    model = nnx.eval_shape(lambda: task.build_model(nnx.Rngs(0)))
    records = read_metrics(workdir)
    dev = sorted((r["train_seconds"], r[metric]) for r in records
                 if r["split"] == "dev" and "train_seconds" in r and metric in r)
    steps = max([r["step"] for r in records] or [0])
    seconds = train_seconds(workdir, 10 ** 12)
    finished = steps >= cfg.train.steps     # reached train.steps before the budget
    at_marks = []
    for mark in cfg.train.eval_marks:   # the first evaluation at or after each mark
        after = [value for s, value in dev if s >= mark - 1e-9]
        at_marks.append(after[0] if after else (dev[-1][1] if finished and dev else None))
    return {
        "name": name, "label": run.label, "paper": run.paper, "arch": cfg.model.arch,
        "params": count_params(model),
        "flops_per_token": task.flops_per_token(model),
        "tokens_per_sec": steps * task.tokens_per_step / seconds if seconds else 0.0,
        "steps": steps, "train_seconds": seconds, "devices": jax.device_count(),
        "metric": metric, "marks_seconds": list(cfg.train.eval_marks),
        f"{metric}_at_marks": at_marks, "dev_curve": [[s, value] for s, value in dev],
    }


def study_metric(config) -> str:
    """The dev metric a study compares: `study.metric` (dev_bpc when absent)."""
    return config.study.metric


def metric_label(metric: str) -> str:
    """"dev_bpc" -> "dev BPC"."""
    split, _, name = metric.partition("_")
    return f"{split} {name.upper()}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h" if seconds >= 360 else f"{seconds:.0f} s"


def markdown_table(rows: list[dict]) -> str:
    """The study table: one row per run, the dev metric at each time mark."""
    marks = rows[0]["marks_seconds"] if rows else []
    label = metric_label(rows[0]["metric"]) if rows else ""
    head = (["model", "paper row", "params", "GFLOPs/token", "tokens/s", "steps"]
            + [f"{label} @ {_hours(m)}" for m in marks])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        bpcs = ["-" if b is None else f"{b:.3f}" for b in r[f"{r['metric']}_at_marks"]]
        lines.append("| " + " | ".join(
            [r["label"], r["paper"], f"{r['params'] / 1e6:.3g}M",
             f"{r['flops_per_token'] / 1e9:.3g}", f"{r['tokens_per_sec']:,.0f}",
             f"{r['steps']:,}"] + bpcs) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out: str) -> None:
    """The dev metric against training time (x the device count; hours, or minutes for
    short studies), one line per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    longest = max([s * r["devices"] for r in rows for s, _ in r["dev_curve"]] or [0])
    unit, scale = ("hours", 3600) if longest >= 1800 else ("minutes", 60)
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for r in rows:
        if r["dev_curve"]:
            xs = [s / scale * r["devices"] for s, _ in r["dev_curve"]]
            ax.plot(xs, [b for _, b in r["dev_curve"]], marker="o", markersize=3,
                    label=f"{r['label']} ({r['params'] / 1e6:.3g}M)")
    devices = {r["devices"] for r in rows}
    ax.set_xlabel(f"training {unit}" + (" (1 device)" if devices == {1} else " x devices"))
    ax.set_ylabel(metric_label(rows[0]["metric"]) if rows else "")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def run_study(config, workdir: str, budget: float) -> list[dict]:
    """Train every run of config.study.order for `budget` training seconds (resuming), then
    write study.json, study.md and study.png in `workdir`; returns the rows."""
    from srupp_jax.programs import modes
    order = list(config.study.order)
    if not order:
        raise ValueError("study.order is empty; expected run names from study.runs")
    configs = {name: config_of_run(config, name, budget) for name in order}
    for name, cfg in configs.items():    # every config checked before anything trains
        modes.validate_config(cfg, cfg.mesh.num_devices or _device_count())
    os.makedirs(workdir, exist_ok=True)
    for name, cfg in configs.items():
        logging.info("study: %s (%s), %s of training", name, config.study.runs[name].label,
                        _hours(budget))
        train_run(cfg, os.path.join(workdir, name), budget)
    rows = [summarize(config, name, os.path.join(workdir, name), budget) for name in order]
    with open(os.path.join(workdir, "study.json"), "w") as f:
        json.dump({"budget_seconds": budget, "rows": rows}, f, indent=1)
    with open(os.path.join(workdir, "study.md"), "w") as f:
        f.write(markdown_table(rows))
    plot(rows, os.path.join(workdir, "study.png"))
    return rows


def _device_count() -> int:
    import jax
    return jax.device_count()


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags, defined when it runs (importing this module defines none, so it
    never collides with main.py's)."""
    # unlocked: a run's override may name any model / train key (config_keys.check names a
    # key that is none)
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Study config: a name "
                                    "(study_enwik8, study_iwslt14) or a file, :variant.",
                                    lock_config=False, accept_new_attributes=True)
    flags.DEFINE_string("workdir", None, "Directory of the study (one sub-directory per run).")
    flags.DEFINE_string("budget", None, "Training time per model: seconds, or 90s / 20m / 2h.")
    flags.DEFINE_bool("traceback", False, "Show the full stack of an error instead of one line.")


DEFAULT_CONFIG = os.path.join(cli.CONFIG_DIR, "study_enwik8.py")


def main(argv):
    logs.setup()
    errors.stop_on_sigterm()
    with errors.front_door(traceback=FLAGS.traceback):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments {' '.join(argv[1:])!r}; every argument "
                                 "is a --flag=VALUE")
        if not FLAGS.workdir or not FLAGS.budget:
            raise app.UsageError("--workdir and --budget are required, e.g. --workdir=runs/study "
                                 "--budget=2h")
        budget = parse_budget(FLAGS.budget)
        config_keys.check(FLAGS.config, where="--config=" + config_flags.get_config_filename(
            FLAGS["config"]) + " or a --config.KEY override")
        from srupp_jax.training.workdir import check_writable
        check_writable(FLAGS.workdir)
        run_study(FLAGS.config, FLAGS.workdir, budget)
        sys.stdout.write(open(os.path.join(FLAGS.workdir, "study.md")).read())


def run() -> None:
    """`python -m srupp_jax.study`: configs by name, --help (exit 0), one-line errors."""
    with errors.front_door(traceback="--traceback" in sys.argv):
        sys.argv[:] = cli.prepare_argv(sys.argv, default=DEFAULT_CONFIG)
    define_flags()
    if any(a in cli.HELP_ARGS for a in sys.argv[1:]):
        print(__doc__.strip() + "\n\nFlags:\n" + "\n".join(
            f"  --{n}: {FLAGS[n].help}" for n in ("config", "workdir", "budget", "traceback")))
        sys.exit(0)
    app.run(main, flags_parser=cli.parse_flags)
