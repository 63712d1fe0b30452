"""Fast inference: sampling and compiled token-by-token generation with carried state.

  sample_logits(key, logits, temperature=, top_k=, top_p=)   one token per row
  generate(model, prompt, num_tokens, key=, mem_len=, ...)   [B, num_tokens] at once
  generate_iter(model, prompt, num_tokens, key=, ...)        the same, in blocks as it goes

Generation runs the model in evaluation mode. The prompt (all but its last token) is fed in
chunks of `chunk` tokens (default mem_len) carrying `LMState`, so a prompt longer than the
attention memory works; then every new token is one step of a single compiled `jax.lax.scan`
that runs the model on the last token [B, 1] with the carried state and samples the next one.

Attention window: while decoding, a token attends to the last `mem_len` positions plus itself
(the memory keeps the layer inputs of the last mem_len positions). The prompt chunks use the
same sliding window (an explicit band mask: position p sees p - mem_len .. p), so the result
is exactly what feeding the prompt one token at a time would give, whatever `chunk` is.

Randomness: step i (counted from the first generated token) samples with
`jax.random.fold_in(key, i)`, so the same key gives the same tokens whether they are produced
in one scan (`generate`) or in blocks (`generate_iter`).
"""
from __future__ import annotations

import functools
from typing import Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# ----------------------------------------------------------------------------------------------
from srupp_jax.models.base import split_for_eval
from srupp_jax.models.lm import LMState

# ----------------------------------------------------------------------------------------------
from srupp_jax.models.srupp_lm import SRUppLM
from srupp_jax.nn.attention import attention_mask

# ----------------------------------------------------------------------------------------------
# Sampling.
# ----------------------------------------------------------------------------------------------

def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """ValueError naming the bad value."""
    if not temperature >= 0:  # also catches NaN
        raise ValueError(f"temperature={temperature}; expected >= 0 (0 = greedy)")
    if int(top_k) != top_k or top_k < 0:
        raise ValueError(f"top_k={top_k}; expected an integer >= 0 (0 = no top-k filter)")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p}; expected 0 < top_p <= 1 (1 = no nucleus filter)")


