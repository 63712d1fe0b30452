"""enwik8, SRU++ large (paper Table 11, "Large model"): 191M parameters, test BPC 0.963.

d = 4096, d' = 1024 (ratio 4), dropout 0.32, batch 8 x 8 GPUs, lr 4e-4 (2x batch, lr x sqrt 2).
Variant `configs/enwik8_large.py:ratio8` is the d = 8d' column: d = 6016, d' = 752, dropout 0.35
(195M parameters, test BPC 0.953), the architecture of the released `enwik8_large_ratio8.pt`
(194,993,815 parameters with the official vocabulary of 205 byte values).
"""
from srupp_jax.configs import enwik8


def get_config(variant: str = ""):
    config = enwik8.get_config()
    m, t = config.model, config.train
    m.d, m.d_proj = 4096, 1024
    m.dropout = m.attn_dropout = 0.32
    t.batch_size, t.lr = 64, 4e-4
    if variant == "ratio8":
        m.d, m.d_proj = 6016, 752
        m.dropout = m.attn_dropout = 0.35
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of enwik8_large.py; expected '' or 'ratio8'")
    return config
