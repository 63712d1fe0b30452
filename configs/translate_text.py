"""Your own parallel text: an SRU++ encoder-decoder on a folder of sentence pairs.

    python main.py --config=configs/translate_text.py --config.data.path=DIR \
        --config.data.src=de --config.data.tgt=en --workdir=runs/mine

DIR holds {train,valid,test}.{src,tgt}, one sentence a line, line i of the two sides a pair
(the Moses / fairseq layout); without valid or test files a part of train is split off. The
text is Moses-tokenized (`data.tokenizer = "none"` for text that already is; `data.lowercase`)
and split into 8,000 joint BPE pieces (`data.vocab_size`), cached and keyed by the files'
contents. A mid-sized model (4 + 4 layers, d = 512, d' = 128) that trains in hours on one GPU.
`:cpu` is sized to learn within minutes on 2 CPU cores: 2 + 2 layers, d = 256, d' = 64, 4,000
BPE pieces, 2,048-token batches, lr 2e-3 after 200 warmup steps (README, Results).
"""
from srupp_jax.configs import base


def get_config(variant: str = ""):
    config = base.get_config()
    m, d, t, e = config.model, config.data, config.train, config.eval
    config.task = "translation"
    d.name = "parallel"
    m.arch = "srupp"
    m.d, m.d_proj, m.d_embed = 512, 128, 256
    m.encoder_layers = m.decoder_layers = 4
    m.dropout, m.label_smoothing = 0.1, 0.1
    t.batch_tokens, t.max_len = 4096, 128
    t.steps, t.lr, t.warmup_steps = 20_000, 1e-3, 1_000
    t.clip_norm = 5.0
    t.log_every, t.eval_every, t.checkpoint_every = 100, 1_000, 1_000
    e.batch_tokens, e.max_sentences = 8192, 500
    config.cpu_variant = "configs/translate_text.py:cpu"
    if variant == "cpu":
        config.cpu_variant = ""
        m.d, m.d_proj = 256, 64
        m.encoder_layers = m.decoder_layers = 2
        d.vocab_size = 4_000
        t.batch_tokens, t.steps, t.lr, t.warmup_steps = 2048, 3_000, 2e-3, 200
        t.eval_every, t.checkpoint_every = 500, 500
        e.batch_tokens, e.max_sentences = 4096, 200
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of translate_text.py; expected '' or "
                         "'cpu'")
    return config
