"""WikiText-103, Transformer-XL base (Dai et al. 2019): 151M parameters, test PPL 24.0.

16 layers, d_model 410, 10 heads of 41, d_inner 2100, dropout 0.1; segment 150 with 150 tokens
of memory in training (evaluation: 64-token segments with 640 of memory, same-length mask);
adaptive input and tied adaptive softmax with cutoffs 20K / 40K / 200K and every cluster
d_model wide (the reference's div_val 1: adaptive_factor 1). Batch 60, 200K steps, lr 2.5e-4
(the reference's Adam; here RAdam as every model of the project).
"""
from srupp_jax.configs import base


def get_config():
    config = base.get_config()
    m, t, e = config.model, config.train, config.eval
    config.data.name = "wikitext103"
    m.arch = "transformer_xl"
    m.vocab_size = 0                    # the prepared vocabulary (267,735 words)
    m.d, m.num_layers, m.num_heads = 410, 16, 10
    m.d_head = 41
    m.d_inner = 2100
    m.d_proj = m.d                      # unused by Transformer-XL
    m.dropout, m.attn_dropout = 0.1, 0.0
    m.cutoffs, m.adaptive_factor = (20_000, 40_000, 200_000), 1.0
    t.batch_size, t.unroll = 60, 150
    t.steps, t.lr, t.warmup_steps = 200_000, 2.5e-4, 0
    t.clip_norm = 0.25
    t.compute_dtype = "float32"
    t.log_every, t.eval_every, t.checkpoint_every = 200, 4_000, 4_000
    e.batch_size, e.unroll, e.mem_len, e.max_tokens = 1, 64, 640, 0
    return config
