"""srupp (`python main.py` in a checkout): train, evaluate, sample and translate with SRU++.

    srupp --config=default --workdir=DIR                     # train, then dev eval
    srupp --config=enwik8:k5 --workdir=DIR                   # a shipped config by name
    srupp --config=configs/enwik8.py:k5 --workdir=DIR        # or by path (main.py's form)
    srupp --config=default --config.model.d=128 ...          # override any key
    srupp --config=enwik8 --mode=show_config                 # every key, its value, its meaning
    srupp --workdir=DIR --mode=eval                          # dev + test of the best checkpoint
    srupp --workdir=DIR --mode=generate --prompt="def "      # sample text

Modes: see --help (srupp_jax/programs/modes.py holds them, with which task has which).

eval, generate and translate use DIR/config.json when it exists (so the training overrides
need not be repeated); `--config.KEY=VALUE` given with them is applied on top (e.g.
eval.mem_len). A flag of another mode (--prompt in train, --force in eval, ...), a second
--config and a stray argument (an unquoted --prompt=def foo) are errors.

Errors: a mistake on the command line, in a config file or in the data it names (an unknown
key, a bad value, a missing dataset or file, a workdir that is a file or cannot be written)
prints one line `error: ...` to stderr and exits with status 2, before anything is written
to the workdir; a run that cannot go on (a checkpoint that cannot be saved or restored,
non-finite losses, a workdir in use by another trainer) prints one line and exits with
status 1; Ctrl-C outside training exits with 130, SIGTERM outside training with 75 (each
naming what it stopped: preparing data, evaluating; rerun the command to finish).
`--traceback` shows the full stack instead.
Programming errors raise as usual. A training run ends with a JSON line whose `status` gives
the exit code: finished or stopped 0, preempted (SIGTERM) 75, interrupted (SIGINT) 130
(srupp_jax/training/workdir.py); its train_* and dev_* metrics are those of the steps `train_step` and
`dev_step`. Logs are short INFO lines (time, message; srupp_jax/programs/logs.py).
"""
import json
import os
import re
import sys
import textwrap
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from srupp_jax import errors
from srupp_jax.programs import config_keys, logs
from srupp_jax.programs.modes import MODES

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DEFAULT_CONFIG = os.path.join(CONFIG_DIR, "default.py")
USAGE_EXIT, RUN_FAULT_EXIT = errors.USAGE_EXIT, errors.RUN_FAULT_EXIT
HELP_ARGS = ("--help", "-help", "-h", "--helpshort", "-helpshort", "--helpfull", "-helpfull",
             "-?")
OUR_FLAGS = ("config", "workdir", "mode", "prompt", "num_tokens", "temperature", "top_k",
             "top_p", "seed", "input", "output", "device_memory", "force", "allow_config_change",
             "torch_checkpoint", "traceback")


