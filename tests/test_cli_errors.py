"""A table of a newcomer's mistakes, run through the programs as they would type them: each
gives exactly one line on stderr, `error: ...` naming the value (and the fix), exit status 2,
and leaves the workdir untouched; plus --help, --mode=show_config, the short log format, the
eval progress line and the checks behind them, in-process.

Fast: every case exits before jax compiles anything; most before jax is even imported.
"""
import errno
import logging as std
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config.model.d=16", "--config.model.d_proj=4", "--config.model.num_layers=2",
        "--config.train.batch_size=2", "--config.train.unroll=8"]


def run(*args, cwd=ROOT, module=None, stdin=None):
    """The program (main.py, or `python -m module`) as a subprocess, from `cwd`."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, *(["-m", module] if module else [str(ROOT / "main.py")]), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          input=stdin)


def one_error_line(out, code=2) -> str:
    """The only line of stderr, an `error: ` line, with the exit status `code`."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == code and len(lines) == 1, (out.returncode, out.stderr[-3000:])
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def snapshot(path: pathlib.Path):
    """What is in `path` (None when it does not exist)."""
    if not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def read_only_dir(tmp_path) -> pathlib.Path:
    """A directory this process cannot write: chmod 555 (a user), else /proc/sys (root)."""
    if os.geteuid() != 0:
        d = tmp_path / "read_only"
        d.mkdir()
        d.chmod(0o555)
        return d
    if os.access("/proc/sys", os.W_OK):
        pytest.skip("no directory this (root) process cannot write")
    return pathlib.Path("/proc/sys")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The files the cases name: config files with mistakes, texts, a plain file."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "syntax.py").write_text("def get_config(:\n    pass\n")
    (d / "misspelt.py").write_text("from srupp_jax.configs import default\n\n\n"
                                   "def get_config():\n    config = default.get_config()\n"
                                   "    m = config.model\n    m.dd = 64\n    return config\n")
    (d / "a_file").write_text("not a directory\n")
    (d / "empty.txt").write_bytes(b"")
    (d / "short.txt").write_text("a short text, far from enough for one step\n" * 20)
    (d / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 300)
    (d / "workdir").mkdir()                     # an existing workdir without a run
    return d


# (argv, the substrings of the one line, the workdir that must stay as it was)
CASES = {
    "config syntax error": (
        ["--config={d}/syntax.py", "--mode=smoke"],
        ["--config={d}/syntax.py: SyntaxError: invalid syntax (syntax.py, line 1)"], None),
    "misspelt key in a config file": (
        ["--config={d}/misspelt.py", "--workdir={w}"],
        ["model.dd=64 is not a config key (in --config={d}/misspelt.py); did you mean model.d?",
         "--mode=show_config"], "{w}"),
    "misspelt key on the command line": (
        ["--config.train.stepz=100", "--workdir={w}"],
        ["unknown config key 'stepz' in --config.train.stepz=100; did you mean train.steps?"],
        "{w}"),
    "unknown variant": (
        ["--config=enwik8:k9", "--mode=smoke"],
        ["unknown variant 'k9' of enwik8.py; expected '' or 'k5' (enwik8.py, line"], None),
    "two --config": (
        ["--config=default", "--config=enwik8", "--workdir={w}"],
        ["--config is given 2 times (--config=default, --config=enwik8); give one"], "{w}"),
    "unquoted prompt": (
        ["--mode=generate", "--workdir={d}/workdir", "--prompt=def", "foo"],
        ["unexpected argument 'foo'; quote a value with spaces: --prompt=\"def foo\""],
        "{d}/workdir"),
    "--prompt in train": (
        ["--workdir={w}", "--prompt=hello"],
        ["--prompt applies to --mode=generate only, not --mode=train"], "{w}"),
    "--force in eval": (
        ["--mode=eval", "--workdir={d}/workdir", "--force"],
        ["--force applies to --mode=train only, not --mode=eval"], "{d}/workdir"),
    "--input in generate": (
        ["--mode=generate", "--workdir={d}/workdir", "--input=x.de"],
        ["--input applies to --mode=translate or predict only, not --mode=generate"],
        "{d}/workdir"),
    "--workdir in smoke": (
        ["--mode=smoke", "--workdir={w}"],
        ["--workdir does not apply to --mode=smoke"], "{w}"),
    "workdir is a file": (
        ["--workdir={d}/a_file", *TINY],
        ["workdir {d}/a_file is a file, not a directory; use another --workdir"], "{d}/a_file"),
    "workdir inside a file": (
        ["--workdir={d}/a_file/run", *TINY],
        ["workdir {d}/a_file/run cannot be created: {d}/a_file is a file"], "{d}/a_file"),
    "workdir under /proc": (
        ["--workdir=/proc/srupp_run", *TINY],
        ["workdir /proc/srupp_run cannot be created in /proc (No such file or directory)"],
        "/proc/srupp_run"),
    "workdir not writable": (
        ["--workdir={ro}/run", *TINY],
        ["workdir {ro}/run cannot be created: {ro} is", "use another --workdir"], "{ro}/run"),
    "eval of a workdir that does not exist": (
        ["--mode=eval", "--workdir={w}"],
        ["workdir {w} does not exist; train first with --mode=train --workdir={w}"], "{w}"),
    "translate a missing input": (
        ["--mode=translate", "--workdir={d}/workdir", "--input={d}/nope.de"],
        ["--input={d}/nope.de: no such file"], "{d}/workdir"),
    "translate into a directory": (
        ["--mode=translate", "--workdir={d}/workdir", "--input={d}/short.txt",
         "--output={d}/workdir"],
        ["--output={d}/workdir: expected a file in an existing directory"], "{d}/workdir"),
    "unknown mode": (["--mode=bogus"], ["--mode=bogus: value should be one of"], None),
    # jax is imported for these (the trainer's and the tasks' checks), nothing compiles
    "the GPU kernel on a CPU": (
        ["--workdir={w}", *TINY, "--config.model.impl=pallas"],
        ["model.impl='pallas' is the GPU kernel and cannot run on CPU; use one of auto (here "
         "scan), scan, assoc"], "{w}"),
    "negative learning rate": (
        ["--workdir={w}", *TINY, "--config.train.lr=-1"],
        ["train.lr=-1.0; expected > 0"], "{w}"),
    "warmup longer than a short run": (
        ["--config=text", "--config.data.path={d}/short.txt", "--workdir={w}",
         "--config.train.steps=300"],
        ["train.warmup_steps=1000; expected 0 <= warmup < train.steps=300: add e.g. "
         "--config.train.warmup_steps=30"], "{w}"),
    "empty text file": (
        ["--config=text", "--config.data.path={d}/empty.txt", "--workdir={w}", *TINY,
         "--config.data.cache_dir={d}/cache"],
        ["data.path='{d}/empty.txt' is empty (0 bytes)"], "{w}"),
    "too short text file": (
        ["--config=text", "--config.data.path={d}/short.txt", "--workdir={w}",
         "--config.data.cache_dir={d}/cache"],
        ["data.path='{d}/short.txt' (860 bytes) is too short: its train part (of a 90/5/5 "
         "split) has 774 bytes, and train.batch_size x train.unroll = 16 x 256 needs 4,097"],
        "{w}"),
    "words that are not UTF-8": (
        ["--config=text", "--config.data.path={d}/latin1.txt", "--config.data.unit=word",
         "--workdir={w}", *TINY, "--config.data.cache_dir={d}/cache"],
        ["{d}/latin1.txt is not UTF-8 text (byte 3 of 3,900)", "--config.data.unit=byte"],
        "{w}"),
    "smoke on words without a vocabulary size": (
        ["--config=wiki103", "--mode=smoke", *TINY, "--config.data.data_dir={d}/no_tfds"],
        ["model.vocab_size=0: --mode=smoke on wikitext103 (words) needs the vocabulary's size; "
         "set --config.model.vocab_size=N"], None),
}
# the other entry points: (module, argv, substrings)
OTHER_PROGRAMS = {
    "study: a bad budget": (
        "srupp_jax.study", ["--config=study_enwik8:cpu", "--budget=10x", "--workdir={w}"],
        ["budget='10x'; expected a positive time such as 90, 90s, 20m or 2h"]),
    "study: a misspelt run key": (
        "srupp_jax.study", ["--config=study_enwik8:cpu", "--budget=10", "--workdir={w}",
                            "--config.study.runs.sru.model.dd=3"],
        ["study.runs.sru.model.dd=3 is not a config key (in --config=", "did you mean model.d?"]),
    "study: the config by name, from another directory": (
        "srupp_jax.study", ["--config=study_enwik8:cpu", "--budget=10", "--workdir={w}",
                            "--config.study.order=('lstm',)"],
        ["study.order names 'lstm', which is not in study.runs"]),
    "prepare: no dataset": (
        "srupp_jax.data.prepare", [],
        ["the following arguments are required: --dataset (see python -m "
         "srupp_jax.data.prepare --help)"]),
    "prepare: a missing source folder": (
        "srupp_jax.data.prepare", ["--dataset=enwik8", "--manual_dir={d}/nope",
                                   "--data_dir={w}"],
        ["--manual_dir={d}/nope does not exist"]),
    "plot: a workdir without metrics": (
        "srupp_jax.plot", ["--workdir={d}/workdir", "--out={w}/dev.png"],
        ["metrics file not found: {d}/workdir/metrics.jsonl"]),
}


def _fill(items, **names):
    return [item.format(**names) for item in items]


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_main_mistakes_are_one_line(name, files, tmp_path):
    args, expected, workdir = CASES[name]
    names = dict(d=files, w=tmp_path / "run",
                 ro=read_only_dir(tmp_path) if "{ro}" in " ".join(args) else "")
    watched = pathlib.Path(workdir.format(**names)) if workdir else None
    before = snapshot(watched) if watched else None
    line = one_error_line(run(*_fill(args, **names), cwd=tmp_path))
    for text in _fill(expected, **names):
        assert text in line, line
    if watched:
        assert snapshot(watched) == before, f"{watched} changed"


@pytest.mark.parametrize("name", OTHER_PROGRAMS)
def test_other_programs_mistakes_are_one_line(name, files, tmp_path):
    module, args, expected = OTHER_PROGRAMS[name]
    names = dict(d=files, w=tmp_path / "out")
    line = one_error_line(run(*_fill(args, **names), cwd=tmp_path, module=module))
    for text in _fill(expected, **names):
        assert text in line, line
    assert not (tmp_path / "out").exists()


def test_help_lists_modes_configs_and_how_to_see_the_keys(tmp_path):
    out = run("--help", cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == "", out.stderr[-2000:]
    for text in ("train", "eval", "smoke", "generate", "translate", "show_config", "enwik8",
                 "wiki103_large", "study_enwik8", "--mode=show_config", "--allow_config_change",
                 "status 2"):
        assert text in out.stdout, text
    study = run("--help", cwd=tmp_path, module="srupp_jax.study")
    assert study.returncode == 0 and "--budget" in study.stdout


def test_show_config_lists_every_key_with_its_meaning(tmp_path):
    out = run("--config=enwik8:k5", "--mode=show_config", "--config.train.lr=0.001",
              cwd=tmp_path)
    assert out.returncode == 0 and out.stderr == "", out.stderr[-2000:]
    lines = dict(line.split(" = ", 1) for line in out.stdout.splitlines())
    from srupp_jax.programs import config_keys
    assert set(lines) == set(config_keys.known())
    assert lines["model.k"].startswith("5 ") and "# attention every k layers" in lines["model.k"]
    assert lines["train.lr"].startswith("0.001")
    assert "# hidden size d" in lines["model.d"]
    assert "# GPU (Triton) kernel tuning" in lines["model.kernel.block_d"]


# ------------------------------------------------------------------------- in-process
def test_config_keys_check_and_nearest():
    import importlib

    from srupp_jax.programs import config_keys
    for name in ("default", "enwik8", "text", "iwslt14", "translate_default", "txl_wiki103"):
        config_keys.check(importlib.import_module(f"configs.{name}").get_config())
    study = importlib.import_module("configs.study_iwslt14").get_config("cpu")
    config_keys.check(study)                                # the study section is known
    study.study.runs.transformer.train.weight_decayy = 0.0
    with pytest.raises(ValueError, match=r"study.runs.transformer.train.weight_decayy=0.0 is "
                                         r"not a config key; did you mean train.weight_decay\?"):
        config_keys.check(study)
    assert config_keys.nearest("train.stepz") == "train.steps"
    assert config_keys.nearest("model.steps") == "train.steps"          # another section
    assert config_keys.nearest("model.kernel.blockd") == "model.kernel.block_d"
    assert config_keys.nearest("zzz.qqq") is None


def test_smoke_needs_no_data_for_bytes_or_a_given_vocabulary():
    import importlib

    from srupp_jax.tasks.lm import smoke_config
    enwik8 = importlib.import_module("configs.enwik8").get_config()
    assert smoke_config(enwik8).model.vocab_size == 256
    text = importlib.import_module("configs.text").get_config()
    text.data.unit, text.model.vocab_size = "word", 1000
    assert smoke_config(text).model.cutoffs == (50, 250)     # as training would derive them
    text.model.vocab_size = 0
    assert smoke_config(text) is None                         # only the data know it


def test_workdir_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from srupp_jax import errors
    from srupp_jax.training import workdir

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "lock"))
    monkeypatch.setattr(workdir.os, "open", full)
    with pytest.raises(OSError) as e:
        workdir.WorkdirLock(str(tmp_path / "run"))
    assert errors.one_line(e.value) == (f"workdir {tmp_path / 'run'} cannot be written (No "
                                        "space left on device); use another --workdir")
    assert not (tmp_path / "run").exists()
    disk = OSError(errno.ENOSPC, "No space left on device", "/runs/a/metrics.jsonl")
    assert errors.one_line(disk) == ("/runs/a/metrics.jsonl: No space left on device (free "
                                     "some space or use another directory)")


