"""What each mode of main.py / `srupp` does, for any task; the same as functions for a script or
a notebook:

    metrics = modes.train(config, workdir)            --mode=train: train (resuming), final metrics
    metrics = modes.evaluate(config, workdir)         --mode=eval: dev and test of the best checkpoint
    model, params, rest, step = modes.restore(config, workdir)
    modes.smoke(config)                               --mode=smoke: one forward and backward pass
    modes.plan(config)                                --mode=plan: memory per device, fits or not
    modes.sample_text(config, workdir, prompt, ...)   --mode=generate (language models)
    modes.translate_file(config, workdir, src, out)   --mode=translate (translation)
    modes.predict_file(config, workdir, texts, out)   --mode=predict (classification)
    importing.import_torch(config, workdir, path)     --mode=import: a released SRU++ model
    modes.validate_config(config, num_devices)        every check, before anything is read

`MODES` is the table the command line (cli.py) reads: each mode's help, its own flags, what it
does with --workdir, a check of its flags, and its function. Which modes a task has is the
task's (`Task.modes`, srupp_jax/tasks/base.py). Importing this module imports nothing heavy;
each mode imports what it runs.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Callable, Optional

from srupp_jax import tasks
from srupp_jax.data.lines import read_lines, write_lines
from srupp_jax.programs import config_keys


def validate_config(config, num_devices: int, num_processes: int = 1) -> None:
    """Raise ValueError naming the bad value (or a key configs/base.py lacks) before anything
    is read, built or compiled: the keys, the task's checks and the trainer's."""
    from srupp_jax.training import trainer

    config_keys.check(config)
    tasks.make(config).validate(num_devices, num_processes)
    trainer.validate(config)


def train(config, workdir: str, *, force: bool = False, allow_config_change: bool = False,
          given=()) -> dict:
    """Train `config`'s task in `workdir`, resuming from its checkpoints; the final metrics
    with the run's `status` (srupp_jax.training.trainer.train_and_evaluate). given: the keys
    set on the command line (a run with train.init_from must not contradict its source)."""
    from srupp_jax.training import run_config, trainer

    config_keys.check(config)
    saved = run_config.load(workdir) if workdir else None
    if saved is not None and saved.model.get("imported_from", ""):
        raise ValueError(f"--workdir={workdir} holds a model imported from "
                         f"{saved.model.imported_from} (parameters only); train from it in a "
                         f"new workdir: --config.train.init_from={workdir}")
    return trainer.train_and_evaluate(tasks.make(config), workdir, force=force,
                                      allow_config_change=allow_config_change, given=given)


def given_keys(flags) -> tuple:
    """The config keys the command line sets (--config.KEY=VALUE), dotted."""
    from ml_collections import config_flags
    return tuple(config_flags.get_override_values(flags["config"]))


def build_model(config, rngs):
    """The model `config` describes (config.model.vocab_size must be known)."""
    return tasks.make(config).build_model(rngs)


def restore(config, workdir: str, which: str = "best"):
    """(model, params, rest, step) of the best (else latest, else older) checkpoint."""
    from srupp_jax.inference import restore as restoring

    task = tasks.make(config)
    if config.model.vocab_size == 0:
        task = tasks.prepared(config)
    return restoring.restore(task, workdir, which)


def evaluate(config, workdir: str, which: str = "best") -> dict:
    """Restore the best (falling back to the latest) checkpoint; dev and test metrics over
    the whole splits (eval.max_tokens limits only the dev evaluations during training)."""
    from srupp_jax.inference import restore as restoring
    from srupp_jax.training import sharding

    sharding.initialize_distributed()
    mesh = sharding.from_config(config.mesh)
    task = tasks.prepared(config, mesh.devices.size)
    model, params, rest, step = restoring.restore(task, workdir, which)
    params, rest = sharding.onto_mesh((params, rest), mesh)
    evaluate_split = task.evaluator(model, mesh)
    out = {"step": step, **task.marks}
    for split in ("dev", "test"):
        out.update(evaluate_split(params, rest, split, full=True, desc=f"eval {split}",
                                  out_dir=workdir))
    return out


def smoke(config) -> float:
    """One forward and backward pass of `config`'s model on random inputs (main.py
    --mode=smoke); prints the sizes and returns the mean loss in nats."""
    config_keys.check(config)
    return tasks.make(config).smoke()


def resolved_task(config, num_devices: int = 1):
    """The Task of `config` with its vocabulary known: the given or byte-level size without
    reading data (language models), else the data's (read)."""
    task = tasks.make(config)
    task.validate(num_devices)
    if config.model.vocab_size == 0 and task.name == "lm":
        from srupp_jax.tasks.lm import smoke_config
        resolved = smoke_config(config)
        if resolved is not None:
            task.config = resolved
            return task
    return tasks.prepared(config, num_devices) if config.model.vocab_size == 0 else task


