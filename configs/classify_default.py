"""Text classification on any machine, no download: which standard-library package is a line
of Python from? (`data.name = "stdlib_lines"`, srupp_jax/data/stdlib_lines.py.)

    python main.py --config=configs/classify_default.py --workdir=/tmp/srupp_classify

Nine packages (http, importlib, logging, multiprocessing, unittest, urllib, wsgiref, xml,
xmlrpc), about 21,600 train lines, 1,000 dev and 2,000 test, as bytes. A bidirectional SRU++
encoder of the quick-start LM's size (configs/default.py: d = 64, d' = 16, 4 layers, attention
in every layer; here d / 2 = 32 per direction) with mean pooling, trained for minutes on 2 CPU
cores; test accuracy in the README.

Variants, for the README's comparisons at the same budget:
  :transformer  the Transformer encoder baseline at about the same number of parameters;
  :from_lm      the shape of configs/default.py's language model (a forward stack, causal
                attention), to start from it: --config.train.init_from=LM_WORKDIR.
"""
from srupp_jax.configs import base


def get_config(variant: str = ""):
    config = base.get_config()
    m, d, t, e = config.model, config.data, config.train, config.eval
    config.task = "classification"
    d.name, d.unit = "stdlib_lines", "byte"
    m.arch = "srupp"
    m.d, m.d_proj, m.num_layers = 64, 16, 4
    m.encoder_bidirectional, m.pooling = True, "mean"
    m.dropout = m.attn_dropout = 0.1
    t.batch_tokens, t.max_len = 2048, 128
    t.steps, t.lr, t.warmup_steps = 2000, 3e-3, 100
    t.log_every, t.eval_every, t.checkpoint_every = 100, 500, 500
    e.batch_tokens = 8192
    if variant == "transformer":
        m.arch = "transformer"
        m.d, m.num_heads, m.d_inner, m.num_layers = 32, 4, 80, 3
    elif variant == "from_lm":
        m.encoder_bidirectional = False
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of classify_default.py; expected '', "
                         "'transformer' or 'from_lm'")
    return config
