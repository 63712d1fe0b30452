"""srupp_jax entry point.

    python main.py --config=configs/default.py --workdir=DIR               # train, then dev eval
    python main.py --config=configs/enwik8.py:k5 --workdir=DIR             # a config variant
    python main.py --config=configs/default.py --config.model.d=128 ...    # override any key
    python main.py --config=... --workdir=DIR --mode=eval                  # dev + test of best
    python main.py --config=... --workdir=DIR --mode=generate --prompt=...  # sample text

Modes:
  train  train (resuming from DIR's checkpoints), evaluating on dev as configured.
  eval   restore the best checkpoint (else the latest) and report dev and test BPC / PPL over
         the whole splits (eval.max_tokens = 0) or their first eval.max_tokens tokens.
  smoke  one forward and backward pass of the configured model on random tokens.
  generate  restore the best checkpoint (else the latest) and stream --num_tokens tokens
         sampled after --prompt (--temperature, --top_k, --top_p, --seed) to stdout, with
         eval.mem_len tokens of attention memory.

    python main.py --config=... --workdir=DIR --mode=generate --prompt="def " --top_p=0.9
"""
import json
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", "configs/default.py", "Experiment config file.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "smoke", "generate"], "What to run.")
flags.DEFINE_string("prompt", "", "--mode=generate: the text to continue ('' = start of a "
                    "line/sentence).")
flags.DEFINE_integer("num_tokens", 200, "--mode=generate: tokens to sample.")
flags.DEFINE_float("temperature", 1.0, "--mode=generate: softmax temperature (0 = greedy).")
flags.DEFINE_integer("top_k", 0, "--mode=generate: keep the k most likely tokens (0 = all).")
flags.DEFINE_float("top_p", 1.0, "--mode=generate: nucleus sampling mass (1 = off).")
flags.DEFINE_integer("seed", 0, "--mode=generate: sampling seed.")
flags.DEFINE_bool("force", False, "--mode=train: take over the workdir lock of another trainer "
                  "(only when that run is dead, e.g. a stale lock left on another host).")
FLAGS = flags.FLAGS


def smoke(config) -> float:
    """One forward/backward pass on random tokens; returns the mean loss in nats."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    import optax

    from srupp_jax.train import build_model, validate_config

    validate_config(config, 1)
    model = build_model(config, nnx.Rngs(config.seed))
    graphdef, variables = nnx.split(model)
    n_params = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    B, M, V = config.train.batch_size, config.train.unroll, config.model.vocab_size
    tokens = jax.random.randint(jax.random.PRNGKey(config.seed), (B, M + 1), 0, V)
    state = model.init_state(B, M)

    @jax.jit
    def loss_and_grad(variables, state):
        m = nnx.merge(graphdef, variables)
        loss_fn = lambda m: m.nll(tokens[:, :-1], tokens[:, 1:], state)[0].mean()
        return nnx.value_and_grad(loss_fn)(m)

    start = time.time()
    loss, grads = loss_and_grad(variables, state)
    gnorm = optax.tree.norm(grads)
    print(f"SRU++ LM: {n_params:,} parameters, {config.model.num_layers} layers, "
          f"d={config.model.d}, d'={config.model.d_proj}, k={config.model.k}, "
          f"backend {jax.default_backend()}")
    print(f"random tokens B={B} M={M}: loss {float(loss):.4f} nats (ln V = {jnp.log(V):.4f}), "
          f"grad norm {float(gnorm):.4f}, {time.time() - start:.1f}s incl. compile")
    return float(loss)


def generate(config, workdir: str) -> None:
    """Restore the best (else latest) checkpoint and stream sampled text to stdout."""
    import codecs
    import sys

    import jax
    import numpy as np
    from flax import nnx

    from srupp_jax import train
    from srupp_jax.generate import check_sampling, generate_iter

    check_sampling(FLAGS.temperature, FLAGS.top_k, FLAGS.top_p)
    if FLAGS.num_tokens < 0:
        raise app.UsageError(f"--num_tokens={FLAGS.num_tokens}; expected >= 0")
    train.validate_config(config, 1)
    data = train.load_data(config)
    model, params, rest, _ = train.restore_for_inference(config, workdir)
    nnx.update(model, params, rest)
    vocab = data.vocab
    if data.unit == "word":  # words; an empty prompt starts a sentence after <eos>
        ids = vocab.encode(FLAGS.prompt, add_eos=False) if FLAGS.prompt.strip() else []
        ids = np.concatenate([[vocab.eos_id], ids]).astype(np.int32)
    else:  # bytes; an empty prompt starts after a newline
        ids = vocab.encode(FLAGS.prompt or "\n")
    out = sys.stdout
    out.write(FLAGS.prompt)
    out.flush()
    # bytes: an incremental UTF-8 decoder keeps a character split across blocks for the next
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for block in generate_iter(model, ids[None, :], FLAGS.num_tokens,
                               key=jax.random.PRNGKey(FLAGS.seed),
                               mem_len=config.eval.mem_len, temperature=FLAGS.temperature,
                               top_k=FLAGS.top_k, top_p=FLAGS.top_p, block=32):
        if data.unit == "word":
            out.write(" " + vocab.decode(block[0]))
        else:
            out.write(utf8.decode(vocab.decode_bytes(block[0])))
        out.flush()
    out.write(utf8.decode(b"", final=True) + "\n")
    out.flush()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax is chatty at INFO
    config = FLAGS.config
    if FLAGS.mode == "smoke":
        smoke(config)
        return
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required for --mode=train, eval and generate")
    if FLAGS.mode == "generate":
        generate(config, FLAGS.workdir)
        return
    from srupp_jax import train
    if FLAGS.mode == "train":
        metrics = train.train_and_evaluate(config, FLAGS.workdir, force=FLAGS.force)
    else:
        metrics = train.evaluate_checkpoint(config, FLAGS.workdir)
    print(json.dumps({"mode": FLAGS.mode, **metrics}, sort_keys=True))
    if FLAGS.mode == "train":    # documented in srupp_jax/workdir.py and the README
        from srupp_jax.workdir import EXIT_CODES
        sys.exit(EXIT_CODES[metrics["status"]])


if __name__ == "__main__":
    app.run(main)
