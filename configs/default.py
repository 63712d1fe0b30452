"""Tiny SRU++ character LM for CPU: the quick-start config (minutes on 2 cores).

Same architecture as the paper's enwik8 model (Table 11) at toy size: 4 layers, d = 64,
d' = d / 4 = 16, attention every layer, unroll M = 32 with M tokens of attention memory.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.vocab_size = 256       # bytes
    config.model.d = 64                 # hidden size d
    config.model.d_proj = 16            # attention size d' (d:d' = 4)
    config.model.num_layers = 4
    config.model.k = 1                  # attention every k layers
    config.model.attention_last_n = -1  # -1: use k; n >= 0: attention only in the last n layers
    config.model.num_heads = 1
    config.model.dropout = 0.1
    config.model.attn_dropout = 0.1
    config.model.highway_bias = -2.0
    config.model.layer_norm = False
    config.model.cutoffs = ()           # () for a character model; adaptive softmax otherwise
    config.model.impl = "auto"          # recurrence backend: auto | scan | assoc | pallas

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 8         # B streams
    config.train.unroll = 32            # M tokens per step (and attention memory length)
    return config