def define_flags() -> None:
    """Define the program's flags (once). `run` calls it after putting --config in sys.argv:
    config_flags parses a default config at definition time, before errors could be caught."""
    if "config" in flags.FLAGS:
        return
    config_flags.DEFINE_config_file(
        "config", DEFAULT_CONFIG, "Experiment config: a file (configs/enwik8.py), or the name of "
        "a shipped one (enwik8), with an optional :variant.")
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
    flags.DEFINE_enum("mode", "train", list(MODES), "What to run (--help lists the modes).")
    flags.DEFINE_string("input", "-", "--mode=translate, predict: a file of source sentences "
                        "or of texts to label, one a line ('-' = stdin).")
    flags.DEFINE_string("output", "-", "--mode=translate, predict: where the translations or "
                        "the labels go ('-' = stdout); --mode=export: the folder of the "
                        "artifacts.")
    flags.DEFINE_string("prompt", "", "--mode=generate: the text to continue ('' = start of a "
                        "line/sentence).")
    flags.DEFINE_integer("num_tokens", 200, "--mode=generate: tokens to sample.")
    flags.DEFINE_float("temperature", 1.0, "--mode=generate: softmax temperature (0 = greedy).")
    flags.DEFINE_integer("top_k", 0, "--mode=generate: keep the k most likely tokens (0 = all).")
    flags.DEFINE_float("top_p", 1.0, "--mode=generate: nucleus sampling mass (1 = off).")
    flags.DEFINE_integer("seed", 0, "--mode=generate: sampling seed.")
    flags.DEFINE_float("device_memory", 0.0, "--mode=plan: the device memory to plan for, GiB "
                       "(0 = the device's own where known, e.g. 15 for a 16 GB T4).")
    flags.DEFINE_string("torch_checkpoint", "", "--mode=import: a released SRU++ model, the "
                        "PyTorch .pt file (README: Pretrained models).")
    flags.DEFINE_bool("traceback", False, "Show the full stack of a user error instead of one "
                      "line.")
    flags.DEFINE_bool("force", False, "--mode=train: take over the workdir lock of another "
                      "trainer (only when that run is dead, e.g. a stale lock left on another "
                      "host).")
    flags.DEFINE_bool("allow_config_change", False, "--mode=train: go on in a workdir whose "
                      "recorded config differs from this command's (e.g. a lower train.lr); the "
                      "changes are recorded in WORKDIR/config_changes.jsonl.")
    for name in OUR_FLAGS:      # listed by --helpshort of main.py / srupp
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


FLAGS = flags.FLAGS
USER_ERRORS = errors.USER_ERRORS


def shipped_configs() -> list:
    """Names of the config files shipped in CONFIG_DIR (without .py)."""
    return sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                  if f.endswith(".py") and not f.startswith("_"))


def resolve_config_arg(arg: str) -> str:
    """`--config=VALUE` -> the same with VALUE's file part an existing path: kept when it is a
    file, else looked up by name in CONFIG_DIR (`enwik8`, `enwik8.py`, `configs/enwik8.py`);
    app.UsageError naming the shipped configs when neither exists."""
    prefix, value = arg.split("=", 1)
    path, colon, variant = value.partition(":")
    if os.path.isfile(path):
        return arg
    name = os.path.basename(path)
    name = name[:-3] if name.endswith(".py") else name
    if name in shipped_configs():
        return f"{prefix}={os.path.join(CONFIG_DIR, name + '.py')}{colon}{variant}"
    raise app.UsageError(f"--config={value}: no such file, and no shipped config named "
                         f"{name!r}; expected a path or one of {', '.join(shipped_configs())}")


def prepare_argv(argv: list, default: str = DEFAULT_CONFIG) -> list:
    """`--config VALUE` joined, the config found by name, the `default` config put first
    when none is given; app.UsageError for a second --config."""
    argv = list(argv)
    for i in range(1, len(argv) - 1):      # --config VALUE -> --config=VALUE
        if argv[i] in ("--config", "-config"):
            argv[i:i + 2] = [f"{argv[i]}={argv[i + 1]}"]
    given = [a for a in argv if _is_config_arg(a)]
    if len(given) > 1:
        raise app.UsageError(f"--config is given {len(given)} times ({', '.join(given)}); "
                             "give one, and change its keys with --config.KEY=VALUE")
    argv = [resolve_config_arg(a) if _is_config_arg(a) else a for a in argv]
    if not given:
        argv.insert(1, f"--config={default}")
    return argv


def one_line(error: BaseException) -> str:
    """The message of `error` on one line (srupp_jax.errors.one_line)."""
    return errors.one_line(error)


def _is_config_arg(arg: str) -> bool:
    return arg.startswith(("--config=", "-config="))