def sample_logits(key, logits, *, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> jax.Array:
    """Sample one token per row of logits [B, V] (any scale: log-probabilities work too).

    temperature 0: greedy (argmax; top_k / top_p are then irrelevant). Otherwise the logits
    are divided by the temperature, then top_k > 0 keeps the k largest, top_p < 1 keeps the
    smallest set of most likely tokens whose cumulative probability is >= top_p (the most
    likely token is always kept), and one token is drawn from the renormalised rest.
    Returns [B] int32. The settings are Python values (static under jit).
    """
    check_sampling(temperature, top_k, top_p)
    logits = jnp.asarray(logits, jnp.float32)
    if logits.ndim != 2:
        raise ValueError(f"logits has shape {logits.shape}; expected [batch, vocab]")
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    neg = jnp.finfo(jnp.float32).min
    logits = logits / temperature
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits >= kth, logits, neg)
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of the strictly more likely tokens
        keep_sorted = before < top_p                 # first token always kept (before = 0)
        keep = jnp.zeros_like(keep_sorted).at[
            jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
        logits = jnp.where(keep, logits, neg)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


# ----------------------------------------------------------------------------------------------
# Model pieces.
# ----------------------------------------------------------------------------------------------

def _window(tokens, state: LMState):
    """The sliding-window mask for a chunk: each position sees the last mem_len positions and
    itself, exactly what one token at a time with the same memory sees."""
    return attention_mask(tokens.shape[1], state.memory_pad.shape[1],
                          window=state.memory_pad.shape[1])


def windowed_hidden(model: SRUppLM, tokens, state: LMState):
    """`model.hidden(tokens, state)` under the sliding window of the state's memory length."""
    return model.hidden(tokens, state, attend=_window(tokens, state))


def windowed_log_probs(model: SRUppLM, tokens, state: LMState):
    """log-probabilities [B, L, V] and new state of `windowed_hidden`."""
    return model.log_probs(tokens, state, attend=_window(tokens, state))


# ----------------------------------------------------------------------------------------------
# Compiled steps: the graphdef (hashable) and the sampling settings are static arguments, so
# jax.jit's own cache keeps one compiled function per model structure and settings.
# ----------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("graphdef",))
def _prefill(graphdef, params, rest, state, tokens):
    """The state after feeding `tokens` [B, L] (sliding window of the memory)."""
    model = nnx.merge(graphdef, params, rest)
    return windowed_hidden(model, tokens, state)[1]


@functools.partial(jax.jit, static_argnames=("graphdef", "steps", "temperature", "top_k",
                                             "top_p"))
def _decode(graphdef, params, rest, state, last, start, key, *, steps: int,
            temperature: float, top_k: int, top_p: float):
    """(tokens [B, steps], state, last [B]): one scan of `steps` model calls on [B, 1]."""
    model = nnx.merge(graphdef, params, rest)

    def step(carry, i):
        state, tok = carry
        logp, state = model.log_probs(tok[:, None], state)
        nxt = sample_logits(jax.random.fold_in(key, start + i), logp[:, 0],
                            temperature=temperature, top_k=top_k, top_p=top_p)
        return (state, nxt), nxt

    (state, last), out = jax.lax.scan(step, (state, last), jnp.arange(steps))
    return out.T, state, last


# ----------------------------------------------------------------------------------------------
# Generation.
# ----------------------------------------------------------------------------------------------

def generate_iter(model: SRUppLM, prompt, num_tokens: int, *, key, mem_len: int,
                  temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  chunk: Optional[int] = None, block: int = 32) -> Iterator[np.ndarray]:
    """Yield the generated tokens in blocks: numpy [B, <= block] int32 arrays, each produced by
    one compiled scan of that many steps (the last block may be shorter and compiles once more).
    Concatenated they equal `generate(...)` with the same arguments. See `generate`."""
    prompt = jnp.asarray(prompt)
    if prompt.ndim != 2 or prompt.shape[1] < 1 or not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise ValueError(f"prompt has shape {prompt.shape} dtype {prompt.dtype}; expected "
                         "[batch, length >= 1] integers")
    if num_tokens < 0:
        raise ValueError(f"num_tokens={num_tokens}; expected >= 0")
    if mem_len < 0:
        raise ValueError(f"mem_len={mem_len}; expected >= 0")
    chunk = chunk or max(mem_len, 1)
    if chunk < 1:
        raise ValueError(f"chunk={chunk}; expected >= 1")
    if block < 1:
        raise ValueError(f"block={block}; expected >= 1")
    check_sampling(temperature, top_k, top_p)
    temperature, top_k, top_p = float(temperature), int(top_k), float(top_p)
    prompt = prompt.astype(jnp.int32)
    graphdef, params, rest = split_for_eval(model)
    state = model.init_state(prompt.shape[0], mem_len)
    context = prompt[:, :-1]
    for s in range(0, context.shape[1], chunk):
        state = _prefill(graphdef, params, rest, state, context[:, s:s + chunk])
    last = prompt[:, -1]
    done = 0
    while done < num_tokens:
        n = min(block, num_tokens - done)
        out, state, last = _decode(graphdef, params, rest, state, last, jnp.int32(done), key,
                                   steps=n, temperature=temperature, top_k=top_k, top_p=top_p)
        done += n
        yield np.asarray(out)


def generate(model: SRUppLM, prompt, num_tokens: int, *, key, mem_len: int,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             chunk: Optional[int] = None) -> jax.Array:
    """Continue prompt [B, P >= 1] int by num_tokens sampled tokens: [B, num_tokens] int32.

    Evaluation mode (no dropout). mem_len: attention memory (each new token attends to the last
    mem_len positions and itself); chunk: prompt tokens fed per call (default mem_len).
    The num_tokens decoding steps are one compiled `jax.lax.scan`. Sampling as in
    `sample_logits` (applied to the model's log-probabilities); same key -> same tokens.
    """
    blocks = list(generate_iter(model, prompt, num_tokens, key=key, mem_len=mem_len,
                                temperature=temperature, top_k=top_k, top_p=top_p,
                                chunk=chunk, block=max(num_tokens, 1)))
    if not blocks:
        return jnp.zeros((jnp.asarray(prompt).shape[0], 0), jnp.int32)
    return jnp.asarray(blocks[0])