def plan(config, device_memory: float = 0.0) -> dict:
    """Print the memory plan of `config`'s training step per device (tasks/plan.py):
    parameters, gradients, optimizer state, activations with and without remat, whether it
    fits the device (its own memory, or `device_memory` GiB) and the smallest change that
    would (main.py --mode=plan). Returns the numbers (bytes)."""
    import jax

    from srupp_jax.tasks import plan as planning

    if device_memory < 0:
        raise ValueError(f"--device_memory={device_memory}; expected GiB >= 0 (0 = the device's)")
    devices = config.mesh.num_devices or jax.device_count()
    validate_config(config, devices)
    p, fix = resolved_task(config, devices).memory_plan(devices, device_memory)
    print(planning.describe(p, fix))
    out = {"params_bytes": p.params, "optimizer_bytes": p.optimizer, "total_bytes": p.total(),
           **{f"activations_bytes_{r}": b for r, b in p.activations.items()}}
    if p.device_memory:
        out.update(device_memory_bytes=p.device_memory, fits=int(p.total() <= p.device_memory))
    return out


def sample_text(config, workdir: str, prompt: str = "", num_tokens: int = 200, *,
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                out=None) -> None:
    """Restore the best (else latest) checkpoint of `workdir` and stream `num_tokens` tokens
    sampled after `prompt` to `out` (stdout), with eval.mem_len tokens of attention memory
    (main.py --mode=generate). An empty prompt starts a line (bytes) or a sentence (words)."""
    import codecs

    import jax
    import numpy as np
    from flax import nnx

    from srupp_jax.inference import restore as restoring
    from srupp_jax.inference.generate import check_sampling, generate_iter

    check_sampling(temperature, top_k, top_p)
    task = tasks.prepared(config)
    config, data = task.config, task.data
    model, params, rest, _ = restoring.restore(task, workdir)
    nnx.update(model, params, rest)
    vocab, out = data.vocab, out or sys.stdout
    if data.unit == "word":  # words; an empty prompt starts a sentence after <eos>
        ids = vocab.encode(prompt, add_eos=False) if prompt.strip() else []
        ids = np.concatenate([[vocab.eos_id], ids]).astype(np.int32)
    else:  # bytes; an empty prompt starts after a newline
        ids = vocab.encode(prompt or "\n")
    out.write(prompt)
    out.flush()
    # bytes: an incremental UTF-8 decoder keeps a character split across blocks for the next
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for block in generate_iter(model, ids[None, :], num_tokens, key=jax.random.PRNGKey(seed),
                               mem_len=config.eval.mem_len, temperature=temperature,
                               top_k=top_k, top_p=top_p, block=32):
        if data.unit == "word":
            out.write(" " + vocab.decode(block[0]))
        else:
            out.write(utf8.decode(vocab.decode_bytes(block[0])))
        out.flush()
    out.write(utf8.decode(b"", final=True) + "\n")
    out.flush()


def translate_file(config, workdir: str, input_path: str = "-", output_path: str = "-") -> int:
    """Restore the best checkpoint of `workdir` and translate `input_path` (one sentence a
    line, the source language; "-": stdin) to `output_path` ("-": stdout). Returns the number
    of sentences. Empty lines stay empty."""
    from flax import nnx

    from srupp_jax.data.translation_data import Ragged
    from srupp_jax.inference import restore as restoring
    from srupp_jax.inference.translate import translate_ids

    task = tasks.prepared(config)
    model, params, rest, _ = restoring.restore(task, workdir)
    nnx.update(model, params, rest)
    words = task.data.subwords
    lines = read_lines(input_path)
    sources = Ragged.from_rows(words.encode(lines, words.src_lang))
    hyps = translate_ids(model, sources, task.config)
    write_lines(output_path, [out if line.strip() else ""
                              for line, out in zip(lines, words.detokenize(hyps))])
    return len(lines)