def flag_error(error: BaseException, argv: list) -> str:
    """The one line for an error of flag parsing: an override of a key the config lacks
    (with the nearest key), an exception of the config file (its file and line), or the
    error's own message."""
    config = next((a.split("=", 1)[1] for a in argv if _is_config_arg(a)), "")
    raised, where = _config_file_line(error, config.split(":")[0])
    if where:
        message = raised.msg if isinstance(raised, SyntaxError) else one_line(raised)
        return f"--config={config}: {type(raised).__name__}: {message} ({where})"
    if not isinstance(error, (AttributeError, KeyError)):    # config_flags: no such key
        return one_line(error)
    overrides = {a.split("=", 1)[0].split(".", 1)[1]: a for a in argv
                 if a.startswith(("--config.", "-config.", "--noconfig.", "-noconfig."))}
    bad = [key for key in overrides if not config_keys.is_known(key)]
    if not bad:                  # a valid key this config does not have: the one named
        name = re.search(r"[A-Za-z_]\w*", one_line(error))
        bad = [k for k in overrides if name and name.group() in k.split(".")] or [""]
    near = config_keys.nearest(config_keys.target(bad[0])) if bad[0] else None
    return (f"unknown config key {bad[0].rpartition('.')[2]!r} in {overrides.get(bad[0], '')}"
            + (f"; did you mean {near}?" if near else "") + f" ({config_keys.SHOW_CONFIG})")


def _config_file_line(error: BaseException, path: str):
    """(the exception, 'file.py, line N') where the config file (or a config it imports)
    raised, following the exceptions `error` was raised from; (None, '') if none."""
    real = os.path.realpath
    while error is not None:
        if isinstance(error, SyntaxError) and error.filename:
            return error, f"{os.path.basename(error.filename)}, line {error.lineno}"
        frames = [f for f in traceback.extract_tb(error.__traceback__)
                  if (path and real(f.filename) == real(path))
                  or os.path.dirname(real(f.filename)) == real(CONFIG_DIR)]
        if frames:
            return error, f"{os.path.basename(frames[-1].filename)}, line {frames[-1].lineno}"
        error = error.__cause__ or error.__context__
    return None, ""


def parse_flags(argv: list) -> list:
    """absl's flag parsing (which runs the config file) with every error on one line."""
    try:
        return FLAGS(argv)
    except Exception as e:        # the command line's or the config file's: the user's
        if "--traceback" in argv:
            raise
        errors.fail(flag_error(e, argv))


def help_text() -> str:
    """--help: what the program does, its modes, the config files, the flags, the exit codes."""
    wrap = lambda text, indent: textwrap.fill(text, 96, initial_indent=indent,
                                              subsequent_indent=indent + "    ")
    names = [n for n in shipped_configs() if n != "base"]
    lines = [__doc__.strip(), "", "Modes (--mode=NAME):"]
    lines += [wrap(f"{name}: {mode.help}", "  ") for name, mode in MODES.items()]
    lines += ["", "Config files (--config=NAME[:variant], or a path):",
             wrap(", ".join(n for n in names if not n.startswith("study")), "  "),
             "  studies (python -m srupp_jax.study --config=NAME ...): "
             + ", ".join(n for n in names if n.startswith("study")), "",
             "Every key of a config, its value and its meaning (any key: --config.KEY=VALUE):",
             "  srupp --config=enwik8 --mode=show_config", "", "Flags:"]
    for name in OUR_FLAGS:
        flag = FLAGS[name]
        default = "" if name == "config" else f" (default {flag.default_as_str})"
        lines.append(wrap(f"--{name}: {flag.help}{default}", "  "))
    return "\n".join(lines) + "\n"


def eval_config(workdir: str):
    """The config for eval/generate: DIR/config.json with the command line's --config.KEY
    overrides applied, or the --config flag's when the workdir has none."""
    from srupp_jax.training import run_config
    saved = run_config.load(workdir)
    if saved is None:
        return FLAGS.config
    if config_flags.get_config_filename(FLAGS["config"]).split(":")[0] != DEFAULT_CONFIG:
        logging.warning("using %s/%s, the config of the training run; the --config file is not "
                        "read (only --config.KEY=VALUE overrides apply)", workdir,
                        run_config.CONFIG_FILE)
    return run_config.override(saved, config_flags.get_override_values(FLAGS["config"]))


