"""The classification task: a label for a text, with a bidirectional SRU++ encoder (or the
Transformer baseline), on the same trainer, checkpoints and metrics as the other tasks.

Data (`data.name`): stdlib_lines (the offline default: a line of Python -> its standard-library
package) or tsv (your folder of {train,valid,test}.tsv, label<TAB>text a line), as bytes,
words or BPE (`data.unit`; srupp_jax/data/classification_data.py). The labels, in the order
first seen in train, are recorded as `data.labels` (config.json) and give `model.num_classes`.
Training batches hold about `train.batch_tokens` padded tokens of one length bucket
(data/batches.py), a pure function of the step; texts longer than `train.max_len` are cut.
There is no carry. The loss is the cross entropy summed over the real rows of a batch, the
weight their count.

Evaluation of a split: `*_loss` (mean cross entropy, nats), `*_accuracy`, `*_macro_f1`; with
--mode=eval also `*_classes` (per label: precision, recall, f1, support) in the JSON, and
WORKDIR/predictions.{dev,test}.tsv (predicted label, its probability, the true label) and
WORKDIR/confusion.{dev,test}.png. The best checkpoint is the highest dev accuracy.
`--mode=predict` labels a file of texts (modes.predict_file). `train.init_from=LM_WORKDIR`
starts the encoder from a language model (tasks/transfer.py).
"""
from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
from absl import logging

from srupp_jax.data.batches import TrainBatches
from srupp_jax.data.classification_data import NAMES, UNITS, load
from srupp_jax.data.lines import write_lines
from srupp_jax.errors import require
from srupp_jax.inference import classify
from srupp_jax.models import archs
from srupp_jax.tasks import transfer
from srupp_jax.tasks.base import Task, measured_impl

SPLITS = {"dev": "valid", "test": "test"}


def classification_loss(model, carry, tokens, lengths, labels, weights):
    """(cross entropy summed over the real rows, their count, no carry)."""
    total, weight = model.loss(tokens, lengths, labels, weights)
    return total, weight, carry


