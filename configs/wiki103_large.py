"""WikiText-103, SRU++ large (paper Table 12): 232M parameters, test PPL 17.4.

d = 4096, d' = 1024, unroll/attention 1024 in training, dropout 0.2 (also inside the adaptive
layers and of the attention weights, the reference's README command). Variants, the
architectures of the released files (tied matrices counted once):
`:ratio8`    d = 8d': d = 5952, d' = 744 (`wiki103_large_ratio8.pt`, 233,741,476 parameters,
             test PPL 17.1);
`:ratio8_k5` the same with attention in layers 5 and 10 only (`wiki103_large_ratio8_k5.pt`,
             224,884,892 parameters, test PPL 17.3).
"""
from srupp_jax.configs import wiki103


def get_config(variant: str = ""):
    config = wiki103.get_config()
    m, t = config.model, config.train
    m.d, m.d_proj = 4096, 1024
    m.dropout = m.attn_dropout = m.emb_dropout = 0.2
    t.unroll = 1024
    if variant in ("ratio8", "ratio8_k5"):
        m.d, m.d_proj = 5952, 744
        m.k = 5 if variant == "ratio8_k5" else 1
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of wiki103_large.py; expected '', "
                         "'ratio8' or 'ratio8_k5'")
    return config
