"""Greedy and beam search for the encoder-decoders (`seq2seq.SRUppSeq2Seq`,
`transformer_seq2seq.TransformerSeq2Seq`), compiled.

  greedy(model, src, max_len_a=, max_len_b=)                      -> (tokens, scores)
  beam_search(model, src, beam_size=, length_penalty=, max_len_a=, max_len_b=)
                                                                   -> (tokens, scores)

src [B, S] int (the model's pad_id padding). tokens [B, T_out] int32: the output, its eos
included, pad after it; scores [B] float32: the hypothesis' log-probability (divided by
length ** length_penalty in beam search). Both run in evaluation mode (a copy of the model:
the caller's is untouched), as one `jax.jit` per model structure, settings and source shape
(the settings are static), with a `lax.while_loop` over output positions.

The model interface (what a model needs to plug in): attributes pad_id, bos_id, eos_id;
  encode(src) -> encoded                          run ONCE per batch (not per beam)
  init_decode_state(encoded, max_len) -> state    a pytree of batch-first arrays
  decode_step(state, tokens [B], t) -> (log_probs [B, V] float32, state)
Beam search tiles the state over beams (flat index b * beam_size + k) and reorders it by
gathering axis 0 of every array.

Lengths (fairseq's max_len_a / max_len_b): a sentence of n source tokens (non-pad) gets at most
floor(max_len_a * n + max_len_b) tokens before its eos, which is forced there;
T_out = floor(max_len_a * S + max_len_b) + 1. Pad (and bos, unless it is the eos) are never
produced.

Beam search (as fairseq's and google/flax examples/wmt's; learnt from, not copied): per step
the top 2K candidates (K = beam_size) of all beams' extensions by cumulative log-probability;
those ending in eos among the top K become finished hypotheses, scored logp / len ** alpha
(len counts the eos; alpha = length_penalty, 0: no normalisation, as Lin et al. 2020); the
best K that do not end in eos go on. With K = 1 that is greedy search exactly. A sentence
stops once no live beam can beat its best finished hypothesis: log-probabilities only fall,
so a live beam's best reachable score is logp / max_len ** alpha; the result is the one a
search to the full length would return.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

NEG_INF = -jnp.inf


def check_settings(beam_size: int = 1, length_penalty: float = 0.0, max_len_a: float = 0.0,
                   max_len_b: int = 1) -> None:
    """ValueError naming the bad value."""
    if isinstance(beam_size, bool) or int(beam_size) != beam_size or beam_size < 1:
        raise ValueError(f"beam_size={beam_size}; expected an integer >= 1 (1 = greedy)")
    if not length_penalty >= 0:
        raise ValueError(f"length_penalty={length_penalty}; expected >= 0 (0 = none)")
    if not max_len_a >= 0:
        raise ValueError(f"max_len_a={max_len_a}; expected >= 0")
    if not max_len_b >= 0:
        raise ValueError(f"max_len_b={max_len_b}; expected >= 0")


def max_lengths(src_len, max_len_a: float, max_len_b: float):
    """floor(max_len_a * src_len + max_len_b) in float32, for numpy or jax arrays alike (the
    static buffer and the per-sentence limit must agree)."""
    xp = jnp if isinstance(src_len, jax.Array) else np
    n = xp.asarray(src_len).astype(np.float32)
    return xp.floor(np.float32(max_len_a) * n + np.float32(max_len_b)).astype(np.int32)


def _restrict(logp, t, limit, model):
    """Never pad (nor bos unless it is eos); only eos at a sentence's limit. logp [B, ..., V],
    limit [B]."""
    vocab = jnp.arange(logp.shape[-1])
    banned = vocab == model.pad_id
    if model.bos_id != model.eos_id:
        banned = banned | (vocab == model.bos_id)
    forced = (t >= limit).reshape(limit.shape + (1,) * (logp.ndim - 1))
    banned = banned | (forced & (vocab != model.eos_id))
    return jnp.where(banned, NEG_INF, logp)


def _start(model, src, max_len_a, max_len_b):
    """Encode once; (decoder state, per-sentence limits [B], T_out)."""
    src = jnp.asarray(src)
    if src.ndim != 2 or not jnp.issubdtype(src.dtype, jnp.integer):
        raise ValueError(f"src has shape {src.shape} dtype {src.dtype}; expected [batch, "
                         "length] integers")
    t_out = int(max_lengths(src.shape[1], max_len_a, max_len_b)) + 1
    limit = max_lengths(jnp.sum(src != model.pad_id, axis=1), max_len_a, max_len_b)
    state = model.init_decode_state(model.encode(src), t_out)
    return state, limit, t_out


def _eval_copy(graphdef, variables):
    model = nnx.merge(graphdef, variables)
    model.eval()
    return model


# ----------------------------------------------------------------------------------------------
# Greedy search.
# ----------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("graphdef", "max_len_a", "max_len_b"))
def _greedy(graphdef, variables, src, *, max_len_a, max_len_b):
    model = _eval_copy(graphdef, variables)
    state, limit, t_out = _start(model, src, max_len_a, max_len_b)
    batch = src.shape[0]

    def cond(carry):
        t, _, _, done, _, _ = carry
        return (t < t_out) & ~jnp.all(done)

    def body(carry):
        t, tokens, last, done, scores, state = carry
        logp, state = model.decode_step(state, last, t)
        logp = _restrict(logp, t, limit, model)
        tok = jnp.argmax(logp, axis=-1).astype(jnp.int32)
        scores = scores + jnp.where(done, 0.0, jnp.take_along_axis(logp, tok[:, None], 1)[:, 0])
        tok = jnp.where(done, model.pad_id, tok)
        tokens = jax.lax.dynamic_update_slice(tokens, tok[:, None], (0, t))
        return t + 1, tokens, tok, done | (tok == model.eos_id), scores, state

    init = (jnp.int32(0), jnp.full((batch, t_out), model.pad_id, jnp.int32),
            jnp.full((batch,), model.bos_id, jnp.int32), jnp.zeros((batch,), bool),
            jnp.zeros((batch,), jnp.float32), state)
    t, tokens, _, _, scores, _ = jax.lax.while_loop(cond, body, init)
    return tokens, scores, t


def greedy(model, src, *, max_len_a: float = 1.2, max_len_b: int = 10):
    """Greedy decoding: (tokens [B, T_out] int32, scores [B] float32 log-probabilities)."""
    check_settings(max_len_a=max_len_a, max_len_b=max_len_b)
    graphdef, variables = nnx.split(model)
    tokens, scores, _ = _greedy(graphdef, variables, jnp.asarray(src),
                                max_len_a=float(max_len_a), max_len_b=float(max_len_b))
    return tokens, scores


# ----------------------------------------------------------------------------------------------
# Beam search.
# ----------------------------------------------------------------------------------------------

class BeamState(NamedTuple):
    """t: next position; live_*: [B, K] beams that go on (seqs [B, K, T_out], logp = their
    cumulative log-probability, -inf for none, last = their last token); fin_*: the K best
    finished hypotheses (score normalised, -inf for none); state: decoder state [B * K, ...]."""
    t: jax.Array
    live_seqs: jax.Array
    live_logp: jax.Array
    live_last: jax.Array
    fin_seqs: jax.Array
    fin_scores: jax.Array
    state: object


def _gather(x, idx):
    """x [B, N, ...], idx [B, M] -> x[b, idx[b, m]] [B, M, ...]."""
    return x[jnp.arange(x.shape[0])[:, None], idx]


def _gather_flat(tree, idx, beams: int):
    """Every leaf [B * beams, ...] -> the rows idx [B, M] of its batch entry: [B * M, ...]."""
    def one(x):
        y = _gather(x.reshape((-1, beams) + x.shape[1:]), idx)
        return y.reshape((-1,) + x.shape[1:])
    return jax.tree.map(one, tree)


@functools.partial(jax.jit, static_argnames=("graphdef", "beam_size", "length_penalty",
                                             "max_len_a", "max_len_b", "early_stop"))
def _beam(graphdef, variables, src, *, beam_size, length_penalty, max_len_a, max_len_b,
          early_stop=True):
    model = _eval_copy(graphdef, variables)
    state, limit, t_out = _start(model, src, max_len_a, max_len_b)
    batch, K, alpha = src.shape[0], beam_size, length_penalty
    state = jax.tree.map(lambda x: jnp.repeat(x, K, axis=0), state)
    # the best score any live beam can still reach is its logp / (limit + 1) ** alpha
    max_penalty = (limit + 1).astype(jnp.float32) ** alpha

    def cond(s: BeamState):
        best_live = s.live_logp[:, 0] / max_penalty
        done = s.fin_scores[:, 0] >= best_live if early_stop else jnp.zeros((batch,), bool)
        return (s.t < t_out) & ~jnp.all(done)

    def body(s: BeamState):
        logp, state = model.decode_step(s.state, s.live_last.reshape(-1), s.t)
        logp = _restrict(logp.reshape(batch, K, -1), s.t, limit, model)
        vocab = logp.shape[-1]
        cand = (s.live_logp[..., None] + logp).reshape(batch, K * vocab)
        top_logp, top = jax.lax.top_k(cand, 2 * K)                 # [B, 2K], best first
        origin, tok = top // vocab, (top % vocab).astype(jnp.int32)
        seqs = jax.lax.dynamic_update_slice(_gather(s.live_seqs, origin), tok[..., None],
                                            (0, 0, s.t))
        is_eos = tok == model.eos_id
        # finished: eos among the top K candidates, scored with the length penalty
        rank = jnp.arange(2 * K)[None, :]
        fin_new = jnp.where(is_eos & (rank < K),
                            top_logp / (s.t + 1).astype(jnp.float32) ** alpha, NEG_INF)
        fin_scores, fi = jax.lax.top_k(jnp.concatenate([s.fin_scores, fin_new], 1), K)
        fin_seqs = _gather(jnp.concatenate([s.fin_seqs, seqs], 1), fi)
        # live: the best K candidates that do not end in eos
        live_logp, li = jax.lax.top_k(jnp.where(is_eos, NEG_INF, top_logp), K)
        state = _gather_flat(state, _gather(origin, li), K)
        return BeamState(s.t + 1, _gather(seqs, li), live_logp, _gather(tok, li), fin_seqs,
                         fin_scores, state)

    seqs = jnp.full((batch, K, t_out), model.pad_id, jnp.int32)
    live_logp = jnp.full((batch, K), NEG_INF).at[:, 0].set(0.0)   # the beams start identical
    init = BeamState(jnp.int32(0), seqs, live_logp, jnp.full((batch, K), model.bos_id,
                                                             jnp.int32),
                     seqs, jnp.full((batch, K), NEG_INF), state)
    s = jax.lax.while_loop(cond, body, init)
    return s.fin_seqs[:, 0], s.fin_scores[:, 0], s.t


def beam_search(model, src, *, beam_size: int = 5, length_penalty: float = 0.0,
                max_len_a: float = 1.2, max_len_b: int = 10):
    """Beam search: (tokens [B, T_out] int32 of the best hypothesis, scores [B] float32 =
    its log-probability / length ** length_penalty). See the module docstring."""
    check_settings(beam_size, length_penalty, max_len_a, max_len_b)
    graphdef, variables = nnx.split(model)
    tokens, scores, _ = _beam(graphdef, variables, jnp.asarray(src), beam_size=int(beam_size),
                              length_penalty=float(length_penalty),
                              max_len_a=float(max_len_a), max_len_b=float(max_len_b))
    return tokens, scores
