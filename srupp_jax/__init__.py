"""srupp_jax: SRU++ (Lei 2021, "When Attention Meets Fast Recurrence") in JAX / Flax NNX.

The public surface, for SRU++ as a building block of your own model:

    import srupp_jax
    encoder = srupp_jax.SRUpp(d_in=256, d=512, d_proj=128, num_layers=4, bidirectional=True,
                              rngs=flax.nnx.Rngs(0))         # attention over the whole input
    h, c, memory = encoder(x, mask_pad=padding)               # x [batch, L, 256]

the paper's blocks (`SRUpp`, `SRU`, `SRULayer`, `SRUppAttention`, `sru_recurrence`, adaptive
input and softmax), whole models (`SRUppLM` and its `SRUppConfig`, the baselines, the
encoder-decoders, the text classifiers), decoding (`generate`, `beam_search`, `greedy`) and the PyTorch converters.
Names are imported when first used (importing `srupp_jax` itself loads no JAX). The layers
behind them: ARCHITECTURE.md; the programs (`python main.py`, `srupp`): README.md.
"""
from __future__ import annotations

import importlib

# public name -> the module that defines it
_EXPORTS = {
    # the paper's building blocks (srupp_jax/nn)
    "sru_recurrence": "srupp_jax.nn.recurrence",
    "SRULayer": "srupp_jax.nn.sru",
    "SRU": "srupp_jax.nn.sru",
    "SRUpp": "srupp_jax.nn.sru",
    "SRUppAttention": "srupp_jax.nn.attention",
    "ProjectedLinear": "srupp_jax.nn.attention",
    "attention_mask": "srupp_jax.nn.attention",
    "AdaptiveInput": "srupp_jax.nn.adaptive",
    "AdaptiveSoftmax": "srupp_jax.nn.adaptive",
    # whole models (srupp_jax/models)
    "LMState": "srupp_jax.models.lm",
    "SRUppConfig": "srupp_jax.models.srupp_lm",
    "SRUppLM": "srupp_jax.models.srupp_lm",
    "TransformerXLConfig": "srupp_jax.models.transformer_xl",
    "TransformerXLLM": "srupp_jax.models.transformer_xl",
    "SHARNNConfig": "srupp_jax.models.sha_rnn",
    "SHARNNLM": "srupp_jax.models.sha_rnn",
    "Seq2SeqConfig": "srupp_jax.models.srupp_seq2seq",
    "SRUppSeq2Seq": "srupp_jax.models.srupp_seq2seq",
    "TransformerSeq2SeqConfig": "srupp_jax.models.transformer_seq2seq",
    "TransformerSeq2Seq": "srupp_jax.models.transformer_seq2seq",
    "SRUppClassifierConfig": "srupp_jax.models.srupp_classifier",
    "SRUppClassifier": "srupp_jax.models.srupp_classifier",
    "TransformerClassifierConfig": "srupp_jax.models.transformer_classifier",
    "TransformerClassifier": "srupp_jax.models.transformer_classifier",
    # decoding (srupp_jax/inference)
    "generate": "srupp_jax.inference.generate",
    "sample_logits": "srupp_jax.inference.generate",
    "beam_search": "srupp_jax.inference.decode",
    "greedy": "srupp_jax.inference.decode",
    # PyTorch `sru` modules (srupp_jax/convert)
    "from_torch_srupp": "srupp_jax.convert.torch_sru",
    "from_torch_sru": "srupp_jax.convert.torch_sru",
    "load_torch_srupp": "srupp_jax.convert.torch_sru",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value         # later look-ups skip this function
        return value
    raise AttributeError(f"module 'srupp_jax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
