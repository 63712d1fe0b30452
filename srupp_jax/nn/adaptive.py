"""Adaptive input embeddings and adaptive softmax, optionally with tied weights.

Baevski & Auli 2019 ("Adaptive Input Representations for Neural Language Modeling") and
Grave et al. 2017 ("Efficient softmax approximation for GPUs"), following fairseq's
`AdaptiveInput` / `AdaptiveSoftmax` (`--adaptive-input --tie-adaptive-weights
--tie-adaptive-proj`), the setup SRU++ uses for Wiki-103 (cutoffs [20000, 60000], vocab
267735) and Billion Word (cutoffs [60000, 160000], vocab ~800K).

Clusters. `cutoffs` c_1 < ... < c_{n-1} split the vocabulary V into n clusters
  V_0 = [0, c_1),  V_i = [c_i, c_{i+1}),  V_{n-1} = [c_{n-1}, |V|)
(`cutoffs=[]` is allowed: one cluster, i.e. a plain embedding / full softmax). Cluster i has
width d_i = int(d_embed // factor**i), so frequent words (low ids) get wide vectors and rare
words narrow ones. Ids are assumed sorted by decreasing frequency, as in fairseq dictionaries.

  AdaptiveInput   ids [..] int -> [.., d_model]:   e(w) = E_i[w - c_i] P_i  (* sqrt(d_model))
                  E_i [|V_i|, d_i] embedding table, P_i [d_i, d_model] projection (no bias).
  AdaptiveSoftmax hidden [.., d_model] -> log p(w | h)   (two-level factorisation)
                  head:  logits over the |V_0| shortlist words and n-1 cluster tokens,
                         [ (h Q_0) E_0^T ; h C ],  C [d_model, n-1];
                  tail i (i >= 1): logits over V_i,  (h Q_i) E_i^T,  Q_i: d_model -> d_i;
                  log p(w) = log p_head(w)                             for w in V_0,
                  log p(w) = log p_head(cluster i) + log p_tail_i(w)   for w in V_i, i >= 1.
                  Q_0 is omitted when d_0 == d_model (as fairseq's TiedHeadModule).

Tying (`AdaptiveSoftmax(..., tie_to=adaptive_input)`): the output word matrices E_i are the
very same `nnx.Param`s as the input tables (fairseq `tie_adaptive_weights`), and with
`tie_proj=True` (fairseq `tie_adaptive_proj`) the down-projections are the input projections
transposed, Q_i = P_i^T. Only the cluster-token matrix C (and Q_i where `tie_proj=False`)
belong to the softmax alone. `nnx.state` of a module holding both lists shared params once.

Initialisation (fairseq's): embedding tables E_i ~ N(0, d_i^-1) (std d_i**-0.5); every
projection / output matrix that is not tied is Xavier-uniform (P_i, Q_i, C, and the untied
output matrices E_i of an untied AdaptiveSoftmax, which fairseq builds as nn.Linear).

Out-of-range ids cannot be checked inside `jit`. Both modules check concrete (non-traced)
id arrays and raise ValueError; under tracing, AdaptiveInput maps an out-of-range id to a zero
vector and AdaptiveSoftmax.nll clips targets into [0, |V|) (the loss of such a token is
meaningless: mask it out, e.g. padding). Static problems (shapes, dtypes) always raise.
"""
from __future__ import annotations

import math
import operator
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from srupp_jax.nn.linear import linear, xavier_uniform

# ----------------------------------------------------------------------------- helpers

def check_cutoffs(cutoffs: Sequence[int], vocab_size: int = 0, *, source: str = "") -> None:
    """`model.cutoffs` by the rule of `cluster_bounds` (0: the vocabulary is not known yet),
    with a message naming the key and the data (`source`, e.g. "the wikitext103 vocabulary")."""
    try:
        cluster_bounds(vocab_size or max(cutoffs, default=0) + 1, cutoffs)
    except ValueError:
        what = f" but {source} has {vocab_size} entries" if source else ""
        upper = str(vocab_size - 1) if vocab_size else "vocab_size - 1"
        raise ValueError(f"model.cutoffs={tuple(cutoffs)}{what}; expected strictly increasing "
                         f"values in 1..{upper} (set --config.model.cutoffs for this "
                         "vocabulary)") from None


