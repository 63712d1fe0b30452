"""The compute-efficiency study (paper Figures 1 and 3, Tables 1 and 2) on enwik8.

`python -m srupp_jax.study --config=configs/study_enwik8.py --budget=8h --workdir=DIR` trains
every run of `study.order` for the same training time on the same device and data, one after
another, and writes the table and the dev BPC-against-hours figure.

Shared settings (the paper's Table 1 comparison: "the same setting as Transformer-XL base"):
B x M = 24 x 512 with 512 tokens of memory, lr 2.5e-4 (RAdam, cosine over 400K steps, 2K
warmup), dropout 0.1, float32 (Figure 1 is single precision); dev BPC with 512-token
segments and 512 of memory (Figure 3: attention length = M) on the first 1M dev bytes.

Runs at (near) equal size where the paper compares at equal size: the SRU++ rows at ~42M
(Table 2 adjusts the hidden size so that k changes nothing else), SRU without attention at
43M, Transformer-XL base at 41M (Table 1), SHA-RNN at the article's 54M (Table 2 row).
Variant `study_enwik8.py:cpu`: the same seven runs at toy width (~0.1M parameters each) on
the embedded corpus, for CPUs and tests.
"""
import ml_collections

from srupp_jax.configs import base

# name -> (label, paper row, model overrides)
RUNS = {
    "srupp_k1": ("SRU++ k=1", "Table 2: 42M, 1.022",
                 dict(arch="srupp", d=1920, d_proj=480, num_layers=10, k=1)),
    "srupp_k5": ("SRU++ k=5", "Table 2: 42M, 1.032",
                 dict(arch="srupp", d=2016, d_proj=504, num_layers=10, k=5)),
    "srupp_k10": ("SRU++ k=10", "Table 2: 42M, 1.033",
                  dict(arch="srupp", d=2016, d_proj=504, num_layers=10, k=10)),
    "srupp_ratio8": ("SRU++ d=8d'", "Table 4 (ratio 8)",
                     dict(arch="srupp", d=2784, d_proj=348, num_layers=10, k=1)),
    "sru": ("SRU (no attention)", "Table 2: 1.190",
            dict(arch="srupp", d=2048, d_proj=512, num_layers=10, k=1, attention_last_n=0)),
    "transformer_xl": ("Transformer-XL", "Table 1: 41M, 1.06",
                       dict(arch="transformer_xl", d=512, num_layers=12, num_heads=8,
                            d_head=64, d_inner=2048, d_proj=512, attn_dropout=0.0)),
    "sha_rnn": ("SHA-RNN", "Table 2: 54M, 1.07",
                dict(arch="sha_rnn", d=1024, num_layers=4, d_inner=4096,
                     attention_layers=(3,), d_proj=1024, num_heads=1)),
}

# The same runs at toy width (~0.1M parameters each) for CPUs.
CPU_MODELS = {
    "srupp_k1": dict(d=64, d_proj=16, num_layers=10),
    "srupp_k5": dict(d=64, d_proj=16, num_layers=10),
    "srupp_k10": dict(d=64, d_proj=16, num_layers=10),
    "srupp_ratio8": dict(d=88, d_proj=11, num_layers=10),
    "sru": dict(d=64, d_proj=16, num_layers=10),
    "transformer_xl": dict(d=48, num_layers=4, num_heads=4, d_head=12, d_inner=128,
                           d_proj=48),
    "sha_rnn": dict(d=40, num_layers=4, d_inner=160, d_proj=40),
}


def get_config(variant: str = ""):
    config = base.get_config()
    m, t, e = config.model, config.train, config.eval
    config.data.name = "enwik8"
    m.vocab_size = 256
    m.cutoffs = ()
    m.dropout = m.attn_dropout = 0.1
    t.batch_size, t.unroll = 24, 512
    t.steps, t.lr, t.warmup_steps = 400_000, 2.5e-4, 2_000
    t.compute_dtype = "float32"
    t.log_every, t.checkpoint_every = 200, 2_000
    t.eval_every = 10 ** 9              # dev evaluations at the study's time marks only
    e.batch_size, e.unroll, e.mem_len, e.max_tokens = 8, 512, 512, 1_000_000
    e.same_length = False

    config.study = ml_collections.ConfigDict()
    config.study.order = tuple(RUNS)    # which runs, in this order
    config.study.metric = "dev_bpc"     # the dev metric the study compares (lower is better)
    config.study.marks = 8              # dev evaluations at budget * i / marks, i = 1..marks
    config.study.runs = ml_collections.ConfigDict()
    for name, (label, paper, model) in RUNS.items():
        config.study.runs[name] = ml_collections.ConfigDict(
            dict(label=label, paper=paper, model=dict(model)))

    if variant == "cpu":
        config.data.name, config.data.max_bytes = "default", 4_000_000
        t.batch_size, t.unroll = 8, 64
        t.steps, t.lr, t.warmup_steps = 20_000, 3e-3, 50
        t.log_every, t.checkpoint_every = 20, 200
        e.batch_size, e.unroll, e.mem_len, e.max_tokens = 8, 64, 64, 100_000
        config.study.marks = 4
        for name, sizes in CPU_MODELS.items():
            config.study.runs[name].model.update(sizes)
            config.study.runs[name].paper = "toy size: " + config.study.runs[name].paper
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of study_enwik8.py; expected '' or "
                         "'cpu'")
    return config