class ClassificationTask(Task):
    """Text classification (the module docstring)."""

    name = "classification"
    best_metric, best_mode = "dev_accuracy", "max"
    modes = tuple(m for m in Task.modes if m != "export") + ("predict",)  # export: LM, MT

    def model_config(self):
        """The validated, frozen model config."""
        return archs.model_config(self.config, "classification")

    def validate(self, num_devices: int, num_processes: int = 1) -> None:
        d, t, e = self.config.data, self.config.train, self.config.eval
        self.model_config()
        require([
            (d.name in NAMES, f"data.name={d.name!r}; expected one of {', '.join(NAMES)} for "
                              "task=classification"),
            (d.name != "tsv" or d.path, "data.name='tsv' needs a folder: set "
                                        "--config.data.path=DIR holding train.tsv"),
            (d.unit in UNITS, f"data.unit={d.unit!r}; expected one of {', '.join(UNITS)} for "
                              "task=classification"),
            (t.batch_tokens >= 1, f"train.batch_tokens={t.batch_tokens}; expected >= 1"),
            (t.max_len >= 2, f"train.max_len={t.max_len}; expected >= 2 tokens (the text "
                             "and its end)"),
            (e.batch_tokens >= 1, f"eval.batch_tokens={e.batch_tokens}; expected >= 1"),
            (not t.init_from or d.unit != "bpe",
             "train.init_from with data.unit='bpe': the language models of this project read "
             "bytes or words; set --config.data.unit=byte (or word)"),
        ])

    def load(self) -> None:
        """Read the data, fill in the labels, num_classes and vocab_size, cut the batches."""
        config = ml_collections.ConfigDict(self.config.to_dict())
        d, m, t = config.data, config.model, config.train
        words = None
        if t.init_from and d.unit == "word":       # the language model's vocabulary
            words = transfer.source_words(t.init_from)
            transfer.resolve(config, transfer.load_source_config(t.init_from))
        self.data = load(d, max_len=t.max_len, words=words)
        labels = tuple(self.data.labels)
        if d.labels and tuple(d.labels) != labels:
            raise ValueError(f"the labels of the data ({', '.join(labels[:8])}) are not the "
                             f"run's recorded data.labels ({', '.join(tuple(d.labels)[:8])}): "
                             "the data changed since training; use the data it was trained on")
        require([
            (len(labels) >= 2, f"the train data hold {len(labels)} label ({labels[0]!r}); a "
                               "classifier needs at least 2"),
            (m.num_classes in (0, len(labels)),
             f"model.num_classes={m.num_classes} but the train data hold {len(labels)} labels; "
             "set --config.model.num_classes=0 to take it from the data"),
            (m.vocab_size == 0 or m.vocab_size >= self.data.vocab_size,
             f"model.vocab_size={m.vocab_size} but the {d.unit} vocabulary has "
             f"{self.data.vocab_size} entries; set --config.model.vocab_size=0"),
        ])
        d.labels, m.num_classes = labels, len(labels)
        m.vocab_size = m.vocab_size or self.data.vocab_size
        self.config = config
        cut = self.data.info["truncated"]
        if any(cut.values()):
            logging.warning("texts longer than train.max_len=%d %ss are cut to it: %s", t.max_len,
                            d.unit, ", ".join(f"{n} in {s}" for s, n in cut.items() if n))
        tokens = self.data.tokens
        self.batches = TrainBatches(self.data.train.ids, None, t.batch_tokens,
                                    max_len=t.max_len, seed=config.seed,
                                    num_devices=jax.device_count(),
                                    num_processes=jax.process_count(),
                                    process_index=jax.process_index(),
                                    pad_id=tokens.pad_id, eos_id=tokens.end_id)

    def build_model(self, rngs, *, measure: bool = False):
        t = self.config.train
        rows = max(1, t.batch_tokens // t.max_len // jax.device_count())
        model_config, reason = measured_impl(self.model_config(), rows, t.max_len,
                                             timed=measure)   # SRU++: "auto" checked, timed
        model = model_config.build(rngs)
        if reason:
            self.setup = {"recurrence": model.backend.value, "recurrence_reason": reason}
        return model

    def batch(self, step: int) -> tuple:
        """(tokens [R, L] int32, lengths [R] int32, labels [R] int32, weights [R] float32);
        filler rows have weight 0."""
        b = self.batches.batch(step)
        real = b.index >= 0
        labels = np.where(real, self.data.train.labels[np.maximum(b.index, 0)], 0)
        return b.src, b.lengths, labels.astype(np.int32), real.astype(np.float32)

    loss = staticmethod(classification_loss)

    def evaluator(self, model, mesh):
        """evaluate(params, rest, split, full=False, desc="", out_dir=None) -> {split_loss,
        split_accuracy, split_macro_f1} (full: and split_classes); out_dir: write the
        predictions and the confusion matrix."""
        predict, config, data = classify.predictor(model), self.config, self.data

        def evaluate(params, rest, split: str, *, full: bool = False, desc: str = "",
                     out_dir: str | None = None) -> dict:
            part = data.split(SPLITS[split])
            from srupp_jax.training import progress
            shown = desc if jax.process_index() == 0 else ""
            bar = lambda batches: progress.bar(batches, shown, total=len(batches),
                                               unit="batch", phase="eval.batch")
            log_probs = predict(params, rest, part.ids, batch_tokens=config.eval.batch_tokens,
                                max_len=config.train.max_len, pad_id=data.tokens.pad_id,
                                eos_id=data.tokens.end_id, bar=bar)
            out = classify.scores(log_probs, part.labels, data.labels, split, classes=full)
            if out_dir and jax.process_index() == 0:
                write_lines(os.path.join(out_dir, f"predictions.{split}.tsv"),
                            classify.prediction_lines(log_probs, data.labels, part.labels))
                matrix = classify.confusion(log_probs.argmax(-1), part.labels, len(data.labels))
                classify.write_confusion_png(
                    os.path.join(out_dir, f"confusion.{split}.png"), matrix, data.labels,
                    f"{split}: accuracy {out[f'{split}_accuracy']:.3f}")
            return out

        return evaluate

    @property
    def tokens_per_step(self) -> int:
        return self.config.train.batch_tokens

    def global_rows(self) -> int:
        t = self.config.train
        return max(1, t.batch_tokens // t.max_len)

    def plan_inputs(self, model, rows: int) -> tuple:
        """(no carry, the batch's shapes at the longest bucket)."""
        length = self.config.train.max_len
        return None, (jax.ShapeDtypeStruct((rows, length), np.int32),
                      jax.ShapeDtypeStruct((rows,), np.int32),
                      jax.ShapeDtypeStruct((rows,), np.int32),
                      jax.ShapeDtypeStruct((rows,), np.float32))

    def flops_per_token(self, model) -> float:
        """Per text token, at the mean train length (with the end id)."""
        return model.config.flops_per_token(float(np.mean(self.data.train.ids.lengths)) + 1)

    def init_params_from(self, params, source):
        """This run's fresh `params` with a language model's embedding and SRU++ stack
        (tasks/transfer.py); ValueError with one line per mismatch."""
        return transfer.init_params(self.config, params, source)

    def smoke_inputs(self):
        """(config with vocab_size (bytes: 256; else model.vocab_size) and num_classes (2
        unless set) known without the data, random texts: tokens [rows, max_len], lengths,
        labels, weights)."""
        c = ml_collections.ConfigDict(self.config.to_dict())
        m, t = c.model, c.train
        if not m.vocab_size and c.data.unit != "byte":
            raise ValueError(f"model.vocab_size=0: --mode=smoke on {c.data.unit}s needs the "
                             "vocabulary's size; set --config.model.vocab_size=N")
        m.vocab_size, m.num_classes = m.vocab_size or 256, m.num_classes or 2
        rows = max(1, t.batch_tokens // t.max_len)
        key = jax.random.PRNGKey(c.seed)
        tokens = jax.random.randint(key, (rows, t.max_len), 0, m.vocab_size)
        lengths = jax.random.randint(jax.random.fold_in(key, 1), (rows,), 1, t.max_len + 1)
        labels = jax.random.randint(jax.random.fold_in(key, 2), (rows,), 0, m.num_classes)
        return c, (tokens, lengths, labels, np.ones(rows, np.float32))
