"""IWSLT'14 De->En, the SRU++ encoder-decoder of the paper's Table 8 (section 6, appendix B).

6 + 6 SRU++ layers of d = 1024, d' = 256, attention in every layer (`:k2`: every second
layer, Table 8's SRU++ (k=2)), a shared 256-wide embedding of the joint BPE projected to d and
a tied output layer; each decoder attention layer attends to the encoder output and the
targets so far (Q = W_q [X_src, X_tgt]). Data: `data.recipe = "lin2020"`, the recipe of
Lin et al. 2020 that Table 8 follows (a random 4% of train as valid, TED dev2010 + tst2010-2012
as test, lower-cased, joint BPE of 14,000 merges), prepared once:

    python -m srupp_jax.data.prepare --dataset=iwslt14_de_en --manual_dir=DIR   # de-en.tgz
    python main.py --config=configs/iwslt14.py --workdir=runs/iwslt14

Training as Lin et al.'s teacher.yaml except what the paper changes: RAdam (0.9, 0.999)
instead of Adam, weight decay 0.1, 50 epochs (64K steps); kept: the Noam schedule (peak 1e-3
after 10K warmup steps, then 1/sqrt(step)), gradient clipping at 5, batches of about 128
sentences (here 4,096 padded tokens of one length bucket), pairs up to 125 subwords, plain
cross entropy (their loss: no label smoothing). Test BLEU with beam 5 and no length penalty.
"""
from srupp_jax.configs import base


def get_config(variant: str = ""):
    config = base.get_config()
    m, d, t, e = config.model, config.data, config.train, config.eval
    config.task = "translation"
    d.name, d.recipe = "iwslt14_de_en", "lin2020"
    m.arch = "srupp"
    m.d, m.d_proj, m.d_embed = 1024, 256, 256
    m.encoder_layers = m.decoder_layers = 6
    m.k = 1
    m.dropout, m.attn_dropout = 0.1, 0.0
    m.label_smoothing = 0.0
    t.batch_tokens, t.max_len = 4096, 126
    t.steps, t.lr, t.warmup_steps, t.schedule = 64_000, 1e-3, 10_000, "rsqrt"
    t.weight_decay, t.clip_norm = 0.1, 5.0
    t.compute_dtype = "bfloat16"
    t.log_every, t.eval_every, t.checkpoint_every = 100, 1_250, 1_250   # ~an epoch
    e.batch_tokens, e.max_sentences = 8192, 1_000
    config.decode.beam_size, config.decode.length_penalty = 5, 0.0
    if variant == "k2":
        m.k = 2
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of iwslt14.py; expected '' or 'k2'")
    return config
