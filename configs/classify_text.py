"""Your own labelled text: a bidirectional SRU++ encoder classifier on a folder of TSV files.

    python main.py --config=configs/classify_text.py --config.data.path=DIR --workdir=runs/mine

DIR holds train.tsv (and optionally valid.tsv, test.tsv; without them 5% of train is split off
for each), one example a line, label<TAB>text, UTF-8; labels are any strings. Text as bytes
(default), words (`--config.data.unit=word`) or BPE (`bpe`, `data.vocab_size` pieces). A
mid-sized model (d = 256, d' = 64, 4 layers, d / 2 per direction) that trains in minutes to
hours on one GPU; texts longer than 512 tokens are cut.
"""
from srupp_jax.configs import base


def get_config():
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
    return config
