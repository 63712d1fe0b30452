"""The translation task (paper section 6, appendix B, Table 8): an encoder-decoder on sentence
pairs, the same trainer, checkpoints and metrics as the language models.

Data (`data.name`): numbers_de_en (German number words -> English, generated, offline),
iwslt14_de_en (prepared once from the IWSLT'14 release; `data.recipe` lin2020 | fairseq) or
parallel (your folder of {train,valid,test}.{src,tgt}), with one joint BPE
(srupp_jax/data/translation_data.py). Training batches hold about `train.batch_tokens` padded
tokens of one length bucket each (data/batches.py), a pure function of the step; there is no
carry. The loss is the label-smoothed cross entropy (`model.label_smoothing`) summed over the
real target tokens, the weight their count, so the step averages over real tokens only.

Evaluation of a split: its loss (the plain nll per target token) and perplexity, then the
sources translated with `config.decode` (beam search) and scored: `*_bleu` (sacreBLEU on
detokenized text, its signature logged), `*_bleu_tok` (BLEU on the tokenized, lower-cased,
BPE-merged text, comparable to Table 8) and `*_chrf`. During training dev BLEU uses the first
`eval.max_sentences` pairs; `--mode=eval` uses every pair and writes the hypotheses to
WORKDIR/hypotheses.{dev,test}.txt. The best checkpoint is the highest dev BLEU
(`eval.best = "bleu"`) or the lowest dev loss ("loss").
"""
from __future__ import annotations

import math
import os

import jax
import numpy as np
from absl import logging
from flax import nnx

from srupp_jax.data.batches import TrainBatches, eval_batches
from srupp_jax.data.lines import write_lines
from srupp_jax.data.subwords import BOS_ID, EOS_ID, PAD_ID
from srupp_jax.data.translation_data import NAMES, from_config
from srupp_jax.errors import require
from srupp_jax.inference import bleu, translate
from srupp_jax.models import archs
from srupp_jax.models.base import split_for_eval
from srupp_jax.tasks.base import Task, measured_impl

SPLITS = {"dev": "valid", "test": "test"}


def translation_loss(model, carry, src, tgt_in, tgt_out):
    """(label-smoothed loss summed over the real targets, their count, no carry)."""
    smoothed, _, weight = model.loss(src, tgt_in, tgt_out)
    return smoothed, weight, carry


