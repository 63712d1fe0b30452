"""The fault matrix (phase x task): a real main.py run of each task killed with SIGKILL at
every phase of its life and at moments between, then rerun with the same command, finishes
equal to a run never killed (tests/killing.py). CI kills once at each phase of
killing.CI_PHASES and at killing.TIMED moments per task; `SRUPP_KILLS=300 python -m pytest
tests/test_kill_matrix.py` runs 300 per task."""
import pytest

import killing


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="module")
def straight(tmp_path_factory, jax_cache):
    """The uninterrupted run of each task, made when first needed."""
    runs = {}

    def get(task):
        if task not in runs:
            runs[task] = killing.straight_run(task, tmp_path_factory.mktemp(task), jax_cache)
        return runs[task]
    return get


CASES = [(task, point) for task in killing.TASKS for point in killing.points(task)]


@pytest.mark.slow
@pytest.mark.parametrize("task,point", CASES,
                         ids=[f"{t}-{p[1] if p[0] == 'phase' else 'time'}-{p[2]}"
                              for t, p in CASES])
def test_a_kill_anywhere_then_the_same_command_finishes_the_same_run(task, point, straight,
                                                                     jax_cache, tmp_path):
    reference = straight(task)
    if point[0] == "phase" and point[1] is not None:
        assert point[1] in reference.phases, f"the run never entered {point[1]}"
    outcome = killing.kill_and_rerun(task, point, reference, tmp_path, jax_cache)
    assert outcome["killed"] or point[0] == "time", outcome
    assert not outcome["problems"], outcome
