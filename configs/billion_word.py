"""Billion Word (lm1b), SRU++ base (paper section 5, Table 6): 328M parameters, test PPL 25.1.

d = 4096, d' = 1024, 10 layers; 800K steps at lr 2e-4; about 65K tokens per update
(here 128 streams x 512 tokens); sentences joined with <S>. The architecture of the released
`lm1b_base.pt` (328,313,803 parameters, tied tables counted once): the reference code's
adaptive input/softmax, cutoffs 59998 / 159998, first cluster 1024 wide, factor 4, tables tied
and projections not; `model.vocab_size` from the vocabulary file 1b_word_vocab.txt (793,471
words; srupp_jax/data/vocab.py). Dropout 0.05, none on attention or inside the adaptive layers
(the reference's defaults); evaluation in windows of 96 tokens (its README). Variant `:large`:
d = 7616, attention in layers 5 and 10 only (k = 5), dropout 0.1, about 98K tokens per update
(192 x 512): the released `lm1b_large_10l_k5.pt` (465,318,339 parameters, test PPL 23.5).
"""
from srupp_jax.configs import base


def get_config(variant: str = ""):
    config = base.get_config()
    m, t, e = config.model, config.train, config.eval
    config.data.name = "lm1b"
    m.d, m.d_proj, m.num_layers = 4096, 1024, 10
    m.dropout, m.attn_dropout, m.emb_dropout = 0.05, 0.0, 0.0
    m.cutoffs, m.adaptive_factor, m.d_embed = (59_998, 159_998), 4.0, 1024
    m.tie_proj = False
    t.batch_size, t.unroll = 128, 512
    t.steps, t.lr, t.warmup_steps = 800_000, 2e-4, 16_000
    t.compute_dtype = "bfloat16"
    t.log_every, t.eval_every, t.checkpoint_every = 200, 8_000, 8_000
    e.batch_size, e.unroll, e.mem_len, e.whole_windows = 1, 96, 96, True
    if variant == "large":
        m.d, m.k, m.dropout = 7616, 5, 0.1
        t.batch_size = 192
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of billion_word.py; expected '' or 'large'")
    return config