def cluster_bounds(vocab_size: int, cutoffs: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Validated [(lo, hi), ...] id ranges of the clusters given by `cutoffs`.

    Raises ValueError unless vocab_size > 0 and the cutoffs are integers with
    0 < c_1 < c_2 < ... < vocab_size.
    """
    vocab_size = _positive_int("vocab_size", vocab_size)
    if isinstance(cutoffs, (str, bytes)) or not isinstance(cutoffs, Sequence):
        raise ValueError(f"cutoffs must be a sequence of integers, got {cutoffs!r}")
    bounds, prev = [], 0
    for i, c in enumerate(cutoffs):
        c = _as_int(f"cutoffs[{i}]", c)
        if c <= 0:
            raise ValueError(f"cutoffs[{i}] = {c}: cutoffs must be > 0")
        if c <= prev:
            raise ValueError(f"cutoffs[{i}] = {c}: cutoffs must be strictly increasing "
                             f"(previous cutoff is {prev}), got {list(cutoffs)}")
        if c >= vocab_size:
            raise ValueError(f"cutoffs[{i}] = {c}: cutoffs must be < vocab_size = {vocab_size} "
                             "(the last cluster always ends at vocab_size; do not list it)")
        bounds.append((prev, c))
        prev = c
    bounds.append((prev, vocab_size))
    return tuple(bounds)


def cluster_dims(d_embed: int, factor: float, n_clusters: int) -> tuple[int, ...]:
    """Cluster widths d_i = int(d_embed // factor**i) (fairseq's rule); each must be >= 1."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
        raise ValueError(f"factor must be a positive number, got {factor!r}")
    dims = tuple(int(d_embed // factor ** i) for i in range(n_clusters))
    for i, d in enumerate(dims):
        if d < 1:
            raise ValueError(f"cluster {i} would have width int({d_embed} // {factor}**{i}) = {d}; "
                             "use a smaller factor, fewer cutoffs or a larger d_embed")
    return dims


def _as_int(name: str, value, what: str = "an integer") -> int:
    """`value` as a Python int (numpy ints too; bools and floats are refused)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be {what}, got {value!r}") from None


def _positive_int(name: str, value) -> int:
    value = _as_int(name, value, "a positive integer")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def _check_ids(name: str, ids, vocab_size: int, shape=None):
    """Static checks (integer dtype, shape); value check only for concrete arrays."""
    ids = jnp.asarray(ids) if not isinstance(ids, jax.Array) else ids
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {ids.dtype}")
    if shape is not None and tuple(ids.shape) != tuple(shape):
        raise ValueError(f"{name} shape {tuple(ids.shape)} must equal hidden.shape[:-1] = "
                         f"{tuple(shape)}")
    if not isinstance(ids, jax.core.Tracer) and ids.size:
        with jax.ensure_compile_time_eval():  # concrete even when closed over by a jit trace
            lo, hi = int(jnp.min(ids)), int(jnp.max(ids))
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} contains id {bad}, outside the vocabulary [0, {vocab_size})")
    return ids


def _chunked_logsumexp(z, table, chunk: int):
    """logsumexp_j (z . table[j]) over the rows of table [S, d], `chunk` rows at a time.

    An online (running max / running sum) logsumexp under lax.scan with a rematerialised
    body, so neither the forward nor the backward pass holds more than [.., chunk] logits.
    """
    size, d = table.shape
    k = -(-size // chunk)
    pad = k * chunk - size
    blocks = jnp.pad(table, ((0, pad), (0, 0))).reshape(k, chunk, d)
    valid = (jnp.arange(k * chunk) < size).reshape(k, chunk)

    @jax.checkpoint
    def body(carry, xs):
        m, s = carry
        block, ok = xs
        logits = jnp.where(ok, z @ block.T, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(logits, axis=-1))
        s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[..., None]), axis=-1)
        return (m_new, s), None

    batch = z.shape[:-1]
    init = (jnp.full(batch, -jnp.inf, z.dtype), jnp.zeros(batch, z.dtype))
    (m, s), _ = jax.lax.scan(body, init, (blocks, valid))
    return m + jnp.log(s)


# ----------------------------------------------------------------------------- modules

class AdaptiveInput(nnx.Module):
    """Adaptive input embedding (Baevski & Auli 2019): ids [..] int -> [.., d_model].

    Args:
      vocab_size: |V|.  d_model: output width.  cutoffs: cluster boundaries (see module doc;
        [] = a single cluster).  factor: width reduction k, d_i = int(d_embed // k**i).
      scale_embedding: multiply the output by sqrt(d_model), as fairseq's TransformerLM does
        to its input embeddings (the Baevski & Auli Wiki-103 config keeps the scaling).
      d_embed: width d_0 of the first cluster (fairseq's `decoder_input_dim`); default d_model.
      dtype: computation / output dtype (default: the parameter dtype, float32).
      param_dtype: dtype of the parameters.

    Parameters: `embeddings[i].embedding` E_i [|V_i|, d_i] ~ N(0, d_i^-1) and
    `projections[i].kernel` P_i [d_i, d_model], Xavier-uniform, no bias (present for every
    cluster, including cluster 0 when d_0 == d_model, as in fairseq).

    Call: each token is gathered from every cluster table with its id clipped into that
    cluster and the results are masked and summed (static shapes, jit-friendly; the cost is
    one [.., d_i] x [d_i, d_model] projection per cluster for every token). Concrete ids
    outside [0, |V|) raise ValueError; traced ones give a zero vector.
    """

    def __init__(self, vocab_size: int, d_model: int, cutoffs: Sequence[int] = (),
                 factor: float = 4.0, *, scale_embedding: bool = True,
                 d_embed: Optional[int] = None, dtype=None, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.bounds = cluster_bounds(vocab_size, cutoffs)
        self.vocab_size = int(vocab_size)
        self.d_model = _positive_int("d_model", d_model)
        self.d_embed = self.d_model if d_embed is None else _positive_int("d_embed", d_embed)
        self.cutoffs = tuple(hi for _, hi in self.bounds[:-1])
        self.factor = factor
        self.dims = cluster_dims(self.d_embed, factor, len(self.bounds))
        self.scale_embedding = bool(scale_embedding)
        self.dtype = dtype
        self.embeddings = nnx.List([
            nnx.Embed(hi - lo, d, dtype=dtype, param_dtype=param_dtype,
                      embedding_init=jax.nn.initializers.normal(d ** -0.5),  # fairseq's
                      rngs=rngs)
            for (lo, hi), d in zip(self.bounds, self.dims)])
        self.projections = nnx.List([
            linear(d, self.d_model, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for d in self.dims])

    @property
    def num_clusters(self) -> int:
        return len(self.bounds)

    def __call__(self, ids) -> jax.Array:
        ids = _check_ids("ids", ids, self.vocab_size)
        out = None
        for (lo, hi), embed, proj in zip(self.bounds, self.embeddings, self.projections):
            inside = (ids >= lo) & (ids < hi)
            e = proj(embed(jnp.clip(ids - lo, 0, hi - lo - 1)))          # [.., d_model]
            e = jnp.where(inside[..., None], e, jnp.zeros((), e.dtype))
            out = e if out is None else out + e
        if self.scale_embedding:
            out = out * jnp.asarray(math.sqrt(self.d_model), out.dtype)
        return out


class AdaptiveSoftmax(nnx.Module):
    """Adaptive softmax (Grave et al. 2017; fairseq's variant): hidden [.., d_model] -> log p.

    Args:
      vocab_size, d_model, cutoffs, factor: as AdaptiveInput. Without `tie_to`, cluster i has
        width d_i = int(d_model // factor**i) (so d_0 = d_model); with `tie_to`, the widths are
        the tied AdaptiveInput's and `factor` is not used.
      tie_to: an AdaptiveInput with the same vocab_size, d_model and cutoffs whose tables E_i
        become the output word matrices (shared nnx.Params, fairseq `tie_adaptive_weights`).
      tie_proj: with `tie_to`, use the input projections transposed as down-projections,
        Q_i = P_i^T (fairseq `tie_adaptive_proj`); False gives the softmax its own Q_i.
        Ignored without `tie_to`.
      dropout: rate applied, in training mode only, to the hidden input and after each tail
        down-projection (fairseq's `adaptive_softmax_dropout` placement). Default 0.
      rngs: parameter init and the dropout stream.

    Parameters owned (besides the tied ones): `cluster_proj.kernel` C [d_model, n-1] (the
    cluster-token logits; absent with one cluster), untied `out_embeddings[i].embedding`
    [|V_i|, d_i], untied `tail_projs[i-1].kernel` [d_model, d_i], and `head_proj` only when
    d_0 != d_model (tied: P_0^T if tie_proj, else its own [d_model, d_0]; fairseq always uses
    its own matrix there). No biases. Untied matrices are Xavier-uniform.

    All logits and log-softmaxes are computed in float32, whatever hidden's dtype.
    """

    def __init__(self, vocab_size: int, d_model: int, cutoffs: Sequence[int] = (),
                 factor: float = 4.0, *, tie_to: Optional[AdaptiveInput] = None,
                 tie_proj: bool = True, dropout: float = 0.0, rngs: nnx.Rngs):
        self.bounds = cluster_bounds(vocab_size, cutoffs)
        self.vocab_size = int(vocab_size)
        self.d_model = _positive_int("d_model", d_model)
        self.cutoffs = tuple(hi for _, hi in self.bounds[:-1])
        n = len(self.bounds)
        if tie_to is not None:
            if not isinstance(tie_to, AdaptiveInput):
                raise TypeError(f"tie_to must be an AdaptiveInput, got {type(tie_to).__name__}")
            for name in ("vocab_size", "d_model", "cutoffs"):
                if getattr(tie_to, name) != getattr(self, name):
                    raise ValueError(f"tie_to.{name} = {getattr(tie_to, name)} does not match "
                                     f"this AdaptiveSoftmax's {name} = {getattr(self, name)}")
            self.dims = tie_to.dims
        else:
            self.dims = cluster_dims(self.d_model, factor, n)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.tied = tie_to is not None
        self.tie_proj = self.tied and bool(tie_proj)  # projections stored as P_i [d_i, d_model]

        def own_proj(d):
            return linear(self.d_model, d, rngs=rngs)

        if self.tied:
            self.out_embeddings = nnx.List([tie_to.embeddings[i] for i in range(n)])
        else:
            self.out_embeddings = nnx.List([
                nnx.Embed(hi - lo, d, embedding_init=xavier_uniform(), rngs=rngs)
                for (lo, hi), d in zip(self.bounds, self.dims)])
        if self.dims[0] == self.d_model:
            self.head_proj = None
        else:
            self.head_proj = tie_to.projections[0] if self.tie_proj else own_proj(self.dims[0])
        self.tail_projs = nnx.List([
            tie_to.projections[i] if self.tie_proj else own_proj(self.dims[i])
            for i in range(1, n)])
        self.cluster_proj = linear(self.d_model, n - 1, rngs=rngs) if n > 1 else None
        self.dropout_rate = float(dropout)
        self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None

    @property
    def num_clusters(self) -> int:
        return len(self.bounds)

    # -- pieces
    def _down(self, proj, h):
        """h Q: Q = P^T for tied projections (kernel [d_i, d_model]), else Q = kernel."""
        kernel = proj.kernel[...].astype(jnp.float32)
        return h @ kernel.T if self.tie_proj else h @ kernel

    def _table(self, i):
        return self.out_embeddings[i].embedding[...].astype(jnp.float32)

    def _prepare(self, hidden):
        hidden = jnp.asarray(hidden)
        if hidden.ndim < 1 or hidden.shape[-1] != self.d_model:
            raise ValueError(f"hidden must have shape [..., d_model = {self.d_model}], "
                             f"got {tuple(hidden.shape)}")
        if not jnp.issubdtype(hidden.dtype, jnp.floating):
            raise ValueError(f"hidden must be a floating array, got dtype {hidden.dtype}")
        h = hidden.astype(jnp.float32)
        if self.dropout is not None:
            h = self.dropout(h)
        return h

    def _head_logits(self, h):
        """[.., |V_0| + n - 1]: shortlist word logits, then one logit per tail cluster."""
        z = h if self.head_proj is None else self._down(self.head_proj, h)
        logits = z @ self._table(0).T
        if self.cluster_proj is not None:
            c = h @ self.cluster_proj.kernel[...].astype(jnp.float32)
            logits = jnp.concatenate([logits, c], axis=-1)
        return logits

    def _tail_hidden(self, h, i):
        """h Q_i (then dropout) for tail cluster i >= 1: [.., d_i]."""
        z = self._down(self.tail_projs[i - 1], h)
        if self.dropout is not None:
            z = self.dropout(z)
        return z

    # -- public
    def log_probs(self, hidden) -> jax.Array:
        """Full log-distribution: hidden [.., d_model] -> [.., vocab_size] float32.

        Materialises all |V| log-probabilities (evaluation, generation, tests); use `nll`
        for the training loss.
        """
        h = self._prepare(hidden)
        c0 = self.bounds[0][1]
        head = jax.nn.log_softmax(self._head_logits(h), axis=-1)
        parts = [head[..., :c0]]
        for i in range(1, self.num_clusters):
            tail = jax.nn.log_softmax(self._tail_hidden(h, i) @ self._table(i).T, axis=-1)
            parts.append(tail + head[..., c0 + i - 1, None])
        return jnp.concatenate(parts, axis=-1)

    def nll(self, hidden, targets, *, vocab_chunk: Optional[int] = None) -> jax.Array:
        """Per-token negative log-likelihood -log p(targets | hidden): [..] float32.

        hidden [.., d_model] (any float dtype), targets [..] int with targets.shape ==
        hidden.shape[:-1]. Never forms the |V|-wide distribution: per token it needs the
        head logits, and for each tail cluster only a logsumexp and the target row's logit
        (a gather + dot), with tail terms masked to the tokens whose target is in that
        cluster. Every tail logsumexp is still evaluated for every token (static shapes),
        costing [tokens, |V_i|] x d_i per cluster, which the small d_i keep cheap.

        vocab_chunk: if given, tail logsumexps run over `vocab_chunk` words at a time (scan
          with rematerialisation), bounding memory at [tokens, vocab_chunk] per cluster.
          Same value up to float rounding.

        Concrete targets outside [0, vocab_size) raise ValueError; traced ones are clipped
        into range (their loss is meaningless: mask such positions out).
        """
        h = self._prepare(hidden)
        targets = _check_ids("targets", targets, self.vocab_size, shape=h.shape[:-1])
        if vocab_chunk is not None:
            vocab_chunk = _positive_int("vocab_chunk", vocab_chunk)
        t = jnp.clip(targets, 0, self.vocab_size - 1)
        c0 = self.bounds[0][1]
        cluster = sum(((t >= c).astype(jnp.int32) for c in self.cutoffs),
                      jnp.zeros(t.shape, jnp.int32))

        head = self._head_logits(h)
        head_idx = jnp.where(cluster == 0, t, c0 + cluster - 1)
        loss = (jax.nn.logsumexp(head, axis=-1)
                - jnp.take_along_axis(head, head_idx[..., None], axis=-1)[..., 0])
        for i in range(1, self.num_clusters):
            lo, hi = self.bounds[i]
            z = self._tail_hidden(h, i)                                    # [.., d_i]
            table = self._table(i)                                         # [|V_i|, d_i]
            row = table[jnp.clip(t - lo, 0, hi - lo - 1)]                  # [.., d_i]
            target_logit = jnp.sum(z * row, axis=-1)
            if vocab_chunk is None or vocab_chunk >= hi - lo:
                lse = jax.nn.logsumexp(z @ table.T, axis=-1)
            else:
                lse = _chunked_logsumexp(z, table, vocab_chunk)
            loss = loss + jnp.where(cluster == i, lse - target_logit, 0.0)
        return loss
