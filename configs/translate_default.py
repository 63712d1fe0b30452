"""Translation on any machine, no download: German number words to English (numbers_de_en).

    python main.py --config=configs/translate_default.py --workdir=/tmp/srupp_translate

The data are generated with num2words: cardinals, ordinals, years, dates with weekdays and
months, and counts of things ("am Dienstag, dem dritten März" -> "on Tuesday, the third of
March"; "dreiundzwanzig Katzen" -> "twenty-three cats"), with train, valid and test using
disjoint numbers, so a model must translate numbers it never saw. A small SRU++
encoder-decoder (2 + 2 layers, d = 128, d' = 32) trained for minutes on 2 CPU cores; test BLEU
with beam 5 (README, Results).
"""
from srupp_jax.configs import base


def get_config():
    config = base.get_config()
    m, d, t, e = config.model, config.data, config.train, config.eval
    config.task = "translation"
    d.name = "numbers_de_en"
    m.arch = "srupp"
    m.d, m.d_proj, m.d_embed = 128, 32, 64
    m.encoder_layers = m.decoder_layers = 2
    m.dropout, m.label_smoothing = 0.1, 0.1
    t.batch_tokens, t.max_len = 2048, 32
    t.steps, t.lr, t.warmup_steps = 3_000, 3e-3, 200
    t.log_every, t.eval_every, t.checkpoint_every = 100, 1_000, 1_000
    e.batch_tokens, e.max_sentences = 4096, 200
    return config
