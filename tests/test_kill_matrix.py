"""The fault matrix (phase x task): a real main.py run of each task killed with SIGKILL at
every phase of its life and at moments between, then rerun with the same command, finishes
equal to a run never killed (tests/killing.py). CI kills once at each phase of
killing.CI_PHASES and at killing.TIMED moments per task; `SRUPP_KILLS=300 python -m pytest
tests/test_kill_matrix.py` runs 300 per task."""
import pytest

import killing


CASES = [(task, point) for task in killing.TASKS for point in killing.points(task)]


@pytest.mark.slow
@pytest.mark.parametrize("task,point", CASES,
                         ids=[f"{t}-{p[1] if p[0] == 'phase' else 'time'}-{p[2]}"
                              for t, p in CASES])
def test_a_kill_anywhere_then_the_same_command_finishes_the_same_run(task, point,
                                                                     straight_runs, jax_runs,
                                                                     tmp_path):
    reference = straight_runs(task)
    if point[0] == "phase" and point[1] is not None:
        assert point[1] in reference.phases, f"the run never entered {point[1]}"
    outcome = killing.kill_and_rerun(task, point, reference, tmp_path, jax_runs)
    assert outcome["killed"] or point[0] == "time", outcome
    assert not outcome["problems"], outcome


@pytest.fixture(scope="module")
def straight_prepare(tmp_path_factory):
    """(what an uninterrupted preparation leaves, its seconds)."""
    import time
    root = tmp_path_factory.mktemp("prepare")
    start = time.perf_counter()
    out = killing.prepare(root / "straight")
    assert out.returncode == 0, out.stderr[-3000:]
    return killing.prepared(root / "straight"), time.perf_counter() - start


PREPARE = killing.prepare_points()


@pytest.mark.slow
@pytest.mark.parametrize("point", PREPARE, ids=[f"{p[1] if p[0] == 'phase' else 'time'}-{p[2]}"
                                                for p in PREPARE])
def test_a_kill_while_preparing_then_the_same_command_prepares_the_same(point,
                                                                        straight_prepare,
                                                                        tmp_path):
    reference, seconds = straight_prepare
    outcome = killing.kill_preparing(point, tmp_path / "run", seconds, reference)
    assert outcome["killed"] or point[0] == "time", outcome
    assert not outcome["problems"], outcome


def test_the_readme_table_from_a_report(tmp_path):
    """`python tests/killing.py REPORT` prints the README's table: per task and phase where
    the kills landed, how many, how many reruns equalled the run never killed."""
    import json
    import subprocess
    import sys
    rows = [dict(task="lm", kind="phase", died_in="train.log", problems=[], resumed=3,
                 killed=True),
            dict(task="lm", kind="time", died_in="train.log", problems=["x"], resumed=6,
                 killed=True),
            dict(task="lm", kind="time", died_in="train.record", problems=[], resumed=12,
                 killed=False)]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = subprocess.run([sys.executable, "tests/killing.py", str(tmp_path / "r.jsonl")],
                         cwd=killing.ROOT, capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[2:] == ["| lm | train.log | 2 (1 / 1) | 1 | 3-6 |", "",
                         "2 kills, 1 reruns equal to the uninterrupted run; 1 moments came "
                         "after the run had ended (not counted)."]
