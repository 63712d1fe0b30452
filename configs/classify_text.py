"""Your own labelled text: a bidirectional SRU++ encoder classifier on a folder of TSV files.

    python main.py --config=configs/classify_text.py --config.data.path=DIR --workdir=runs/mine

DIR holds train.tsv (and optionally valid.tsv, test.tsv; without them 5% of train is split off
for each), one example a line, label<TAB>text, UTF-8; labels are any strings. Text as bytes
(default), words (`--config.data.unit=word`) or BPE (`bpe`, `data.vocab_size` pieces). A
mid-sized model (d = 256, d' = 64, 4 layers, d / 2 per direction) that trains in minutes to
hours on one GPU; texts longer than 512 tokens are cut. `:cpu` is sized for minutes on 2 CPU
cores: configs/classify_default.py's model (d = 64, d' = 16, 4 layers), 2,048 tokens a step,
texts up to 256 tokens, 2,000 steps at lr 3e-3.
"""
from srupp_jax.configs import base


def get_config(variant: str = ""):
    config = base.get_config()
    m, d, t, e = config.model, config.data, config.train, config.eval
    config.task = "classification"
    d.name, d.unit = "tsv", "byte"
    m.arch = "srupp"
    m.d, m.d_proj, m.num_layers = 256, 64, 4
    m.encoder_bidirectional, m.pooling = True, "mean"
    m.dropout = m.attn_dropout = 0.1
    t.batch_tokens, t.max_len = 8192, 512
    t.steps, t.lr, t.warmup_steps = 10_000, 1e-3, 500
    t.log_every, t.eval_every, t.checkpoint_every = 100, 1_000, 1_000
    e.batch_tokens = 16384
    config.cpu_variant = "configs/classify_text.py:cpu"
    if variant == "cpu":
        config.cpu_variant = ""
        m.d, m.d_proj = 64, 16
        t.batch_tokens, t.max_len = 2048, 256
        t.steps, t.lr, t.warmup_steps = 2000, 3e-3, 100
        t.log_every, t.eval_every, t.checkpoint_every = 100, 500, 500
        e.batch_tokens = 8192
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of classify_text.py; expected '' or "
                         "'cpu'")
    return config
