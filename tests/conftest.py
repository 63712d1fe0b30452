"""Fixtures shared by the fault tests' modules, made once per pytest process: the JAX
compilation cache of their main.py runs, and the uninterrupted run of each task of the kill
harness (tests/killing.py), which every rerun after a kill, a full disk or a signal must
equal."""
import pytest


@pytest.fixture(scope="session")
def jax_runs(tmp_path_factory):
    """A JAX compilation cache for the fault tests' subprocesses."""
    return str(tmp_path_factory.mktemp("jax_runs"))


@pytest.fixture(scope="session")
def straight_runs(tmp_path_factory, jax_runs):
    """straight_runs(task) -> killing.Straight, the uninterrupted run of `task`."""
    import killing
    runs = {}

    def get(task):
        if task not in runs:
            runs[task] = killing.straight_run(task, tmp_path_factory.mktemp(task), jax_runs)
        return runs[task]
    return get
