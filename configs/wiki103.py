"""WikiText-103, SRU++ base (paper Table 12, "Base model"): 148M parameters, test PPL 18.3.

d = 3072, d' = 768, 10 layers, attention every layer; unroll/attention 768 in training and 2560
at test; batch 8 x 8 GPUs; dropout 0.15; lr 3e-4, 16K warmup, 400K steps, weight decay 0.1.
Adaptive input and adaptive softmax with tied weights, cutoffs 20K / 60K and factor 4 as in
Baevski & Auli (2019). `model.vocab_size` comes from the vocabulary built from the train split
(267,735 words with <eos> on the standard files).
"""
from srupp_jax.configs import base


def get_config():
    config = base.get_config()
    m, t, e = config.model, config.train, config.eval
    config.data.name = "wikitext103"
    m.d, m.d_proj, m.num_layers = 3072, 768, 10
    m.dropout = m.attn_dropout = 0.15
    m.cutoffs, m.adaptive_factor = (20_000, 60_000), 4.0
    t.batch_size, t.unroll = 64, 768
    t.steps, t.lr, t.warmup_steps = 400_000, 3e-4, 16_000
    t.compute_dtype = "bfloat16"
    t.log_every, t.eval_every, t.checkpoint_every = 200, 8_000, 8_000
    e.batch_size, e.unroll, e.mem_len = 1, 2560, 2560
    return config
