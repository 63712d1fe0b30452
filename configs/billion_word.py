"""Billion Word (lm1b), SRU++ base (paper section 5, Table 6): 328M parameters, test PPL 25.1.

d = 4096, d' = 1024, 10 layers; 800K steps at lr 2e-4; about 65K tokens per update
(here 128 streams x 512 tokens); sentences shuffled and joined with <s>. Adaptive input/softmax
with tied weights, cutoffs 60K / 100K / 640K as Baevski & Auli (2019) use for this dataset;
`model.vocab_size` comes from the vocabulary of the train split (793,471 words on TFDS's lm1b).
Variant `:large`: d = 7616, attention in layers 5 and 10 only (k = 5), about 98K tokens per
update (192 x 512) (465M parameters, test PPL 23.5).
"""
from srupp_jax.configs import base


def get_config(variant: str = ""):
    config = base.get_config()
    m, t, e = config.model, config.train, config.eval
    config.data.name = "lm1b"
    m.d, m.d_proj, m.num_layers = 4096, 1024, 10
    m.dropout = m.attn_dropout = 0.1
    m.cutoffs, m.adaptive_factor = (60_000, 100_000, 640_000), 4.0
    t.batch_size, t.unroll = 128, 512
    t.steps, t.lr, t.warmup_steps = 800_000, 2e-4, 16_000
    t.compute_dtype = "bfloat16"
    t.log_every, t.eval_every, t.checkpoint_every = 200, 8_000, 8_000
    e.batch_size, e.unroll, e.mem_len = 1, 512, 512
    if variant == "large":
        m.d, m.k = 7616, 5
        t.batch_size = 192
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of billion_word.py; expected '' or 'large'")
    return config