def predict_file(config, workdir: str, input_path: str = "-", output_path: str = "-") -> int:
    """Restore the best checkpoint of `workdir` and label `input_path` (one text a line; "-":
    stdin), in batches, to `output_path` ("-": stdout): per line the predicted label, a tab
    and its probability, in the input's order; empty lines stay empty. Returns the number of
    lines."""
    from srupp_jax.inference import classify
    from srupp_jax.inference import restore as restoring

    task = tasks.prepared(config)
    model, params, rest, _ = restoring.restore(task, workdir)
    data, c = task.data, task.config
    lines = [line.strip() for line in read_lines(input_path)]
    full = [i for i, line in enumerate(lines) if line]
    log_probs = classify.predictor(model)(
        params, rest, data.encode([lines[i] for i in full], c.train.max_len),
        batch_tokens=c.eval.batch_tokens, max_len=c.train.max_len, pad_id=data.tokens.pad_id,
        eos_id=data.tokens.end_id)
    out = [""] * len(lines)
    for i, line in zip(full, classify.prediction_lines(log_probs, data.labels)):
        out[i] = line
    write_lines(output_path, out)
    return len(lines)


def export_model(config, workdir: str, output: str) -> dict:
    """Write the best checkpoint's model of `workdir` to `output` as jax.export artifacts a
    server runs with jax alone (srupp_jax/inference/export.py; main.py --mode=export)."""
    import os

    from flax import nnx

    from srupp_jax.inference import export
    from srupp_jax.inference import restore as restoring

    if not output or output == "-":
        raise ValueError(f"--output={output!r}: --mode=export writes a folder; give "
                         "--output=DIR")
    config.model.impl = "scan"                  # portable and exact on any platform
    task = tasks.prepared(config)
    model, params, rest, step = restoring.restore(task, workdir)
    nnx.update(model, params, rest)
    if task.name == "lm":
        data = task.data
        vocab = (data.vocab.symbols.tolist() if data.unit != "word" else
                 list(data.vocab.tokens))
        export.export_lm(model, params, config.eval.mem_len, vocab, output)
    else:
        export.export_seq2seq(model, params, config.train.max_len, config.train.max_len,
                              task.data.subwords.pieces(), output)
    return {"step": step, "output": output, "files": len(os.listdir(output))}


def check_files(source: str, target: str, what: str = "source sentences") -> None:
    """FileNotFoundError / IsADirectoryError naming --input or --output before a model loads."""
    import os

    if source != "-" and not os.path.isfile(source):
        raise FileNotFoundError(f"--input={source}: no such file; give a file of {what}, "
                                "one a line (or '-' for stdin)")
    if target != "-" and (os.path.isdir(target)
                          or not os.path.isdir(os.path.dirname(os.path.abspath(target)))):
        raise IsADirectoryError(f"--output={target}: expected a file in an existing directory "
                                "(or '-' for stdout)")


def _importing():
    from srupp_jax.programs import importing  # --mode=import (torch only there)
    return importing


def _check_num_tokens(f) -> None:
    if f.num_tokens < 0:
        raise ValueError(f"--num_tokens={f.num_tokens}; expected >= 0")


@dataclasses.dataclass(frozen=True)
class Mode:
    """One mode of the program.

    help: what it does (--help); run(config, workdir, flags) -> a dict printed as one JSON
    line (a `status` in it gives the exit code), or None; workdir: "train" (created or
    resumed; required), "run" (a trained run's, whose config.json is used; required), "none"
    (refused) or "optional"; flags: the flags of this mode only (given with another mode, an
    error); check(flags): raises for a bad flag before anything is read or built.
    """
    help: str
    run: Callable
    workdir: str = "run"
    flags: tuple = ()
    check: Optional[Callable] = None


