"""The command line program: `python main.py ...` in a checkout, `srupp ...` once installed.

    srupp --config=default --workdir=DIR                     # train, then dev eval
    srupp --config=enwik8:k5 --workdir=DIR                   # a shipped config by name
    srupp --config=configs/enwik8.py:k5 --workdir=DIR        # or by path (main.py's form)
    srupp --config=default --config.model.d=128 ...          # override any key
    srupp --workdir=DIR --mode=eval                          # dev + test of the best checkpoint
    srupp --workdir=DIR --mode=generate --prompt="def "      # sample text

Modes:
  train  train (resuming from DIR's checkpoints), evaluating on dev as configured; the resolved
         config (vocab_size from the data, every override) is saved as DIR/config.json once
         the run starts. A rerun whose config differs from DIR's record in what trains stops,
         naming the keys, unless --allow_config_change (then recorded in
         DIR/config_changes.jsonl).
  eval   restore the best checkpoint (else the latest) and report dev and test BPC / PPL over
         the whole splits, with a progress bar per split.
  smoke  one forward and backward pass of the configured model on random tokens.
  generate  restore the best checkpoint (else the latest) and stream --num_tokens tokens
         sampled after --prompt (--temperature, --top_k, --top_p, --seed) to stdout, with
         eval.mem_len tokens of attention memory (language models).
  translate  restore the best checkpoint and translate --input (one sentence a line; stdin)
         to --output (stdout) with config.decode (beam size, length penalty, length limit).

eval and generate use DIR/config.json when it exists (so the training overrides need not be
repeated); `--config.KEY=VALUE` given with them is applied on top (e.g. eval.mem_len).

A mistake on the command line or in the config (an unknown key, a bad value, a missing dataset
or file) prints one line `error: ...` to stderr and exits with status 2; a run that cannot go on
(a checkpoint that cannot be saved or restored, non-finite losses, a workdir in use by another
trainer) prints one line and exits with status 1; `--traceback` shows the full stack instead.
Programming errors raise as usual.
A training run ends with a JSON line whose `status` gives the exit code: finished or stopped
0, preempted (SIGTERM) 75, interrupted (SIGINT) 130 (srupp_jax/workdir.py).
"""
import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
DEFAULT_CONFIG = os.path.join(CONFIG_DIR, "default.py")
USAGE_EXIT = 2
RUN_FAULT_EXIT = 1   # a checkpoint that cannot be saved or restored, NaN losses, a locked workdir


def define_flags() -> None:
    """Define the program's flags (once). `run` calls it after putting --config in sys.argv:
    config_flags parses a default config at definition time, before errors could be caught."""
    if "config" in flags.FLAGS:
        return
    config_flags.DEFINE_config_file(
        "config", DEFAULT_CONFIG, "Experiment config: a file (configs/enwik8.py), or the name of "
        "a shipped one (enwik8), with an optional :variant.")
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
    flags.DEFINE_enum("mode", "train", ["train", "eval", "smoke", "generate", "translate"],
                      "What to run.")
    flags.DEFINE_string("input", "-", "--mode=translate: a file of source sentences, one a "
                        "line ('-' = stdin).")
    flags.DEFINE_string("output", "-", "--mode=translate: where the translations go ('-' = "
                        "stdout).")
    flags.DEFINE_string("prompt", "", "--mode=generate: the text to continue ('' = start of a "
                        "line/sentence).")
    flags.DEFINE_integer("num_tokens", 200, "--mode=generate: tokens to sample.")
    flags.DEFINE_float("temperature", 1.0, "--mode=generate: softmax temperature (0 = greedy).")
    flags.DEFINE_integer("top_k", 0, "--mode=generate: keep the k most likely tokens (0 = all).")
    flags.DEFINE_float("top_p", 1.0, "--mode=generate: nucleus sampling mass (1 = off).")
    flags.DEFINE_integer("seed", 0, "--mode=generate: sampling seed.")
    flags.DEFINE_bool("traceback", False, "Show the full stack of a user error instead of one "
                      "line.")
    flags.DEFINE_bool("force", False, "--mode=train: take over the workdir lock of another "
                      "trainer (only when that run is dead, e.g. a stale lock left on another "
                      "host).")
    flags.DEFINE_bool("allow_config_change", False, "--mode=train: go on in a workdir whose "
                      "recorded config differs from this command's (e.g. a lower train.lr); the "
                      "changes are recorded in WORKDIR/config_changes.jsonl.")
    # listed by --helpshort of main.py / srupp
    for name in ("config", "workdir", "mode", "prompt", "num_tokens", "temperature", "top_k",
                 "top_p", "seed", "traceback", "force", "allow_config_change", "input",
                 "output"):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


FLAGS = flags.FLAGS

# What a user's mistake raises: these print one line; anything else is a bug and raises.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, app.UsageError,
               flags.Error)


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


