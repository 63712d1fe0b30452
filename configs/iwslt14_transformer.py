"""IWSLT'14 De->En, the Transformer of Table 8 (Lin et al. 2020's teacher, asappresearch/imitkd
configs/iwslt/teacher.yaml): 8 + 8 layers of d_model 256, 4 heads, feed-forward 1024,
sinusoidal positions, dropout 0.1 (attention weights too), post-layer-norm, the output tied to
the embedding. The same data and training as configs/iwslt14.py except weight decay 0 (the
paper: tuned on dev for the Transformer).

    python main.py --config=configs/iwslt14_transformer.py --workdir=runs/iwslt14_transformer
"""
from srupp_jax.configs import iwslt14


def get_config():
    config = iwslt14.get_config()
    m = config.model
    m.arch = "transformer"
    m.d, m.num_heads, m.d_inner = 256, 4, 1024
    m.encoder_layers = m.decoder_layers = 8
    m.dropout, m.attn_dropout = 0.1, 0.1
    m.d_proj = m.d_embed = 0            # SRU++ only
    config.train.weight_decay = 0.0
    return config
