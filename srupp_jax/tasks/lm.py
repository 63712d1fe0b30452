"""The language-model task (paper section 4): bytes or words, contiguous streams, a carry.

Training reads B contiguous streams, M = train.unroll tokens a step (data/streams.py), and
carries each model's `LMState` (recurrent state and attention memory) from step to step,
rebuilt where the streams wrap (each epoch). Evaluation walks a whole split in eval.unroll
segments with eval.mem_len tokens of memory (the same-length mask when eval.same_length) and
reports the loss in nats with BPC (bytes) or perplexity (words). The best checkpoint is the
lowest dev loss. Architectures: srupp, transformer_xl, sha_rnn (srupp_jax/models/archs.py).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from srupp_jax.data.streams import Streams
from srupp_jax.errors import require
from srupp_jax.models import archs
from srupp_jax.models.base import split_for_eval
from srupp_jax.models.srupp_lm import SRUppConfig
from srupp_jax.nn.adaptive import check_cutoffs
from srupp_jax.nn.recurrence import describe_backend
from srupp_jax.tasks.base import Task, measured_impl
from srupp_jax.training import progress, sharding

MIN_ADAPTIVE_VOCAB = 100   # cutoff_fractions give no cutoffs below this vocabulary size


def fraction_cutoffs(vocab_size: int, fractions) -> tuple:
    """Cutoffs int(f * vocab_size) for each fraction, () when vocab_size < MIN_ADAPTIVE_VOCAB."""
    if vocab_size < MIN_ADAPTIVE_VOCAB:
        return ()
    return tuple(sorted({int(f * vocab_size) for f in fractions} - {0}))


def resolve_config(config: ml_collections.ConfigDict, data) -> ml_collections.ConfigDict:
    """A copy of `config` with vocab_size (and cutoffs) from `data` (an LMData); ValueError
    when the config asks for a smaller vocabulary or cutoffs the vocabulary cannot hold."""
    config = ml_collections.ConfigDict(config.to_dict())
    m, name, size = config.model, config.data.name, data.vocab_size
    if m.vocab_size == 0:
        m.vocab_size = size
    elif m.vocab_size < size:
        raise ValueError(f"model.vocab_size={m.vocab_size} but the {name} vocabulary has {size} "
                         "entries; set --config.model.vocab_size=0 to take it from the data")
    if data.unit == "word" and not m.cutoffs and m.cutoff_fractions:
        m.cutoffs = fraction_cutoffs(m.vocab_size, m.cutoff_fractions)
    if m.cutoffs:
        check_cutoffs(m.cutoffs, m.vocab_size, source=f"the {name} vocabulary")
    return config


def lm_loss(model, carry, inputs, targets):
    """(summed nll of targets [B, M] given inputs [B, M], token count, new LMState)."""
    nll, carry = model.nll(inputs, targets, carry)
    return nll.sum(), nll.size, carry


def split_metrics(mean_nll: float, unit: str, prefix: str) -> dict[str, float]:
    """loss in nats plus BPC (bytes/characters) or perplexity (words)."""
    out = {f"{prefix}_loss": mean_nll}
    if unit == "word":
        out[f"{prefix}_ppl"] = math.exp(min(mean_nll, 700.0))
    else:
        out[f"{prefix}_bpc"] = mean_nll / math.log(2)
    return out


def make_eval_step(graphdef, same_length: bool):
    """jit-compiled (params, rest, carry, inputs, targets, weights) -> (sum of weights * nll,
    new carry)."""
    def step(params, rest, carry, inputs, targets, weights):
        model = nnx.merge(graphdef, params, rest)
        nll, carry = model.nll(inputs, targets, carry, same_length=same_length)
        return jnp.sum(nll * weights), carry

    return jax.jit(step)


def make_evaluator(model, config, mesh):
    """A function (params, rest, tokens, max_tokens=0, desc="") -> mean nll (nats) over
    `tokens` (or its first `max_tokens`), every target predicted once; the step compiles once
    per segment shape (full, the last partial one, the tail).

    B_e contiguous streams, segments of eval.unroll tokens, eval.mem_len tokens of attention
    memory carried across segments, the same-length mask when eval.same_length; the fewer
    than B_e tokens after the last stream are predicted last, continuing it (Streams).
    """
    e = config.eval
    # Streams over devices (and hosts, each reading its own) when the batch divides the mesh;
    # otherwise (e.g. batch 1 on 8 devices) every process evaluates all streams replicated.
    shard = e.batch_size % mesh.devices.size == 0
    procs, index = (jax.process_count(), jax.process_index()) if shard else (1, 0)
    graphdef, _, _ = split_for_eval(model)
    step = make_eval_step(graphdef, e.same_length)

    def evaluate(params, rest, tokens: np.ndarray, max_tokens: int = 0,
                 desc: str = "") -> float:
        """desc: a progress bar of that name over the segments (progress.bar); "": lines
        only when it is slow."""
        if max_tokens:
            tokens = tokens[:max_tokens + 1]
        streams = Streams(tokens, e.batch_size // procs, e.unroll, num_processes=procs,
                          process_index=index)
        carry = model.init_state(e.batch_size, e.mem_len)
        if shard:
            carry = jax.device_put(carry, sharding.batch_shardings(mesh, carry))
        total = 0.0
        segments = -(-streams.stream_length // e.unroll) + bool(streams.dropped_tokens)
        batches = progress.bar(streams.eval_batches(),
                               desc if jax.process_index() == 0 else "", total=segments,
                               unit="segment", phase="eval.batch")
        for batch in batches:
            if shard:
                batch = [sharding.global_batch(a, mesh) for a in batch]
            s, carry = step(params, rest, carry, *batch)
            total += float(s)
        return total / (len(tokens) - 1)     # every target once (Streams.eval_batches)

    return evaluate


def load_data(config):
    """The token arrays and vocabulary `config.data` names (see srupp_jax.data.datasets)."""
    from srupp_jax.data.datasets import load_tokens
    d = config.data
    text = (dict(path=d.path, valid_path=d.valid_path, test_path=d.test_path, unit=d.unit)
            if d.name == "text" else None)
    return load_tokens(d.name, data_dir=d.data_dir or None, cache_dir=d.cache_dir or None,
                       max_bytes=d.max_bytes or None, text_source=text)


def check_lengths(config, data) -> None:
    """ValueError when a split is too short for one training step (train) or one evaluation
    segment (valid, test); for your own text naming the file and its size."""
    from srupp_jax.data import text
    d = config.data
    files = {"train": "path", "valid": "valid_path", "test": "test_path"}
    for split, tokens in (("train", data.train), ("valid", data.valid), ("test", data.test)):
        section = "train" if split == "train" else "eval"
        b, m = config[section].batch_size, config[section].unroll
        if len(tokens) > b * m:
            continue
        if d.name != "text":
            source, part = f"data.name={d.name!r}", ""
        else:
            key = files[split] if d.valid_path else "path"
            source = f"data.{key}={d[key]!r} ({text.source_size(d[key]):,} bytes)"
            part = "" if d.valid_path else " (of a 90/5/5 split)"
        raise ValueError(
            f"{source} is too short: its {split} part{part} has {len(tokens):,} {data.unit}s, "
            f"and {section}.batch_size x {section}.unroll = {b} x {m} needs {b * m + 1:,}; give "
            f"more text, or lower --config.{section}.batch_size / --config.{section}.unroll")


def smoke_config(config):
    """`config` with model.vocab_size known without reading data (--mode=smoke): 256 for
    bytes, the given size for words (with the cutoffs training would derive); None when word
    data leave it unset (then only the data know it)."""
    import ml_collections

    from srupp_jax.data.datasets import unit_of
    unit, m = unit_of(config.data.name, config.data.unit), config.model
    if unit == "word" and not m.vocab_size:
        return None
    config = ml_collections.ConfigDict(config.to_dict())
    m = config.model
    m.vocab_size = m.vocab_size or 256
    if unit == "word" and not m.cutoffs and m.cutoff_fractions:
        m.cutoffs = fraction_cutoffs(m.vocab_size, m.cutoff_fractions)
    return config


def data_marks(data) -> dict:
    """{"standard_data": 0} for data prepared from modified source files (added to every
    metric a run reports), else {}."""
    if data.info.get("standard_source", True):
        return {}
    logging.warning("the %s data were prepared from modified source files (%s): metrics are "
                    "marked standard_data=0", data.name, data.info["source"]["note"])
    return {"standard_data": 0}


class LMTask(Task):
    """Language modelling on B contiguous streams (the module docstring)."""

    name = "lm"
    modes = Task.modes + ("generate",)

    def validate(self, num_devices: int, num_processes: int = 1) -> None:
        from srupp_jax.data.datasets import NAMES, TEXT
        m, t, e, d = self.config.model, self.config.train, self.config.eval, self.config.data
        archs.model_config(self.config, "lm")     # the model's own checks, one place
        require([
            (t.batch_size >= 1, f"train.batch_size={t.batch_size}; expected >= 1"),
            (t.batch_size % num_devices == 0,
             f"train.batch_size={t.batch_size} is not divisible by the {num_devices} devices "
             f"of the mesh; use a multiple of {num_devices} or set mesh.num_devices"),
            (t.batch_size % num_processes == 0,
             f"train.batch_size={t.batch_size} is not divisible by the {num_processes} "
             "processes"),
            (t.unroll >= 1, f"train.unroll={t.unroll}; expected >= 1"),
            (e.batch_size >= 1 and e.unroll >= 1 and e.mem_len >= 0,
             f"eval.batch_size={e.batch_size}, eval.unroll={e.unroll}, eval.mem_len="
             f"{e.mem_len}; expected >= 1, >= 1, >= 0"),
            (e.max_tokens == 0 or e.max_tokens >= e.batch_size * e.unroll,
             f"eval.max_tokens={e.max_tokens} is less than one evaluation segment, eval.batch_size"
             f" x eval.unroll = {e.batch_size * e.unroll}; raise it (0 = the whole split)"),
            (d.name in NAMES + (TEXT,),
             f"data.name={d.name!r}; expected one of {', '.join(NAMES + (TEXT,))}"),
            (d.max_bytes == 0 or d.name == "default",
             f"data.max_bytes={d.max_bytes} applies to data.name='default' only; drop it (or "
             f"set --config.data.max_bytes=0) for data.name={d.name!r}"),
            (d.name != "text" or d.path,
             "data.name='text' needs a file: set --config.data.path=FILE_OR_FOLDER_OF_TXT"),
            (m.vocab_size >= 0, f"model.vocab_size={m.vocab_size}; expected >= 0 (0 = the "
                                "data's)"),
        ])

    def load(self) -> None:
        """Read the data, fill in vocab_size (and cutoffs), cut the training streams."""
        self.data = load_data(self.config)
        self.config = resolve_config(self.config, self.data)
        check_lengths(self.config, self.data)
        self.marks = data_marks(self.data)
        t = self.config.train
        self.streams = Streams(self.data.train, t.batch_size // jax.process_count(), t.unroll,
                               num_processes=jax.process_count(),
                               process_index=jax.process_index())

    def build_model(self, rngs, *, measure: bool = False):
        m = self.config.model
        if m.vocab_size < 1:
            raise ValueError(f"model.vocab_size={m.vocab_size}: resolve the config against its "
                             "data first (task.load)")
        t = self.config.train
        model_config, reason = measured_impl(archs.model_config(self.config, "lm"),
                                             max(1, t.batch_size // jax.device_count()),
                                             t.unroll, timed=measure)
        model = model_config.build(rngs)
        if isinstance(model_config, SRUppConfig):
            logging.info("recurrence: %s", describe_backend(model.backend))
            self.setup = {"recurrence": model.backend.value, "recurrence_reason": reason}
        return model

    def init_carry(self, model):
        return model.init_state(self.config.train.batch_size, self.config.train.unroll)

    def resets_carry(self, step: int) -> bool:
        return step > 0 and step % self.streams.steps_per_epoch == 0   # the streams wrap

    def batch(self, step: int) -> tuple:
        return self.streams.batch(step)

    loss = staticmethod(lm_loss)

    def evaluator(self, model, mesh):
        """evaluate(params, rest, split, full=False, desc="", out_dir=None) -> {split_loss,
        split_bpc or split_ppl}: "dev" (its first eval.max_tokens unless full) or "test"."""
        mean_nll = make_evaluator(model, self.config, mesh)
        tokens = {"dev": self.data.valid, "test": self.data.test}

        def evaluate(params, rest, split: str, *, full: bool = False, desc: str = "",
                     out_dir: str | None = None) -> dict:     # (nothing to write)
            limit = 0 if full else self.config.eval.max_tokens
            return split_metrics(mean_nll(params, rest, tokens[split], limit, desc),
                                 self.data.unit, split)

        return evaluate

    def train_metrics(self, mean_loss: float) -> dict:
        return split_metrics(mean_loss, self.data.unit, "train")

    @property
    def tokens_per_step(self) -> int:
        return self.config.train.batch_size * self.config.train.unroll

    def global_rows(self) -> int:
        return self.config.train.batch_size

    def plan_inputs(self, model, rows: int) -> tuple:
        m = self.config.train.unroll
        tokens = jax.ShapeDtypeStruct((rows, m), jnp.int32)
        return jax.eval_shape(lambda: model.init_state(rows, m)), (tokens, tokens)

    def flops_per_token(self, model) -> float:
        """Attention over 2M keys per query: M tokens of the segment and M of memory."""
        return model.flops_per_token(2 * self.config.train.unroll)

    def smoke_inputs(self):
        """(config with vocab_size known, a random batch [B, M] inputs and targets): bytes take
        256, words the given model.vocab_size (else the prepared data's)."""
        config = smoke_config(self.config)
        if config is None:                  # words: the vocabulary's size is the data's
            try:
                self.load()
            except FileNotFoundError:
                if self.config.data.name == "text":
                    raise
                from srupp_jax.data.datasets import prepare_command
                raise ValueError(
                    f"model.vocab_size=0: --mode=smoke on {self.config.data.name} (words) needs "
                    "the vocabulary's size; set --config.model.vocab_size=N, or prepare the data "
                    f"once: {prepare_command(self.config.data.name)}") from None
            config = self.config
        B, M, V = config.train.batch_size, config.train.unroll, config.model.vocab_size
        tokens = jax.random.randint(jax.random.PRNGKey(config.seed), (B, M + 1), 0, V)
        return config, (tokens[:, :-1], tokens[:, 1:])
