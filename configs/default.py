"""Tiny SRU++ character LM on the embedded corpus: the quick-start config (minutes on 2 CPUs).

The architecture of the paper's enwik8 model (Table 11) at toy size: 4 layers, d = 64,
d' = d / 4 = 16, attention in every layer, unroll M = 64 with M tokens of attention memory,
trained on the Python standard library's own source code (bytes, the first 4 MB), which every
machine has. Starts from `base.py`, like every paper config.
"""
from srupp_jax.configs import base


def get_config():
    config = base.get_config()
    m, t, e = config.model, config.train, config.eval
    config.data.name = "default"
    config.data.max_bytes = 4_000_000  # the first 4 MB of the embedded corpus
    m.d, m.d_proj, m.num_layers = 64, 16, 4
    m.dropout = m.attn_dropout = 0.1
    t.batch_size, t.unroll = 16, 64
    t.steps, t.lr, t.warmup_steps = 2000, 3e-3, 100  # the paper's 3e-4 is for 400K steps
    t.log_every, t.eval_every, t.checkpoint_every = 100, 500, 500
    e.batch_size, e.unroll, e.mem_len = 4, 128, 128
    e.max_tokens = 100_000              # dev evaluations during training see a 100K slice
    return config
