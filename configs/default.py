"""Tiny SRU++ character LM on the embedded corpus: the quick-start config (minutes on 2 CPUs).

The architecture of the paper's enwik8 model (Table 11) at toy size: 4 layers, d = 64,
d' = d / 4 = 16, attention in every layer, unroll M = 64 with M tokens of attention memory,
trained on the Python standard library's own source code (bytes), which every machine has.
Every paper config starts from this one and overrides what its table says.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.arch = "srupp"         # srupp | transformer_xl | sha_rnn (the baselines)
    config.model.vocab_size = 256       # bytes; word-level configs take it from the vocabulary
    config.model.d = 64                 # hidden size d
    config.model.d_proj = 16            # attention size d' (d:d' = 4)
    config.model.num_layers = 4
    config.model.k = 1                  # attention every k layers (k = num_layers: last only)
    config.model.attention_last_n = -1  # -1: use k; n >= 0: attention only in the last n layers
    config.model.num_heads = 1
    config.model.dropout = 0.1
    config.model.attn_dropout = 0.1
    config.model.highway_bias = -2.0
    config.model.layer_norm = False
    config.model.cutoffs = ()           # () = character model; adaptive input/softmax otherwise
    config.model.adaptive_factor = 4.0
    config.model.impl = "auto"          # recurrence backend: auto | scan | assoc | pallas

    config.data = ml_collections.ConfigDict()
    config.data.name = "default"        # default (embedded) | enwik8 | wikitext103 | lm1b
    config.data.data_dir = ""           # TFDS data_dir ("" = TFDS default)
    config.data.cache_dir = ""          # token cache ("" = ~/.cache/srupp_jax)
    config.data.max_bytes = 4_000_000   # size of the embedded corpus

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 16        # B streams, global (split over devices and hosts)
    config.train.unroll = 64            # M tokens per step; attention memory of M tokens
    config.train.steps = 2000
    config.train.stop_at = 0            # stop (checkpointed) after this step; 0 = train.steps
    config.train.lr = 3e-3              # the paper's 3e-4 is for 400K steps of large models
    config.train.warmup_steps = 100
    config.train.weight_decay = 0.1
    config.train.clip_norm = 1.0
    config.train.grad_accum_steps = 1
    config.train.compute_dtype = "float32"  # float32 | bfloat16 (params stay float32)
    config.train.max_bad_steps = 5      # consecutive NaN/inf losses before stopping
    config.train.log_every = 100
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 3

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 4
    config.eval.unroll = 128            # evaluation segment length
    config.eval.mem_len = 128           # attention memory at evaluation (paper: longer than M)
    config.eval.same_length = True      # every position sees the same number of tokens
    config.eval.max_tokens = 100_000    # 0 = the whole split; the default model evaluates a slice

    config.mesh = ml_collections.ConfigDict()
    config.mesh.num_devices = 0         # devices in the data mesh (0 = all of them)
    config.mesh.fsdp = False            # shard params and optimizer state too (large models)
    return config
