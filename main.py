"""srupp_jax entry point: python main.py --config=configs/default.py [--config.model.d=128].

Modes:
  smoke  build the configured SRU++ LM, run one forward and backward pass on random tokens with
         carried state, and print the loss (the training and evaluation modes arrive with the
         training issue).
"""
import time

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", "configs/default.py", "Experiment config file.")
flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
flags.DEFINE_enum("mode", "smoke", ["smoke"], "What to run.")
FLAGS = flags.FLAGS


def build_model(config, rngs):
    """The SRU++ LM that `config.model` describes."""
    from srupp_jax.models import SRUppLM
    m = config.model
    return SRUppLM(m.vocab_size, m.d, m.d_proj, m.num_layers, k=m.k,
                   attention_last_n=None if m.attention_last_n < 0 else m.attention_last_n,
                   num_heads=m.num_heads, dropout=m.dropout, attn_dropout=m.attn_dropout,
                   highway_bias=m.highway_bias, layer_norm=m.layer_norm,
                   cutoffs=list(m.cutoffs) if m.cutoffs else None, impl=m.impl, rngs=rngs)


def smoke(config) -> float:
    """One forward/backward pass on random tokens; returns the mean loss in nats."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

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
        loss, grads = nnx.value_and_grad(loss_fn)(m)
        return loss, grads

    start = time.time()
    loss, grads = loss_and_grad(variables, state)
    gnorm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads)))
    loss = float(loss)
    print(f"SRU++ LM: {n_params:,} parameters, {config.model.num_layers} layers, "
          f"d={config.model.d}, d'={config.model.d_proj}, k={config.model.k}, "
          f"backend {jax.default_backend()}")
    print(f"random tokens B={B} M={M}: loss {loss:.4f} nats (ln V = {jnp.log(V):.4f}), "
          f"grad norm {float(gnorm):.4f}, {time.time() - start:.1f}s incl. compile")
    return loss


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    smoke(FLAGS.config)


if __name__ == "__main__":
    app.run(main)