def check_arguments(argv: list) -> None:
    """app.UsageError for a stray argument, a flag of another mode, a missing --workdir."""
    if len(argv) > 1:
        extra = " ".join(argv[1:])
        before = sys.argv[sys.argv.index(argv[1]) - 1] if argv[1] in sys.argv else ""
        hint = (f"; quote a value with spaces: {before.split('=')[0]}=\""
                f"{before.split('=', 1)[1]} {extra}\"" if before.startswith("-") and "=" in before
                else "; every argument is a --flag=VALUE")
        raise app.UsageError(f"unexpected argument{'s' if len(argv) > 2 else ''} {extra!r}"
                             + hint)
    name, mode = FLAGS.mode, MODES[FLAGS.mode]
    for flag in dict.fromkeys(f for m in MODES.values() for f in m.flags):
        if flag not in mode.flags and FLAGS[flag].present:
            owners = " or ".join(n for n, m in MODES.items() if flag in m.flags)
            raise app.UsageError(f"--{flag} applies to --mode={owners} only, not "
                                 f"--mode={name}; drop it (or use --mode={owners})")
    if mode.workdir == "none" and FLAGS["workdir"].present:
        raise app.UsageError(f"--workdir does not apply to --mode={name} (it writes nothing); "
                             "drop it")
    if mode.workdir in ("train", "run") and not FLAGS.workdir:
        needing = ", ".join(n for n, m in MODES.items() if m.workdir in ("train", "run"))
        raise app.UsageError(f"--workdir is required for --mode={name}; add --workdir=DIR "
                             f"(the modes with a workdir: {needing})")
    if mode.check is not None:
        mode.check(FLAGS)


def check_task_has(name: str, config, workdir: str) -> None:
    """app.UsageError when the task of `config` (the workdir's run, or the --config file's)
    has no mode `name`, naming the task and the modes it has."""
    from srupp_jax import tasks

    task = tasks.task_class(config)
    if name not in task.modes:
        where = f"{workdir} holds a {task.name!r} run" if workdir else \
            f"the config is of the {task.name!r} task"
        raise app.UsageError(f"--mode={name} does not apply here: {where}, whose modes are "
                             f"{', '.join(task.modes)}")


def main(argv):
    logs.setup()
    errors.stop_on_sigterm()        # SIGTERM outside training: one line, exit 75
    with errors.front_door(traceback=FLAGS.traceback):
        check_arguments(argv)
        _run_mode()


def _run_mode():
    name, workdir = FLAGS.mode, FLAGS.workdir
    mode, config = MODES[name], FLAGS.config
    config_keys.check(config, where="--config=" + config_flags.get_config_filename(
        FLAGS["config"]))
    if workdir and mode.workdir != "train":
        config = eval_config(workdir)
    if name != "show_config":
        from srupp_jax.training import workdir as workdir_lib
        check_task_has(name, config, workdir if mode.workdir != "train" else "")
        if mode.workdir == "train":
            workdir_lib.check_writable(workdir)
        elif mode.workdir == "run":
            workdir_lib.check_readable(workdir)
    result = mode.run(config, workdir, FLAGS)
    if isinstance(result, dict):
        print(json.dumps({"mode": name, **result}, sort_keys=True))
        if "status" in result:      # how a run ended: srupp_jax/training/workdir.py, README
            from srupp_jax.training.workdir import EXIT_CODES
            sys.exit(EXIT_CODES[result["status"]])


def run() -> None:
    """The console entry point (`srupp`, and main.py in a checkout).

    Before the flags are defined, sys.argv gets a --config: the default config file when none
    is given (first, so that --config.KEY overrides follow it), a shipped config's path when
    it names one (`--config=enwik8:k5`); config_flags reads the overrides from sys.argv.
    --help prints help_text() and exits 0."""
    argv = list(sys.argv)
    with errors.front_door(traceback="--traceback" in argv):
        argv = prepare_argv(argv)
    sys.argv[:] = argv
    define_flags()
    if any(a in HELP_ARGS for a in argv[1:]):
        print(help_text(), end="")
        sys.exit(0)
    app.run(main, argv=argv, flags_parser=parse_flags)
