"""enwik8, SRU++ base (paper Table 11, "Base model"): 108M parameters, test BPC 0.974.

d = 3072, d' = 768 (ratio 4), 10 layers, attention in every layer; unroll/attention 1024 in
training and 3072 at test; batch 4 x 8 GPUs; dropout 0.22; RAdam lr 3e-4, 16K warmup, 400K
steps, weight decay 0.1, clipping 1.0. The architecture of the released `enwik8_base.pt`
(107,566,295 parameters with the official vocabulary of 205 byte values; srupp_jax/data/
vocab.py). Variant `configs/enwik8.py:k5` is the "Base model (k=5)" column (attention in layers
5 and 10; 98M parameters, test BPC 0.980; not released).
"""
from srupp_jax.configs import base


def get_config(variant: str = ""):
    config = base.get_config()
    m, t, e = config.model, config.train, config.eval
    config.data.name = "enwik8"
    m.d, m.d_proj, m.num_layers = 3072, 768, 10
    m.dropout = m.attn_dropout = 0.22
    t.batch_size, t.unroll = 32, 1024              # 4 per GPU x 8 GPUs
    t.steps, t.lr, t.warmup_steps = 400_000, 3e-4, 16_000
    t.compute_dtype = "bfloat16"                   # the paper trains with mixed precision
    t.log_every, t.eval_every, t.checkpoint_every = 200, 8_000, 8_000
    e.batch_size, e.unroll, e.mem_len = 1, 3072, 3072
    if variant == "k5":
        m.k = 5
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of enwik8.py; expected '' or 'k5'")
    return config
