"""Adaptive input embeddings and adaptive softmax, optionally with tied weights.

Baevski & Auli 2019 ("Adaptive Input Representations for Neural Language Modeling") and
Grave et al. 2017 ("Efficient softmax approximation for GPUs"), in the form of the reference
code the released SRU++ models were trained with (asappresearch/sru `experiments/
srupp_experiments/embedding.py`, adapted from Transformer-XL's `ProjectedAdaptiveLogSoftmax`):
Wiki-103 cutoffs [19997, 39997, 199997], d_embed 1024, factor (div_val) 4, tied tables and
projections; Billion Word cutoffs [59998, 159998], tied tables, untied projections.

Clusters. `cutoffs` c_1 < ... < c_{n-1} split the vocabulary V into n clusters
  V_0 = [0, c_1),  V_i = [c_i, c_{i+1}),  V_{n-1} = [c_{n-1}, |V|)
(`cutoffs=[]` is allowed: one cluster, i.e. a plain embedding / full softmax). Cluster i has
width d_i = int(d_embed // factor**i), so frequent words (low ids) get wide vectors and rare
words narrow ones. Ids are sorted by decreasing frequency (data/vocab.py).

  AdaptiveInput   ids [..] int -> [.., d_model]:   e(w) = dropout(E_i[w - c_i]) P_i  (* scale)
                  E_i [|V_i|, d_i] table, P_i [d_i, d_model] projection (no bias); scale
                  sqrt(d_model) if scale_embedding (Transformer-XL), 1 (SRU++).
  AdaptiveSoftmax hidden h [.., d_model] -> log p(w | h)   (two-level factorisation)
                  z_i = dropout(h Q_i), Q_i [d_model, d_i]:
                  head:  logits over the |V_0| shortlist words, then one per tail cluster,
                         [ z_0 E_0^T + b_0 ;  z_0 C^T + b_C ],  C [n-1, d_0], b_C [n-1];
                         head column c_1 + j scores cluster n-1-j (the reference's order:
                         the last column is cluster 1, the one before it cluster 2, ...);
                  tail i (i >= 1): logits over V_i,  z_i E_i^T + b_i;
                  log p(w) = log p_head(w)                             for w in V_0,
                  log p(w) = log p_head(cluster i) + log p_tail_i(w)   for w in V_i, i >= 1.
Projections exist for every cluster, except when every cluster is d_model wide (factor 1 and
d_embed = d_model, the Transformer-XL reference's div_val 1): then P_i = Q_i = identity and
no dropout applies inside the softmax. Every output row has a bias b (zero-initialised).

Tying (`AdaptiveSoftmax(..., tie_to=adaptive_input)`): the output word tables E_i are the
very same `nnx.Param`s as the input tables, and with `tie_proj=True` the softmax projections
are the input projections transposed, Q_i = P_i^T (Wiki-103); `tie_proj=False` gives the
softmax its own Q_i (Billion Word). C, b_C and the b_i belong to the softmax alone.
`nnx.state` of a module holding both counts shared params once.

Initialisation: tables (and C) from `init` (default N(0, d_i^-1), fairseq's; SRU++ passes the
reference's U[-sqrt(3/d), sqrt(3/d)]); projections and untied output tables Xavier-uniform;
biases zero.

Concrete ids outside [0, |V|) raise ValueError; traced ones cannot be checked (a zero input
vector; a clipped target whose loss is meaningless: mask it out).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from srupp_jax.nn.clusters import check_ids, cluster_bounds, cluster_dims, positive_int, projected
from srupp_jax.nn.linear import linear, xavier_uniform


def _chunked_logsumexp(z, table, bias, chunk: int):
    """logsumexp_j (z . table[j] + bias[j]) over the rows of table [S, d], `chunk` rows at a
    time.

    An online (running max / running sum) logsumexp under lax.scan with a rematerialised
    body, so neither the forward nor the backward pass holds more than [.., chunk] logits.
    """
    size, d = table.shape
    k = -(-size // chunk)
    pad = k * chunk - size
    blocks = jnp.pad(table, ((0, pad), (0, 0))).reshape(k, chunk, d)
    biases = jnp.pad(bias, (0, pad)).reshape(k, chunk)
    valid = (jnp.arange(k * chunk) < size).reshape(k, chunk)

    @jax.checkpoint
    def body(carry, xs):
        m, s = carry
        block, b, ok = xs
        logits = jnp.where(ok, z @ block.T + b, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(logits, axis=-1))
        s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[..., None]), axis=-1)
        return (m_new, s), None

    batch = z.shape[:-1]
    init = (jnp.full(batch, -jnp.inf, z.dtype), jnp.zeros(batch, z.dtype))
    (m, s), _ = jax.lax.scan(body, init, (blocks, biases, valid))
    return m + jnp.log(s)


# ----------------------------------------------------------------------------- modules

class _Clusters(nnx.Module):
    """What both modules hold: the clusters of `vocab_size` ids under `cutoffs`."""

    def _set_clusters(self, vocab_size: int, d_model: int, cutoffs: Sequence[int]) -> None:
        self.bounds = cluster_bounds(vocab_size, cutoffs)
        self.vocab_size = int(vocab_size)
        self.d_model = positive_int("d_model", d_model)
        self.cutoffs = tuple(hi for _, hi in self.bounds[:-1])

    @property
    def num_clusters(self) -> int:
        return len(self.bounds)


class AdaptiveInput(_Clusters):
    """Adaptive input embedding: ids [..] int -> [.., d_model] (module docstring).

    Args:
      vocab_size: |V|.  d_model: output width.  cutoffs: cluster boundaries ([] = a single
        cluster).  factor: width reduction (div_val), d_i = int(d_embed // factor**i).
      d_embed: width d_0 of the first cluster (the reference's n_e); default d_model.
      scale_embedding: multiply the output by sqrt(d_model) (Transformer-XL, fairseq); the
        released SRU++ models do not.
      dropout: on each looked-up E_i row, before its projection (the reference's emb_dropout).
      init: initialiser of the tables (default N(0, d_i^-1)).
      dtype: computation / output dtype (default: the parameter dtype, float32).
      param_dtype: dtype of the parameters.

    Parameters: `embeddings[i].embedding` E_i [|V_i|, d_i] and, unless every cluster is
    d_model wide, `projections[i].kernel` P_i [d_i, d_model] (Xavier-uniform, no bias).

    Call: each token is gathered from every cluster table with its id clipped into that
    cluster and the results are masked and summed (static shapes, jit-friendly; the cost is
    one [.., d_i] x [d_i, d_model] projection per cluster for every token). Concrete ids
    outside [0, |V|) raise ValueError; traced ones give a zero vector.
    """

    def __init__(self, vocab_size: int, d_model: int, cutoffs: Sequence[int] = (),
                 factor: float = 4.0, *, d_embed: Optional[int] = None,
                 scale_embedding: bool = True, dropout: float = 0.0, init=None, dtype=None,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self._set_clusters(vocab_size, d_model, cutoffs)
        self.d_embed = self.d_model if d_embed is None else positive_int("d_embed", d_embed)
        self.factor = factor
        self.dims = cluster_dims(self.d_embed, factor, len(self.bounds))
        self.scale_embedding = bool(scale_embedding)
        self.dtype = dtype
        self.embeddings = nnx.List([
            nnx.Embed(hi - lo, d, dtype=dtype, param_dtype=param_dtype,
                      embedding_init=init or jax.nn.initializers.normal(d ** -0.5), rngs=rngs)
            for (lo, hi), d in zip(self.bounds, self.dims)])
        self.projections = nnx.List([
            linear(d, self.d_model, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for d in self.dims]) if projected(self.dims, self.d_model) else None
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, ids) -> jax.Array:
        ids = check_ids("ids", ids, self.vocab_size)
        out = None
        for i, ((lo, hi), embed) in enumerate(zip(self.bounds, self.embeddings)):
            inside = (ids >= lo) & (ids < hi)
            e = embed(jnp.clip(ids - lo, 0, hi - lo - 1))                 # [.., d_i]
            if self.projections is not None:
                e = self.projections[i](self.dropout(e))                  # [.., d_model]
            e = jnp.where(inside[..., None], e, jnp.zeros((), e.dtype))
            out = e if out is None else out + e
        if self.scale_embedding:
            out = out * jnp.asarray(math.sqrt(self.d_model), out.dtype)
        return out


class AdaptiveSoftmax(_Clusters):
    """Adaptive softmax: hidden [.., d_model] -> log p (module docstring).

    Args:
      vocab_size, d_model, cutoffs, factor, d_embed, init: as AdaptiveInput. With `tie_to`
        the widths are the tied AdaptiveInput's (factor and d_embed are not used).
      tie_to: an AdaptiveInput with the same vocab_size, d_model and cutoffs whose tables E_i
        become the output word tables (shared nnx.Params).
      tie_proj: with `tie_to`, Q_i = P_i^T, the input projections transposed; False gives
        the softmax its own Q_i [d_model, d_i]. Ignored without `tie_to`.
      dropout: rate applied, in training mode only, to each projected hidden state h Q_i
        (the reference's placement). Default 0.
      rngs: parameter init and the dropout stream.

    Parameters owned (besides the tied ones): `cluster_weight` C [n-1, d_0] and
    `cluster_bias` b_C [n-1] (absent with one cluster), `biases[i]` b_i [|V_i|], untied
    `out_embeddings[i].embedding` [|V_i|, d_i] (Xavier-uniform) and untied `out_projs[i].kernel`
    Q_i [d_model, d_i] (Xavier-uniform).

    All logits and log-softmaxes are computed in float32, whatever hidden's dtype.
    """

    def __init__(self, vocab_size: int, d_model: int, cutoffs: Sequence[int] = (),
                 factor: float = 4.0, *, d_embed: Optional[int] = None,
                 tie_to: Optional[AdaptiveInput] = None, tie_proj: bool = True,
                 dropout: float = 0.0, init=None, rngs: nnx.Rngs):
        self._set_clusters(vocab_size, d_model, cutoffs)
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
            self.dims = cluster_dims(d_embed or self.d_model, factor, n)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.tied = tie_to is not None
        self.tie_proj = self.tied and bool(tie_proj)   # Q_i = P_i^T, kernels [d_i, d_model]
        if self.tied:
            self.out_embeddings = nnx.List([tie_to.embeddings[i] for i in range(n)])
        else:
            self.out_embeddings = nnx.List([
                nnx.Embed(hi - lo, d, embedding_init=xavier_uniform(), rngs=rngs)
                for (lo, hi), d in zip(self.bounds, self.dims)])
        if not projected(self.dims, self.d_model):
            self.out_projs = None
        elif self.tie_proj:
            self.out_projs = nnx.List([tie_to.projections[i] for i in range(n)])
        else:
            self.out_projs = nnx.List([linear(self.d_model, d, rngs=rngs) for d in self.dims])
        self.biases = nnx.List([nnx.Param(jnp.zeros((hi - lo,), jnp.float32))
                                for lo, hi in self.bounds])
        if n > 1:
            init = init or jax.nn.initializers.normal(self.dims[0] ** -0.5)
            self.cluster_weight = nnx.Param(init(rngs.params(), (n - 1, self.dims[0])))
            self.cluster_bias = nnx.Param(jnp.zeros((n - 1,), jnp.float32))
        else:
            self.cluster_weight = self.cluster_bias = None
        self.dropout_rate = float(dropout)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    # -- pieces
    def _project(self, h, i):
        """z_i = dropout(h Q_i) [.., d_i] (h itself when there are no projections)."""
        if self.out_projs is None:
            return h
        kernel = self.out_projs[i].kernel[...].astype(jnp.float32)
        return self.dropout(h @ kernel.T if self.tie_proj else h @ kernel)

    def _table(self, i):
        return self.out_embeddings[i].embedding[...].astype(jnp.float32)

    def _prepare(self, hidden):
        hidden = jnp.asarray(hidden)
        if hidden.ndim < 1 or hidden.shape[-1] != self.d_model:
            raise ValueError(f"hidden must have shape [..., d_model = {self.d_model}], "
                             f"got {tuple(hidden.shape)}")
        if not jnp.issubdtype(hidden.dtype, jnp.floating):
            raise ValueError(f"hidden must be a floating array, got dtype {hidden.dtype}")
        return hidden.astype(jnp.float32)

    def _head_logits(self, h):
        """[.., |V_0| + n - 1]: shortlist word logits, then the clusters n-1, ..., 1."""
        z = self._project(h, 0)
        logits = z @ self._table(0).T + self.biases[0][...]
        if self.cluster_weight is not None:
            c = z @ self.cluster_weight[...].astype(jnp.float32).T + self.cluster_bias[...]
            logits = jnp.concatenate([logits, c], axis=-1)
        return logits

    def _cluster_column(self, i):
        """The head column of tail cluster i >= 1 (reversed: the last column is cluster 1)."""
        return self.bounds[0][1] + self.num_clusters - 1 - i

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
            tail = self._project(h, i) @ self._table(i).T + self.biases[i][...]
            col = self._cluster_column(i)
            parts.append(jax.nn.log_softmax(tail, axis=-1) + head[..., col, None])
        return jnp.concatenate(parts, axis=-1)

    def nll(self, hidden, targets, *, vocab_chunk: Optional[int] = None) -> jax.Array:
        """Per-token negative log-likelihood -log p(targets | hidden): [..] float32.

        hidden [.., d_model] (any float dtype), targets [..] int with targets.shape ==
        hidden.shape[:-1]. Never forms the |V|-wide distribution: per token it needs the
        head logits, and for each tail cluster only a logsumexp and the target row's logit
        (a gather + dot), with tail terms masked to the tokens whose target is in that
        cluster. Every tail logsumexp is still evaluated for every token (static shapes).

        vocab_chunk: if given, tail logsumexps run over `vocab_chunk` words at a time (scan
          with rematerialisation), bounding memory at [tokens, vocab_chunk] per cluster.
          Same value up to float rounding.

        Concrete targets outside [0, vocab_size) raise ValueError; traced ones are clipped
        into range (their loss is meaningless: mask such positions out).
        """
        h = self._prepare(hidden)
        targets = check_ids("targets", targets, self.vocab_size, shape=h.shape[:-1])
        if vocab_chunk is not None:
            vocab_chunk = positive_int("vocab_chunk", vocab_chunk)
        t = jnp.clip(targets, 0, self.vocab_size - 1)
        cluster = sum(((t >= c).astype(jnp.int32) for c in self.cutoffs),
                      jnp.zeros(t.shape, jnp.int32))
        columns = jnp.asarray([0] + [self._cluster_column(i)
                                     for i in range(1, self.num_clusters)])
        head = self._head_logits(h)
        head_idx = jnp.where(cluster == 0, t, columns[cluster])
        loss = (jax.nn.logsumexp(head, axis=-1)
                - jnp.take_along_axis(head, head_idx[..., None], axis=-1)[..., 0])
        for i in range(1, self.num_clusters):
            lo, hi = self.bounds[i]
            z = self._project(h, i)                                        # [.., d_i]
            table, bias = self._table(i), self.biases[i][...]              # [|V_i|, d_i]
            row = jnp.clip(t - lo, 0, hi - lo - 1)
            target_logit = jnp.sum(z * table[row], axis=-1) + bias[row]
            if vocab_chunk is None or vocab_chunk >= hi - lo:
                lse = jax.nn.logsumexp(z @ table.T + bias, axis=-1)
            else:
                lse = _chunked_logsumexp(z, table, bias, vocab_chunk)
            loss = loss + jnp.where(cluster == i, lse - target_logit, 0.0)
        return loss
