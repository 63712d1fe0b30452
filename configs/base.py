"""Every config key at a neutral value: the layer under `default.py` and each paper config.

Nothing here is a corpus size or a toy size: the model and batch sizes are 0 ("unset"), which
`srupp_jax.programs.modes.validate_config` rejects, so a config file must set them from its table. Keys
that the data decide are 0 or empty here and filled in from the prepared data at the start of
a run (the task's `load`): `model.vocab_size = 0` takes the vocabulary's size. `task` chooses
what is trained (srupp_jax/tasks): "lm" (language models, the default) or "translation"
(encoder-decoders); keys marked "translation" only matter there.
The training recipe shared by every paper setting (RAdam, decoupled weight decay 0.1, clipping
1.0, highway bias -2) is set here once.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.task = "lm"                  # lm | translation (srupp_jax/tasks)
    config.cpu_variant = ""             # the variant of this config sized for a CPU, which
                                        #   training on a CPU names when the run would be long
    config.seed = 0                     # initial parameters, dropout (translation: batch order)

    config.model = ml_collections.ConfigDict()
    config.model.arch = "srupp"         # lm: srupp | transformer_xl | sha_rnn (the baselines);
                                        #   translation: srupp | transformer (srupp_jax/models/archs.py)
    config.model.vocab_size = 0         # 0 = the prepared vocabulary's size (bytes: 256)
    config.model.d = 0                  # hidden size d
    config.model.d_proj = 0             # attention size d'
    config.model.num_layers = 0         # SRU++ layers (translation: see encoder_layers)
    config.model.k = 1                  # attention every k layers (k = num_layers: last only)
    config.model.attention_last_n = -1  # -1: use k; n >= 0: attention only in the last n layers
    config.model.num_heads = 1          # attention heads
    config.model.dropout = 0.0          # dropout between and inside layers
    config.model.attn_dropout = 0.0     # dropout of the attention weights
    config.model.highway_bias = -2.0    # initial reset-gate bias (the paper: -2)
    config.model.layer_norm = False     # an extra layer norm per layer (the paper: off)
    config.model.cutoffs = ()           # () = one softmax; adaptive input/softmax otherwise
    config.model.adaptive_factor = 4.0  # each adaptive cluster this many times narrower
    config.model.cutoff_fractions = ()  # word data with cutoffs (): cutoffs at these fractions
                                        #   of the vocabulary (configs/text.py)
    config.model.impl = "auto"          # recurrence backend: auto | scan | assoc | pallas
                                        #   | pallas_tpu (auto: pallas_tpu on TPU, the
                                        #   fastest measured on GPU, scan on CPU)
    config.model.kernel = ml_collections.ConfigDict(dict(
        block_d=0, num_warps=0, prefetch=0))  # GPU (Triton) kernel tuning (0: its default)
    config.model.tpu_kernel = ml_collections.ConfigDict(dict(
        block_b=0, block_d=0, chunk=0))  # TPU (Mosaic) kernel tuning (0: its default)
    config.model.remat = "none"         # gradient checkpointing (SRU++): none | layer (keep each
                                        #   layer's input only, recompute the layer in the
                                        #   backward pass) | attention (recompute the attention
                                        #   weights only); trades compute for memory
    config.model.d_inner = 0            # transformer_xl, sha_rnn: feed-forward / Boom width
    config.model.d_head = 0             # transformer_xl: head width (0 = d / num_heads)
    config.model.attention_layers = ()  # sha_rnn: 1-based blocks with attention
    config.model.d_embed = 0            # translation: width of the shared embedding (SRU++)
    config.model.encoder_layers = 0     # translation: layers of the encoder and the decoder
    config.model.decoder_layers = 0     # translation: layers of the decoder
    config.model.encoder_bidirectional = False  # translation, SRU++: a bidirectional encoder
    config.model.label_smoothing = 0.0  # translation: epsilon of the label-smoothed loss

    config.data = ml_collections.ConfigDict()
    config.data.name = ""               # default (embedded) | enwik8 | wikitext103 | lm1b | text
    config.data.data_dir = ""           # TFDS data_dir ("" = TFDS default)
    config.data.cache_dir = ""          # token cache ("" = ~/.cache/srupp_jax)
    config.data.max_bytes = 0           # 'default' corpus only: its size (0 = 8 MB)
    config.data.path = ""               # 'text' only: a text file or a folder of .txt files
    config.data.valid_path = ""         # 'text' only: optional separate valid / test files
    config.data.test_path = ""          #   (both or neither; else a 90/5/5 split of path)
    config.data.unit = "byte"           # 'text' only: byte | word
    # translation: data.name numbers_de_en (generated, offline) | iwslt14_de_en | parallel
    config.data.src = ""                # parallel: the source / target file suffixes (de, en)
    config.data.tgt = ""                # parallel: the target file suffix (en)
    config.data.recipe = "lin2020"      # iwslt14_de_en: lin2020 (Table 8's) | fairseq
    config.data.vocab_size = 0          # translation: joint BPE pieces (0 = the dataset's)
    config.data.lowercase = False       # parallel: lower-case the text
    config.data.tokenizer = "moses"     # parallel: moses | none (already tokenized)
    config.data.numbers = ml_collections.ConfigDict(dict(
        train_size=0, valid_size=0, test_size=0, seed=0))  # numbers_de_en (0: its default)

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 0         # B streams, global (split over devices and hosts)
    config.train.unroll = 0             # M tokens per step; attention memory of M tokens
    config.train.batch_tokens = 0       # translation: padded target (and source) tokens a step
    config.train.max_len = 0            # translation: longest pair trained on (subwords + EOS)
    config.train.steps = 0              # optimizer updates in all
    config.train.stop_at = 0            # stop (checkpointed) after this step; 0 = train.steps
    config.train.lr = 3e-4              # peak learning rate (RAdam)
    config.train.warmup_steps = 0       # linear warmup steps (< train.steps)
    config.train.schedule = "cosine"    # after warmup: cosine (one cycle) | rsqrt (Noam)
    config.train.weight_decay = 0.1     # decoupled; not on 1-D parameters (biases, norms)
    config.train.clip_norm = 1.0        # gradient clipping by global norm
    config.train.grad_accum_steps = 1   # micro-batches per optimizer update
    config.train.compute_dtype = "float32"  # float32 | bfloat16 | float16 (params and optimizer
                                        #   state stay float32; gates and the recurrent state
                                        #   too); float16 for GPUs without fast bfloat16 (T4,
                                        #   V100), with dynamic loss scaling:
    config.train.loss_scale = 2.0 ** 15  # float16: the initial loss scale (halved at each
                                        #   step with non-finite gradients, which is skipped)
    config.train.loss_scale_period = 2000  # float16: doubled after this many finite steps
    config.train.max_bad_steps = 5      # consecutive NaN/inf losses before stopping
    config.train.log_every = 100        # a train line and metrics row every N steps
    config.train.eval_every = 1000      # a dev evaluation every N steps (and at the end)
    config.train.checkpoint_every = 1000  # a checkpoint every N steps (and at the end)
    config.train.keep_checkpoints = 3   # the last N are kept, plus the best by dev
    config.train.time_budget = 0.0      # > 0: stop after this many seconds of training steps
    config.train.eval_marks = ()        # dev evaluations at these training seconds (study)
    config.train.prng_impl = "rbg"      # threefry2x32 | rbg | unsafe_rbg: the keys of the
                                        #   initial weights and dropout masks (srupp_jax/training/rng.py)
    config.train.profile_steps = (0, 0)  # (first, last): trace steps first+1..last to
                                         #   workdir/profile; (0, 0) = off

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 1          # streams evaluated at once
    config.eval.unroll = 0              # evaluation segment length
    config.eval.mem_len = 0             # attention memory at evaluation (paper: longer than M)
    config.eval.same_length = True      # every position sees the same number of tokens
    config.eval.max_tokens = 0          # 0 = the whole split (dev evaluations during training)
    config.eval.batch_tokens = 0        # translation: padded tokens per evaluation batch
    config.eval.max_sentences = 0       # translation: dev BLEU during training on the first
                                        #   N sentences (0 = all)
    config.eval.best = "bleu"           # translation: the best checkpoint by dev bleu (highest)
                                        #   or loss (lowest; no decoding during training)

    config.decode = ml_collections.ConfigDict()   # translation: beam search
    config.decode.beam_size = 5         # 1 = greedy
    config.decode.length_penalty = 0.0  # score / length ** alpha (0 = none, as Lin et al.)
    config.decode.max_len_a = 1.2       # at most a * source length + b target subwords
    config.decode.max_len_b = 10        # b of that limit

    config.mesh = ml_collections.ConfigDict()
    config.mesh.num_devices = 0         # devices in the data mesh (0 = all of them)
    config.mesh.fsdp = False            # shard params and optimizer state too (large models)
    config.mesh.fsdp_size = 0           # 0 or 1: the 1-D mesh above; k > 1: a 2-D mesh data x
                                        #   fsdp, k devices on "fsdp" (dividing the devices):
                                        #   params and optimizer state sharded over "fsdp",
                                        #   replicated over "data"; batch rows over both
    return config
