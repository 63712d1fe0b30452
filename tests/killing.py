"""The kill harness: a real run through main.py, killed with SIGKILL at a point of its life,
then rerun with the same command; the rerun must finish with the final metrics, metric rows
and parameters of a run never killed (bit-exact on CPU), with no step repeated in
metrics.jsonl and nothing half-written left behind.

Kill points (`points`): a phase the run marks (srupp_jax/phases.py; the process kills itself
the N-th time it enters it, SRUPP_JAX_AT="PHASE#N=kill") or a moment (a fraction of the
uninterrupted run's wall time, then SIGKILL from outside). CI kills once at each phase of
CI_PHASES and at TIMED moments per task; SRUPP_KILLS=N picks N points per task spread over
every phase and occurrence and over time; SRUPP_KILL_REPORT=FILE appends one JSON line per
kill, and `python tests/killing.py FILE` prints the README's table from it.

A task is one entry of TASKS: its main.py arguments (sizes only) and nothing else; every
phase its uninterrupted run enters is a kill point.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_faults import TINY, TINY_CLASSIFICATION, TINY_TRANSLATION  # noqa: E402

VOLATILE = {"time", "hours", "tokens_per_sec", "mfu", "train_seconds"}   # clock readings
# The phases CI kills at, once each: cache building, compile, training steps, an asynchronous
# save, evaluation, the final record (the list); SRUPP_KILLS covers every phase.
CI_PHASES = ("cache.write", "train.compile", "train.log", "checkpoint.save", "eval.batch",
             "train.record")
TIMED = 1                       # moments per task in CI


@dataclasses.dataclass(frozen=True)
class Task:
    """A task of the matrix: main.py's arguments without --workdir and the data cache, and
    the phases CI kills it at (those its run enters)."""
    args: tuple
    ci_phases: tuple = CI_PHASES


TASKS = {
    "lm": Task((*TINY, "--config.train.steps=12", "--config.train.log_every=2",
                "--config.train.eval_every=6", "--config.train.checkpoint_every=3")),
    "translation": Task((*TINY_TRANSLATION, "--config.train.steps=8",
                         "--config.train.log_every=2", "--config.train.eval_every=4",
                         "--config.train.checkpoint_every=2", "--config.eval.best=bleu",
                         "--config.eval.max_sentences=16", "--config.decode.beam_size=2")),
    # bytes: no token cache to build (its labelled lines are read in memory)
    "classification": Task((*TINY_CLASSIFICATION, "--config.train.steps=8",
                            "--config.train.log_every=2", "--config.train.eval_every=4",
                            "--config.train.checkpoint_every=2"),
                           tuple(p for p in CI_PHASES if p != "cache.write")),
}


def scale() -> int:
    """SRUPP_KILLS: kill points per task (0: CI's)."""
    return int(os.environ.get("SRUPP_KILLS", "0") or 0)


def points(task: str) -> list:
    """[(kind, what, index)] of `task`: ("phase", name, i) kills at the i-th choice of an
    occurrence of that phase (resolved against the uninterrupted run; name None: the i-th
    point of a round robin over every phase), ("time", n, j) at the j-th of n moments."""
    n = scale()
    if not n:
        return ([("phase", p, 0) for p in TASKS[task].ci_phases]
                + [("time", TIMED, j) for j in range(TIMED)])
    timed = max(1, n // 3)
    phases = [("phase", None, i) for i in range(n - timed)]      # resolved: round robin
    return phases + [("time", timed, j) for j in range(timed)]


def env(jax_cache: str, **extra) -> dict:
    """The environment of a run: CPU, the JAX compilation cache `jax_cache` (if any), `extra`
    (SRUPP_JAX_AT and SRUPP_JAX_PHASES only when given)."""
    e = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
    if jax_cache:
        e.update(JAX_COMPILATION_CACHE_DIR=jax_cache,
                 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    for name in ("SRUPP_JAX_AT", "SRUPP_JAX_PHASES"):
        if name not in extra:
            e.pop(name, None)
    return e


def command(task: str, workdir, cache) -> list:
    return [sys.executable, "main.py", *TASKS[task].args, f"--workdir={workdir}",
            f"--config.data.cache_dir={cache}"]


def run(task: str, workdir, cache, jax_cache: str, timeout=600, **extra):
    return subprocess.run(command(task, workdir, cache), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env(jax_cache, **extra))


def metric_rows(workdir, setup: bool = False) -> list:
    """The rows of workdir's metrics.jsonl without clock readings; the "setup" rows (what
    each start chose: one more for every restart) only with `setup`."""
    rows = [json.loads(line) for line in open(pathlib.Path(workdir) / "metrics.jsonl")
            if line.strip()]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows
            if setup or r["split"] != "setup"]


def final_arrays(workdir) -> dict:
    """{tree/leaf: numpy array} of the newest checkpoint's params and optimizer state."""
    import orbax.checkpoint as ocp
    folder = pathlib.Path(workdir) / "checkpoints"
    step = max(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    out = {}
    for tree in ("params", "opt_state"):
        restored = ocp.StandardCheckpointer().restore(str(folder / str(step) / tree))
        out.update({f"{tree}/{k}": np.asarray(v) for k, v in restored.items()})
    return out


def final_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@dataclasses.dataclass
class Straight:
    """The uninterrupted run of a task (its workdir root / "w"): what every rerun must
    equal."""
    root: pathlib.Path
    seconds: float
    phases: dict            # phase -> how many times the run entered it
    final: dict
    rows: list
    arrays: dict
    steps: list


def straight_run(task: str, root: pathlib.Path, jax_cache: str) -> Straight:
    log = root / "phases.log"
    if scale():         # moments are fractions of a warm run's time (the reruns are warm)
        run(task, root / "warm", root / "warm_cache", jax_cache)
    start = time.perf_counter()
    out = run(task, root / "w", root / "cache", jax_cache, SRUPP_JAX_PHASES=str(log))
    seconds = time.perf_counter() - start
    assert out.returncode == 0, out.stderr[-3000:]
    counts = {}
    for name in log.read_text().split():
        counts[name] = counts.get(name, 0) + 1
    return Straight(root, seconds, counts, final_json(out.stdout), metric_rows(root / "w"),
                    final_arrays(root / "w"), saved_steps(root / "w"))


def saved_steps(workdir) -> list:
    folder = pathlib.Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def resolve(point, straight: Straight):
    """(phase, occurrence) of a phase point, or (None, seconds) of a moment."""
    kind, what, i = point
    if kind == "time":
        return None, straight.seconds * (i + 0.5) / what
    names = sorted(straight.phases)
    if what is None:                            # round robin over phases, then occurrences
        what, i = names[i % len(names)], i // len(names)
    count = straight.phases[what]
    return what, (count + 1) // 2 if not scale() else 1 + i % count


def kill_and_rerun(task: str, point, straight: Straight, root: pathlib.Path,
                   jax_cache: str) -> dict:
    """Kill a run of `task` at `point`, rerun it; the outcome with `problems` (none: the
    rerun equals the uninterrupted run)."""
    phase, at = resolve(point, straight)
    w, cache, log = root / "w", root / "cache", root / "killed_phases.log"
    if phase:
        killed = run(task, w, cache, jax_cache, SRUPP_JAX_PHASES=str(log),
                     SRUPP_JAX_AT=f"{phase}#{at}=kill")
        died = killed.returncode == -9
    else:
        proc = subprocess.Popen(command(task, w, cache), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL,
                                env=env(jax_cache, SRUPP_JAX_PHASES=str(log)))
        try:
            proc.wait(timeout=at)
        except subprocess.TimeoutExpired:
            proc.kill()
        died = proc.wait() == -9
    entered = log.read_text().split() if log.exists() else []
    rerun = run(task, w, cache, jax_cache)
    outcome = dict(task=task, kind="phase" if phase else "time",
                   at=f"{phase}#{at}" if phase else round(at, 1), killed=died,
                   died_in=entered[-1] if entered else "start", problems=problems(
                       rerun, w, cache, straight))
    resumed = re.search(r"resumed from step (\d+)", rerun.stderr)
    quarantine = w / "checkpoints" / "quarantine"
    outcome.update(resumed=int(resumed.group(1)) if resumed else 0,
                   quarantined=sorted(os.listdir(quarantine)) if quarantine.is_dir() else [],
                   cache_rebuilt="building the" in rerun.stderr,
                   eval_redone="which a signal stopped" in rerun.stderr)
    report = os.environ.get("SRUPP_KILL_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps(outcome) + "\n")
    return outcome


def problems(rerun, w, cache, straight: Straight) -> list:
    """What the rerun lost or changed, against the uninterrupted run ([] for nothing)."""
    if rerun.returncode != 0:
        return [f"rerun exit {rerun.returncode}: {rerun.stderr[-1500:]}"]
    out = []
    final = final_json(rerun.stdout)
    changed = sorted(k for k in straight.final if k not in VOLATILE
                     and final.get(k) != straight.final[k])
    if changed:
        out.append("final metrics differ: "
                   f"{[(k, straight.final[k], final.get(k)) for k in changed]}")
    rows = metric_rows(w)
    keys = [(r["step"], r["split"]) for r in metric_rows(w, setup=True)]
    if len(keys) != len(set(keys)):
        out.append(f"metrics.jsonl repeats steps: {keys}")
    if rows != straight.rows:
        out.append(f"metrics.jsonl differs: {[r for r in rows if r not in straight.rows][:3]}")
    arrays = final_arrays(w)
    if arrays.keys() != straight.arrays.keys() or any(
            not np.array_equal(arrays[k], straight.arrays[k]) for k in arrays):
        out.append("the final parameters or optimizer state differ")
    if saved_steps(w) != straight.steps:
        out.append(f"checkpoints {saved_steps(w)}, expected {straight.steps}")
    left = [str(p) for root in (w, cache) for p in pathlib.Path(root).rglob("*")
            if "tmp" in p.name or p.name == "lock"]
    if left:
        out.append(f"left behind: {left}")
    return out


# ------------------------------------------------------------- preparing a dataset
PREPARE_PHASES = ("prepare.build", "prepare.record", "cache.build", "cache.write",
                  "cache.publish")
CI_PREPARE = ("prepare.build", "prepare.record")


def prepare_points() -> list:
    """Kill points of `python -m srupp_jax.data.prepare` (the CI's, or SRUPP_KILLS of them)."""
    n = scale()
    if not n:
        return [("phase", p, 0) for p in CI_PREPARE]
    return ([("phase", PREPARE_PHASES[i % len(PREPARE_PHASES)], 0) for i in range(n - n // 3)]
            + [("time", n // 3, j) for j in range(n // 3)])


def prepare(root: pathlib.Path, **extra):
    """Prepare a tiny enwik8 (modified source) in root/tfds and root/cache."""
    source = root.parent / "enwik8_source"
    if not source.exists():
        from srupp_jax.data import corpus
        source.mkdir(exist_ok=True)
        (source / "enwik8").write_bytes(corpus.embedded_corpus(60_000)[0])
    cmd = [sys.executable, "-m", "srupp_jax.data.prepare", "--dataset=enwik8",
           f"--manual_dir={source}", f"--data_dir={root / 'tfds'}",
           f"--cache_dir={root / 'cache'}", "--allow_modified_source"]
    if extra.pop("popen", False):
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env("", **extra))
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=env("", **extra))


def prepared(root: pathlib.Path) -> dict:
    """What a preparation leaves: the token arrays and the source record of root's enwik8."""
    from srupp_jax.data import datasets
    data = datasets.load_tokens("enwik8", data_dir=str(root / "tfds"),
                                cache_dir=str(root / "cache"))
    return dict(train=np.asarray(data.train), valid=np.asarray(data.valid),
                test=np.asarray(data.test), source=data.info["source"])


def kill_preparing(point, root: pathlib.Path, seconds: float, reference: dict) -> dict:
    """Kill a preparation at `point` (a phase, or a moment of `seconds`), prepare again with
    the same command; the outcome, with `problems` (none: what it prepared equals
    `reference`, an uninterrupted preparation's `prepared`)."""
    kind, what, i = point
    log = root / "killed_phases.log"
    if kind == "phase":
        died = prepare(root, SRUPP_JAX_PHASES=str(log), SRUPP_JAX_AT=f"{what}=kill"
                       ).returncode == -9
    else:
        proc = prepare(root, popen=True, SRUPP_JAX_PHASES=str(log))
        try:
            proc.wait(timeout=seconds * (i + 0.5) / what)
        except subprocess.TimeoutExpired:
            proc.kill()
        died = proc.wait() == -9
    again = prepare(root, SRUPP_JAX_PHASES=str(root / "rerun_phases.log"))
    left = [str(p) for p in root.rglob("*") if "tmp" in p.name]
    problems = ([f"prepare again: exit {again.returncode}: {again.stderr[-1500:]}"]
                if again.returncode else []) + ([f"left behind: {left}"] if left else [])
    if not problems:
        problems = differs(prepared(root), reference)
    entered = log.read_text().split() if log.exists() else []
    outcome = dict(task="prepare", kind=kind, at=what if kind == "phase" else i, killed=died,
                   died_in=entered[-1] if entered else "start", problems=problems,
                   resumed=0, quarantined=[], eval_redone=False,
                   cache_rebuilt="cache.build" in (root / "rerun_phases.log").read_text())
    report = os.environ.get("SRUPP_KILL_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps(outcome) + "\n")
    return outcome


def differs(again: dict, reference: dict) -> list:
    """What differs between two preparations (prepared): the tokens, the prepared files'
    names and sizes (array_record files differ in bytes from one build to the next), the
    source's standing."""
    out = [f"{split} tokens differ" for split in ("train", "valid", "test")
           if not np.array_equal(again[split], reference[split])]
    sizes = lambda source: {name: size for name, (size, _) in source["files"].items()}
    if sizes(again["source"]) != sizes(reference["source"]):
        out.append("the prepared files differ")
    if again["source"]["standard"] != reference["source"]["standard"]:
        out.append("the source record differs")
    return out


def table(report: str) -> str:
    """The README's table: per task and the last phase each killed run had entered, how many
    kills (by phase / by time), how many reruns equalled the uninterrupted run, the steps
    they resumed from; the moments that came after the run had ended are counted apart."""
    rows = [json.loads(line) for line in open(report) if line.strip()]
    groups = {}
    for r in rows:
        if r["killed"]:
            groups.setdefault((r["task"], r["died_in"]), []).append(r)
    lines = ["| task | killed after entering | kills (by phase / by time) | reruns equal to "
             "the uninterrupted run | resumed from step |",
             "| --- | --- | --- | --- | --- |"]
    for (task, phase), rs in sorted(groups.items()):
        by_phase = sum(r["kind"] == "phase" for r in rs)
        resumed = sorted({r["resumed"] for r in rs})
        span = f"{resumed[0]}" if len(resumed) == 1 else f"{resumed[0]}-{resumed[-1]}"
        lines.append(f"| {task} | {phase} | {len(rs)} ({by_phase} / {len(rs) - by_phase}) | "
                     f"{sum(not r['problems'] for r in rs)} | {span} |")
    late = sum(not r["killed"] for r in rows)
    kills = len(rows) - late
    lines.append(f"\n{kills} kills, {sum(not r['problems'] for r in rows if r['killed'])} "
                 f"reruns equal to the uninterrupted run; {late} moments came after the run "
                 "had ended (not counted).")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1]))