MODES = {
    "train": Mode(
        "train (resuming from DIR's checkpoints), evaluating on dev as configured; the resolved "
        "config (vocab_size from the data, every override) is saved as DIR/config.json once the "
        "run starts. A rerun whose config differs from DIR's record in what trains stops, "
        "naming the keys, unless --allow_config_change (then recorded in "
        "DIR/config_changes.jsonl).",
        lambda config, workdir, f: train(config, workdir, force=f.force,
                                         allow_config_change=f.allow_config_change,
                                         given=given_keys(f)),
        workdir="train", flags=("force", "allow_config_change")),
    "eval": Mode(
        "restore the best checkpoint (else the latest) and report the task's dev and test "
        "metrics over the whole splits (BPC / perplexity; translation: loss, BLEU, chrF; "
        "classification: loss, accuracy, macro-F1, per-class precision and recall, with "
        "DIR/predictions.*.tsv and DIR/confusion.*.png).",
        lambda config, workdir, f: evaluate(config, workdir)),
    "smoke": Mode(
        "one forward and backward pass of the configured model on random inputs; needs no data "
        "(bytes: 256 tokens; words: model.vocab_size, or the prepared data).",
        lambda config, workdir, f: smoke(config), workdir="none"),
    "generate": Mode(
        "restore the best checkpoint (else the latest) and stream --num_tokens tokens sampled "
        "after --prompt (--temperature, --top_k, --top_p, --seed) to stdout, with eval.mem_len "
        "tokens of attention memory (language models).",
        lambda config, workdir, f: sample_text(
            config, workdir, f.prompt, f.num_tokens, temperature=f.temperature, top_k=f.top_k,
            top_p=f.top_p, seed=f.seed),
        flags=("prompt", "num_tokens", "temperature", "top_k", "top_p", "seed"),
        check=_check_num_tokens),
    "translate": Mode(
        "restore the best checkpoint and translate --input (one sentence a line; stdin) to "
        "--output (stdout) with config.decode (beam size, length penalty, length limit).",
        lambda config, workdir, f: translate_file(config, workdir, f.input, f.output) and None,
        flags=("input", "output"), check=lambda f: check_files(f.input, f.output)),
    "predict": Mode(
        "restore the best checkpoint and label --input (one text a line; stdin), in batches, "
        "to --output (stdout): per line the label and its probability, tab-separated "
        "(classification).",
        lambda config, workdir, f: predict_file(config, workdir, f.input, f.output) and None,
        flags=("input", "output"), check=lambda f: check_files(f.input, f.output, "texts")),
    "plan": Mode(
        "print the memory of a training step per device before any run: parameters, "
        "gradients, optimizer state, activations with each model.remat, whether it fits the "
        "device (its own memory on a GPU/TPU, or --device_memory GiB) and the smallest change "
        "that would (remat, batch with grad_accum_steps, mesh.fsdp_size).",
        lambda config, workdir, f: plan(config, f.device_memory), workdir="none",
        flags=("device_memory",)),
    "export": Mode(
        "write the best checkpoint's model to --output=DIR as jax.export (StableHLO) artifacts "
        "with their parameters and export.json (shapes, vocabulary): the LM forward with its "
        "carried state, or the translation encoder and one decoder step; a server runs them "
        "with jax alone (README).",
        lambda config, workdir, f: export_model(config, workdir, f.output),
        flags=("output",)),
    "import": Mode(
        "read a released SRU++ language model (--torch_checkpoint, a PyTorch state dict of the "
        "paper's experiments) into DIR: config.json (the --config file with every size read "
        "from the file) and a checkpoint, which eval, generate and train.init_from accept.",
        lambda config, workdir, f: _importing().import_torch(
            config, workdir, f.torch_checkpoint, given_keys(f)),
        workdir="train", flags=("torch_checkpoint",),
        check=lambda f: _importing().check_torch_checkpoint(f.torch_checkpoint)),
    "show_config": Mode(
        "print the config (the --config file with its overrides; with only --workdir, the "
        "run's config.json) as `key = value  # meaning`, meanings from configs/base.py.",
        lambda config, workdir, f: print(config_keys.describe(config), end=""),
        workdir="optional"),
}
