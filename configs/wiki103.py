"""WikiText-103, SRU++ base (paper Table 12, "Base model"): 148M parameters, test PPL 18.3.

d = 3072, d' = 768, 10 layers, attention every layer; unroll/attention 768 in training and 2560
at test; batch 8 x 8 GPUs; dropout 0.15; lr 3e-4, 16K warmup, 400K steps, weight decay 0.1.
The architecture of the released `wiki103_base.pt` (147,676,036 parameters, tied matrices
counted once): adaptive input and adaptive softmax of the reference code, cutoffs 19997 /
39997 / 199997, first cluster 1024 wide (d_embed, the reference's n_e), each next 4 times
narrower, tables and projections tied, dropout 0.15 inside them. `model.vocab_size` comes from
the vocabulary built from the train split by the official rule (267,735 words on the standard
files; srupp_jax/data/vocab.py).
"""
from srupp_jax.configs import base


def get_config():
    config = base.get_config()
    m, t, e = config.model, config.train, config.eval
    config.data.name = "wikitext103"
    m.d, m.d_proj, m.num_layers = 3072, 768, 10
    m.dropout = m.attn_dropout = m.emb_dropout = 0.15
    m.cutoffs, m.adaptive_factor, m.d_embed = (19_997, 39_997, 199_997), 4.0, 1024
    t.batch_size, t.unroll = 64, 768
    t.steps, t.lr, t.warmup_steps = 400_000, 3e-4, 16_000
    t.compute_dtype = "bfloat16"
    t.log_every, t.eval_every, t.checkpoint_every = 200, 8_000, 8_000
    e.batch_size, e.unroll, e.mem_len = 1, 2560, 2560
    return config
