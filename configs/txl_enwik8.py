"""enwik8, Transformer-XL base (Dai et al. 2019; the paper's Table 1 / Figure 1 baseline).

12 layers, d_model 512, 8 heads of 64, d_inner 2048, dropout 0.1, no attention dropout;
segment (unroll) 512 with 512 tokens of memory in training; 41M parameters (test BPC 1.06 in
the paper's reproduction, 360 GPU hours). Batch 22 x 512 (the reference's run_enwik8_base.sh;
the paper's Table 1 says 24 x 512), 400K steps. The reference trains with Adam, lr 2.5e-4 and
cosine decay; here the project's optimizer (RAdam, decoupled weight decay, clipping 0.25 as
the reference) so that only the model differs from the SRU++ runs. Evaluation: segments of
128 with 3800 tokens of memory and the same-length mask (the reference's eval settings).
"""
from srupp_jax.configs import base


def get_config():
    config = base.get_config()
    m, t, e = config.model, config.train, config.eval
    config.data.name = "enwik8"
    m.arch = "transformer_xl"
    m.d, m.num_layers, m.num_heads = 512, 12, 8
    m.d_head = 64
    m.d_inner = 2048
    m.d_proj = m.d                      # unused by Transformer-XL
    m.dropout, m.attn_dropout = 0.1, 0.0
    m.cutoffs = ()
    t.batch_size, t.unroll = 22, 512
    t.steps, t.lr, t.warmup_steps = 400_000, 2.5e-4, 0
    t.clip_norm = 0.25
    t.compute_dtype = "float32"         # the paper's Table 1 runs use single precision
    t.log_every, t.eval_every, t.checkpoint_every = 200, 4_000, 4_000
    e.batch_size, e.unroll, e.mem_len, e.max_tokens = 1, 128, 3800, 0
    return config
