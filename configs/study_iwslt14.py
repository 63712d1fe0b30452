"""The translation comparison of Table 8: dev BLEU against training time, SRU++, SRU++ (k=2)
and the Transformer at equal time on the same data.

    python -m srupp_jax.data.prepare --dataset=iwslt14_de_en --manual_dir=DIR    # once
    python -m srupp_jax.study --config=study_iwslt14 --budget=8h --workdir=runs/study_iwslt14
    python -m srupp_jax.study --config=study_iwslt14:cpu --budget=2m --workdir=/tmp/study_mt

Each run is its Table 8 config (configs/iwslt14.py, :k2, configs/iwslt14_transformer.py): the
same data, batches and schedule, weight decay 0.1 for SRU++ and 0 for the Transformer; dev
BLEU (beam 5) on the first 1,000 dev pairs at `study.marks` evenly spaced training times.
Variant `:cpu`: the same three runs at toy width on the offline number task (numbers_de_en,
configs/translate_default.py), for CPUs and tests.
"""
import ml_collections

from srupp_jax.configs import iwslt14, translate_default

RUNS = {
    "srupp": ("SRU++", "Table 8: 20.4M, 36.3 BLEU, 8.5 h", dict(arch="srupp", k=1), {}),
    "srupp_k2": ("SRU++ (k=2)", "Table 8: 19.6M, 36.1 BLEU, 7.5 h", dict(arch="srupp", k=2), {}),
    "transformer": ("Transformer", "Table 8: 20.1M, 35.9 BLEU, 10.5 h",
                    dict(arch="transformer", d=256, num_heads=4, d_inner=1024,
                         encoder_layers=8, decoder_layers=8, dropout=0.1, attn_dropout=0.1),
                    dict(weight_decay=0.0)),
}
CPU_MODELS = {
    "transformer": dict(d=64, num_heads=4, d_inner=128, encoder_layers=2, decoder_layers=2),
}


def get_config(variant: str = ""):
    config = translate_default.get_config() if variant == "cpu" else iwslt14.get_config()
    t = config.train
    t.eval_every = 10 ** 9              # dev evaluations at the study's time marks only
    config.study = ml_collections.ConfigDict()
    config.study.metric = "dev_bleu"
    config.study.order = tuple(RUNS)
    config.study.marks = 8
    config.study.runs = ml_collections.ConfigDict()
    for name, (label, paper, model, train) in RUNS.items():
        config.study.runs[name] = ml_collections.ConfigDict(
            dict(label=label, paper=paper, model=dict(model), train=dict(train)))
    if variant == "cpu":
        t.steps = 20_000
        config.study.marks = 4
        for name, sizes in CPU_MODELS.items():
            config.study.runs[name].model.update(sizes)
        for run in config.study.runs.values():
            run.paper = "toy size: " + run.paper
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of study_iwslt14.py; expected '' or "
                         "'cpu'")
    return config