class TranslationTask(Task):
    """Translation with an SRU++ (or Transformer) encoder-decoder (the module docstring)."""

    name = "translation"
    modes = Task.modes + ("translate",)

    def __init__(self, config):
        super().__init__(config)
        self.best_metric = "dev_bleu" if config.eval.best == "bleu" else "dev_loss"
        self.best_mode = "max" if self.best_metric == "dev_bleu" else "min"

    def model_config(self):
        """The validated, frozen model config (the data's special ids)."""
        cls = archs.config_class("translation", self.arch)
        return cls.from_config(self.config, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID)

    def validate(self, num_devices: int, num_processes: int = 1) -> None:
        d, t, e, dec = self.config.data, self.config.train, self.config.eval, self.config.decode
        self.model_config()
        require([
            (d.name in NAMES, f"data.name={d.name!r}; expected one of {', '.join(NAMES)} for "
                              "task=translation"),
            (d.name != "parallel" or (d.path and d.src and d.tgt),
             "data.name='parallel' needs a folder and the languages: set --config.data.path="
             "DIR --config.data.src=de --config.data.tgt=en"),
            (t.batch_tokens >= 1, f"train.batch_tokens={t.batch_tokens}; expected >= 1"),
            (t.max_len >= 8, f"train.max_len={t.max_len}; expected >= 8 subwords"),
            (e.batch_tokens >= 1, f"eval.batch_tokens={e.batch_tokens}; expected >= 1"),
            (e.best in ("bleu", "loss"),
             f"eval.best={e.best!r}; expected 'bleu' or 'loss'"),
            (isinstance(dec.beam_size, int) and dec.beam_size >= 1,
             f"decode.beam_size={dec.beam_size!r}; expected an integer >= 1 (1 = greedy)"),
            (dec.length_penalty >= 0,
             f"decode.length_penalty={dec.length_penalty}; expected >= 0 (0 = none)"),
            (dec.max_len_a >= 0 and dec.max_len_b >= 1,
             f"decode.max_len_a={dec.max_len_a}, decode.max_len_b={dec.max_len_b}; expected "
             ">= 0 and >= 1 (at most a * source length + b subwords)"),
        ])

    def load(self) -> None:
        """Read (or build) the data and the BPE, fill in model.vocab_size, cut the batches."""
        import ml_collections
        self.data = from_config(self.config.data)
        config = ml_collections.ConfigDict(self.config.to_dict())
        m, size = config.model, self.data.vocab_size
        if m.vocab_size and m.vocab_size < size:
            raise ValueError(f"model.vocab_size={m.vocab_size} but the {self.data.name} "
                             f"subwords have {size} pieces; set --config.model.vocab_size=0 "
                             "to take it from the data")
        m.vocab_size = m.vocab_size or size
        self.config = config
        if not self.data.info.get("standard_source", True):
            self.marks = {"standard_data": 0}
        t = config.train
        self.batches = TrainBatches(self.data.train.src, self.data.train.tgt, t.batch_tokens,
                                    max_len=t.max_len, seed=config.seed,
                                    num_devices=jax.device_count(),
                                    num_processes=jax.process_count(),
                                    process_index=jax.process_index())
        if self.batches.dropped:
            logging.warning("%d training pairs are longer than train.max_len=%d subwords and "
                            "are left out", self.batches.dropped, t.max_len)

    def build_model(self, rngs, *, measure: bool = False):
        if self.config.model.vocab_size < 1:
            raise ValueError("model.vocab_size=0: read the data first (task.load)")
        t = self.config.train
        rows = max(1, t.batch_tokens // t.max_len // jax.device_count())
        model_config, reason = measured_impl(self.model_config(), rows, t.max_len,
                                             timed=measure)   # SRU++: "auto" checked, timed
        model = model_config.build(rngs)
        if reason:
            self.setup = {"recurrence": model.backend.value, "recurrence_reason": reason}
        return model

    def batch(self, step: int) -> tuple:
        """(src, tgt_in, tgt_out) [rows, L] int32; filler rows' targets are padding."""
        b = self.batches.batch(step)
        return b.src, b.tgt_in, np.where(b.weights > 0, b.tgt_out, PAD_ID).astype(np.int32)

    loss = staticmethod(translation_loss)

    def evaluator(self, model, mesh):
        """evaluate(params, rest, split, full=False, desc="", out_dir=None) -> {split_loss,
        split_ppl, split_bleu, split_bleu_tok, split_chrf}; out_dir: write the hypotheses."""
        graphdef, _, _ = split_for_eval(model)
        config, data = self.config, self.data

        @jax.jit
        def sums(params, rest, src, tgt_in, tgt_out):
            return nnx.merge(graphdef, params, rest).loss(src, tgt_in, tgt_out)[1:]

        def evaluate(params, rest, split: str, *, full: bool = False, desc: str = "",
                     out_dir: str | None = None) -> dict:
            pairs = data.split(SPLITS[split])
            nll = weight = 0.0
            for b in eval_batches(pairs.src, pairs.tgt, config.eval.batch_tokens,
                                  max_len=config.train.max_len):
                tgt_out = np.where(b.weights > 0, b.tgt_out, PAD_ID).astype(np.int32)
                s, w = sums(params, rest, b.src, b.tgt_in, tgt_out)
                nll, weight = nll + float(s), weight + float(w)
            out = {f"{split}_loss": nll / weight, f"{split}_ppl": math.exp(min(nll / weight, 700))}
            if not full and self.best_metric == "dev_loss":
                return out                       # no decoding during training
            pairs = pairs if full else pairs.head(config.eval.max_sentences)
            hyps = translate.translate_ids(nnx.merge(graphdef, params, rest), pairs.src, config,
                                           desc=desc)
            words = data.subwords
            text = words.detokenize(hyps)
            scores = bleu.scores(text, pairs.tgt_raw, words.decode(hyps), pairs.tgt_text,
                                 lowercase=data.info["lowercase"])
            if full:
                logging.info("%s: sacreBLEU %s", split, scores["signatures"])
            if out_dir and jax.process_index() == 0:
                write_lines(os.path.join(out_dir, f"hypotheses.{split}.txt"), text)
            out.update({f"{split}_{k}": scores[k] for k in ("bleu", "bleu_tok", "chrf")})
            return out

        return evaluate

    @property
    def tokens_per_step(self) -> int:
        return self.config.train.batch_tokens

    def global_rows(self) -> int:
        t = self.config.train
        return max(1, t.batch_tokens // t.max_len)

    def plan_inputs(self, model, rows: int) -> tuple:
        return None, (jax.ShapeDtypeStruct((rows, self.config.train.max_len), np.int32),) * 3

    def flops_per_token(self, model) -> float:
        """Per target token, at the mean train lengths (with EOS)."""
        train = self.data.train
        return model.config.flops_per_token(float(np.mean(train.src.lengths)) + 1,
                                            float(np.mean(train.tgt.lengths)) + 1)

    def smoke_inputs(self):
        """(config with vocab_size known, random sentence pairs src, tgt_in, tgt_out [rows,
        max_len]); the number task is generated offline, other data must be prepared (or
        model.vocab_size given)."""
        if self.config.model.vocab_size == 0:   # numbers_de_en is generated offline
            try:
                self.load()
            except FileNotFoundError as e:
                from srupp_jax.errors import one_line
                raise FileNotFoundError(f"{one_line(e)}; or, for --mode=smoke, set "
                                        "--config.model.vocab_size=N") from None
        c = self.config
        rows, length = max(1, c.train.batch_tokens // c.train.max_len), c.train.max_len
        tokens = jax.random.randint(jax.random.PRNGKey(c.seed), (3, rows, length), 4,
                                    c.model.vocab_size)
        return c, tuple(tokens)
