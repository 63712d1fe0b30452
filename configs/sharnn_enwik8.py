"""enwik8, SHA-RNN (Merity 2019) at the article's size: 54M parameters, test BPC 1.068.

Four blocks of LSTM 1024 -> Boom (1024 -> 4096, summed back to 1024), the single attention
head in the penultimate block as in the released code (`use_attn` for idx == nlayers - 2),
dropout 0.1 everywhere, output tied to the embedding. Segments of 1024 bytes with 1024 of
attention memory (the released code keeps up to 5000 positions), batch 16. The released code
trains with LAMB, lr 2e-3, ~32 epochs; here the project's RAdam schedule so that only the
model differs from the SRU++ runs (the lr is the one setting kept from the article). bf16
compute as the SRU++ configs (the article trains in fp16).

Variant `sharnn_enwik8.py:sru`: the plain-SRU baseline (SRU++ without attention, Table 2).
"""
from srupp_jax.configs import base


def get_config(variant: str = ""):
    config = base.get_config()
    m, t, e = config.model, config.train, config.eval
    config.data.name = "enwik8"
    m.arch = "sha_rnn"
    m.d, m.num_layers, m.d_inner = 1024, 4, 4096
    m.attention_layers = (3,)           # 1-based: the penultimate block
    m.d_proj, m.num_heads = m.d, 1      # unused by SHA-RNN
    m.dropout, m.attn_dropout = 0.1, 0.1
    m.cutoffs = ()
    t.batch_size, t.unroll = 16, 1024
    t.steps, t.lr, t.warmup_steps = 200_000, 2e-3, 800
    t.compute_dtype = "bfloat16"
    t.log_every, t.eval_every, t.checkpoint_every = 200, 4_000, 4_000
    e.batch_size, e.unroll, e.mem_len, e.max_tokens = 1, 1024, 1024, 0
    if variant == "sru":
        # The plain-SRU baseline of the paper's Table 2 ("No attention", 1.190 BPC): SRU++
        # with no attention layer (every layer the projected transform of Figure 2b), 10
        # layers, d = 2048, d' = 512: 43M parameters, comparable to the 42M SRU++ models.
        m.arch = "srupp"
        m.d, m.d_proj, m.num_layers, m.attention_last_n = 2048, 512, 10, 0
        t.lr = 3e-4
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of sharnn_enwik8.py; expected '' or "
                         "'sru'")
    return config