def test_a_binary_text_file_warns_once_naming_it(tmp_path, caplog):
    from srupp_jax.data import text
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)) * 20)
    with caplog.at_level(std.WARNING):
        text.fingerprint(str(tmp_path / "blob.txt"))
    [record] = [r for r in caplog.records if r.levelno >= std.WARNING]
    assert f"{tmp_path / 'blob.txt'}: NUL bytes" in record.getMessage()
    assert "training on its bytes" in record.getMessage()


def test_log_lines_are_short_and_third_party_noise_is_gone():
    """INFO of srupp_jax as `HH:MM:SS message`, warnings marked, Orbax's INFO and its
    tracked_metric warning dropped, a Python warning one line."""
    code = ("import logging, warnings\n"
            "from srupp_jax.programs import logs\n"
            "logs.setup()\n"
            "from srupp_jax.training import progress\n"
            "list(progress.bar(range(3), 'eval dev', unit='segment'))\n"
            "from absl import logging as absl\n"
            "absl.warning('check the data')\n"
            "logging.getLogger('orbax').info('chatty')\n"
            "logging.getLogger('orbax').warning('Requested `tracked_metric`; did not provide "
            "metrics.')\n"
            "warnings.warn('a library warning')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 0 and len(lines) == 3, out.stderr
    assert lines[0][8:].startswith(" eval dev: 3 segments in ") and lines[0][2] == ":"
    assert lines[1][8:] == " warning: check the data"
    assert lines[2][8:] == " warning: a library warning (UserWarning)"