def one_line(error: BaseException) -> str:
    """The message of `error` on one line; for a config file that raised, its last line."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Traceback (most recent call last)" in text:     # config_flags wraps get_config errors
        lines = [lines[0].split(": Error whilst parsing")[0] + ":", lines[-1]]
    return " ".join(lines) or type(error).__name__


def _fail(error: BaseException, code: int = USAGE_EXIT) -> None:
    print(f"error: {one_line(error)}", file=sys.stderr)
    sys.exit(code)


def _is_config_arg(arg: str) -> bool:
    return arg.startswith(("--config=", "-config="))


def parse_flags(argv: list) -> list:
    """absl's flag parsing with user errors on one line."""
    try:
        return FLAGS(argv)
    except (flags.Error, app.UsageError, AttributeError, KeyError, OSError) as e:
        # AttributeError / KeyError: an override of a key the config lacks (config_flags)
        if "--traceback" in argv:
            raise
        if isinstance(e, (AttributeError, KeyError)):
            key = one_line(e).strip("\"'")
            bad = [a for a in argv if a.startswith("--config.")
                   and key in a.split("=", 1)[0].split(".")]
            e = ValueError(f"unknown config key {key!r} in {' '.join(bad)}; see the config "
                           "files for the valid keys")
        _fail(e)


def eval_config(workdir: str):
    """The config for eval/generate: DIR/config.json with the command line's --config.KEY
    overrides applied, or the --config flag's when the workdir has none."""
    from srupp_jax import run_config
    saved = run_config.load(workdir)
    if saved is None:
        return FLAGS.config
    if config_flags.get_config_filename(FLAGS["config"]).split(":")[0] != DEFAULT_CONFIG:
        logging.warning("using %s/%s, the config of the training run; the --config file is not "
                        "read (only --config.KEY=VALUE overrides apply)", workdir,
                        run_config.CONFIG_FILE)
    return run_config.override(saved, config_flags.get_override_values(FLAGS["config"]))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax is chatty at INFO
    from srupp_jax.checkpoint import CheckpointError
    from srupp_jax.workdir import WorkdirLockedError
    try:
        _run_mode()
    except USER_ERRORS as e:
        if FLAGS.traceback:
            raise
        _fail(e)
    except (CheckpointError, FloatingPointError, WorkdirLockedError) as e:
        if FLAGS.traceback:   # a run that cannot go on: saved state is safe, say why
            raise
        _fail(e, RUN_FAULT_EXIT)


def _run_mode():
    config = FLAGS.config
    from srupp_jax import generate, train
    if FLAGS.mode == "smoke":
        train.smoke(config)
        return
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required for --mode=train, eval and generate (and "
                             "translate); add --workdir=DIR")
    if FLAGS.mode == "translate":
        from srupp_jax import translate
        translate.translate_file(eval_config(FLAGS.workdir), FLAGS.workdir, FLAGS.input,
                                 FLAGS.output)
        return
    if FLAGS.mode == "generate":
        if FLAGS.num_tokens < 0:
            raise app.UsageError(f"--num_tokens={FLAGS.num_tokens}; expected >= 0")
        generate.sample_text(eval_config(FLAGS.workdir), FLAGS.workdir, FLAGS.prompt,
                             FLAGS.num_tokens, temperature=FLAGS.temperature, top_k=FLAGS.top_k,
                             top_p=FLAGS.top_p, seed=FLAGS.seed)
        return
    if FLAGS.mode == "train":
        metrics = train.train_and_evaluate(config, FLAGS.workdir, force=FLAGS.force,
                                           allow_config_change=FLAGS.allow_config_change)
    else:
        metrics = train.evaluate_checkpoint(eval_config(FLAGS.workdir), FLAGS.workdir)
    print(json.dumps({"mode": FLAGS.mode, **metrics}, sort_keys=True))
    if FLAGS.mode == "train":     # how the run ended: srupp_jax/workdir.py, README
        from srupp_jax.workdir import EXIT_CODES
        sys.exit(EXIT_CODES[metrics["status"]])


def run() -> None:
    """The console entry point (`srupp`, and main.py in a checkout).

    Before the flags are defined, sys.argv gets a --config: the default config file when none
    is given (first, so that --config.KEY overrides follow it), a shipped config's path when
    it names one (`--config=enwik8:k5`); config_flags reads the overrides from sys.argv."""
    argv = list(sys.argv)
    for i in range(1, len(argv) - 1):      # --config VALUE -> --config=VALUE
        if argv[i] in ("--config", "-config"):
            argv[i:i + 2] = [f"{argv[i]}={argv[i + 1]}"]
            break
    try:
        argv = [resolve_config_arg(a) if _is_config_arg(a) else a for a in argv]
    except app.UsageError as e:
        if "--traceback" in argv:
            raise
        _fail(e)
    if not any(_is_config_arg(a) for a in argv):
        argv.insert(1, f"--config={DEFAULT_CONFIG}")
    sys.argv[:] = argv
    define_flags()
    app.run(main, argv=argv, flags_parser=parse_flags)
