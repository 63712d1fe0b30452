"""User errors on the command line print one line `error: ...` and exit 2; --traceback shows
the stack; programming errors still raise; configs are found by name."""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _main(*args, cwd=ROOT):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


TINY = ["--config.model.d=16", "--config.model.d_proj=4", "--config.model.num_layers=2",
        "--config.train.batch_size=2", "--config.train.unroll=8"]


@pytest.mark.parametrize("args,expected", [
    (["--config.model.dd=3"], "unknown config key 'dd' in --config.model.dd=3"),
    (["--config.model.d=abc"], "--config.model.d=abc: invalid literal for int()"),
    (["--config=configs/enwik8.py:k9"], "unknown variant 'k9' of enwik8.py; expected '' or 'k5'"),
    (["--config=configs/nope.py"], "--config=configs/nope.py: no such file, and no shipped "
                                   "config named 'nope'"),
    (["--mode=bogus"], "--mode=bogus: value should be one of"),
    (["--config.model.k=0"], "model.k=0; expected >= 1"),
    (["--config=configs/enwik8.py:k5", "--config.model.num_layers=2"],
     "model.k=5 with model.num_layers=2 leaves no attention layer"),
    (["--config.data.max_bytes=1000", "--config.data.name=enwik8"],
     "data.max_bytes=1000 applies to data.name='default' only"),
    (["--config=configs/text.py"], "data.name='text' needs a file: set --config.data.path="),
    (["--mode=eval"], "--workdir is required for --mode=eval; add --workdir=DIR"),
])
@pytest.mark.slow
def test_user_errors_are_one_line(args, expected):
    first = [a for a in args if a.startswith("--config=")]   # overrides must follow it
    out = _main(*first, "--mode=smoke", *TINY, *[a for a in args if a not in first])
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
    assert expected in lines[0]


def test_missing_dataset_is_one_line_before_the_workdir(tmp_path):
    """Training needs the prepared data (--mode=smoke does not: tests/test_cli_errors.py)."""
    out = _main("--config=configs/enwik8.py", f"--workdir={tmp_path / 'run'}", *TINY,
                "--config.data.data_dir=/nonexistent/tfds")
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
    assert ("dataset 'enwik8' is not prepared: /nonexistent/tfds/enwik8/1.0.0/dataset_info.json "
            "does not exist. Prepare it once with: python -m srupp_jax.data.prepare "
            "--dataset=enwik8") in lines[0]
    assert not (tmp_path / "run").exists()


def test_traceback_flag_shows_the_stack():
    out = _main("--mode=smoke", "--traceback", "--config.model.k=0", *TINY)
    assert out.returncode != 0
    assert "Traceback (most recent call last)" in out.stderr
    assert "ValueError: model.k=0; expected >= 1" in out.stderr


def test_programming_errors_still_raise(monkeypatch):
    """Only user errors are caught: anything else propagates with its stack."""
    from srupp_jax.programs import cli
    cli.define_flags()
    cli.FLAGS(["main.py", "--mode=smoke"])
    def bug():
        raise TypeError("a bug")
    monkeypatch.setattr(cli, "_run_mode", bug)
    with pytest.raises(TypeError, match="a bug"):
        cli.main(["main.py"])
    def user_error():
        raise ValueError("model.d=0; expected >= 1")
    monkeypatch.setattr(cli, "_run_mode", user_error)
    with pytest.raises(SystemExit) as e:
        cli.main(["main.py"])
    assert e.value.code == 2


@pytest.mark.slow
def test_config_by_name_from_another_directory(tmp_path):
    """--config=default, --config enwik8.py:k5 (shipped configs by name) from any directory."""
    out = _main("--config=default", "--mode=smoke", *TINY, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "k=1" in out.stdout
    out = _main("--config", "enwik8.py:k5", "--mode=smoke", *TINY, cwd=tmp_path)
    assert out.returncode == 2 and "model.k=5 with model.num_layers=2" in out.stderr
