"""Your own text: a byte-level SRU++ LM (or word-level with `--config.data.unit=word`).

  python main.py --config=configs/text.py --config.data.path=my.txt --workdir=runs/my

`data.path` is a UTF-8 text file or a folder of `.txt` files (read in sorted order); it is split
90/5/5 contiguously (bytes, or lines for words) unless `data.valid_path` and `data.test_path`
name separate files. Word level splits lines on whitespace, ends each line with `<eos>`, builds
the vocabulary from the train part, and uses adaptive input and a tied adaptive softmax with
cutoffs at 1/20 and 1/4 of the vocabulary (none for a vocabulary under 100 words). Tokens are
cached like every dataset's, keyed by the files' contents.

A small model (6 layers, d = 512, d' = 128, attention every layer) that trains in hours on one
GPU. `:cpu` (`--config=configs/text.py:cpu`) is sized to learn within minutes on 2 CPU cores:
4 layers, d = 128, d' = 32, 16 x 128 tokens a step, 3,000 steps at lr 3e-3 (README, Results).
"""
from srupp_jax.configs import base


def get_config(variant: str = ""):
    config = base.get_config()
    m, t, e = config.model, config.train, config.eval
    config.data.name = "text"
    config.data.unit = "byte"
    m.d, m.d_proj, m.num_layers = 512, 128, 6
    m.dropout = m.attn_dropout = 0.1
    m.cutoff_fractions = (0.05, 0.25)   # word level: cutoffs at V/20 and V/4 (V >= 100)
    t.batch_size, t.unroll = 16, 256
    t.steps, t.lr, t.warmup_steps = 20_000, 1e-3, 1_000
    t.log_every, t.eval_every, t.checkpoint_every = 100, 1_000, 1_000
    e.batch_size, e.unroll, e.mem_len = 4, 256, 256
    config.cpu_variant = "configs/text.py:cpu"
    if variant == "cpu":
        config.cpu_variant = ""
        m.d, m.d_proj, m.num_layers = 128, 32, 4
        t.batch_size, t.unroll = 16, 128
        t.steps, t.lr, t.warmup_steps = 3_000, 3e-3, 200
        t.log_every, t.eval_every, t.checkpoint_every = 100, 500, 500
        e.unroll, e.mem_len, e.max_tokens = 128, 128, 100_000
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of text.py; expected '' or 'cpu'")
    return config
