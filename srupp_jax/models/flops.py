"""The FLOPs of a training token of an SRU++ model (what MFU divides by).

  estimate_flops_per_token(..)     the SRU++ count (formula below); every model counts its own
                                   (`model.flops_per_token(attn_len)`, SRUppLM with this).

The device's peak and the utilisation itself are the trainer's (srupp_jax.training.mfu).
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence

from srupp_jax.nn.clusters import matrix_weights

#: Forward FLOPs per hidden unit per token of one layer's elementwise work (the SRU
#: recurrence c_t = f*c_{t-1} + (1-f)*U, the gates with their v*c terms, the highway output,
#: the alpha residual, layer norm): a rough constant; it is O(d) and small next to the
#: matmuls (e.g. 3 * 30 * d vs 6 * 3 * d * d' per layer).
ELEMENTWISE_FLOPS_PER_D = 30


def estimate_flops_per_token(d: int, d_proj: int, num_layers: int, attn_layers: int,
                             vocab_size: int, attn_len: float, d_in: Optional[int] = None,
                             adaptive: bool = False, *, cutoffs: Optional[Sequence[int]] = None,
                             adaptive_factor: float = 4.0, d_embed: Optional[int] = None,
                             include_elementwise: bool = True) -> float:
    """Forward + backward FLOPs per training token of an SRU++ language model.

    Matmuls count 6 FLOPs per weight per token (2 forward, 4 backward: input and weight
    gradients). With d' = d_proj, per token:

      attention layer  (W_q d_in x d', W_kv d' x 2d', W_o d' x 3d):
                        6 * (d_in*d' + 2*d'^2 + 3*d*d')  +  3 * 4 * attn_len * d'
                        (the last term: q.k scores 2*attn_len*d' and the weighted sum of values
                        2*attn_len*d' forward, x3 for forward+backward; summed over heads)
      projection layer (W_1 d_in x d', W_2 d' x 3d):   6 * (d_in*d' + 3*d*d')
      every layer      3 * ELEMENTWISE_FLOPS_PER_D * d   (recurrence, gates, norms; rough)
      output, char model (adaptive=False):  6 * d * vocab_size
      output, adaptive=True (adaptive input + tied adaptive softmax, cluster widths
        d_i = int(d_embed // factor**i) (d_embed default d), |V_i| from `cutoffs`), counted
        as the JAX code runs it, every cluster for every token (clusters.matrix_weights):
          projections (input and softmax; none when every d_i = d)  sum_i 6 * 2 * d * d_i
          softmax head  6 * d_0 * (|V_0| + n - 1);  tails sum_{i>=1} 6 * d_i * |V_i|
      (embedding lookups and biases are not counted.)

    d_in is the input width of layer 1 (the embedding size; default d); later layers take d.
    The first matrix of both layer kinds is (input width x d'), so where the attention layers
    sit does not matter. attn_len is the number of keys each query attends to: for training
    with unroll M and memory M, 2M counts the full (masked) score matrix as computed, and
    M + (M+1)/2 counts only the unmasked entries. Returns a float.
    """
    for name, v in (("d", d), ("d_proj", d_proj), ("num_layers", num_layers),
                    ("vocab_size", vocab_size)):
        if v < 1:
            raise ValueError(f"{name}={v}; expected >= 1")
    if not 0 <= attn_layers <= num_layers:
        raise ValueError(f"attn_layers={attn_layers}; expected 0 <= attn_layers <= "
                         f"num_layers={num_layers}")
    if attn_len < 0:
        raise ValueError(f"attn_len={attn_len}; expected >= 0")
    d_in = d if d_in is None else d_in
    dp = d_proj

    attn_common = 2 * dp * dp + 3 * d * dp                        # W_kv, W_o
    proj_common = 3 * d * dp                                      # W_2
    # first matrices: layer 1 reads d_in, the others d
    first = (d_in + (num_layers - 1) * d) * dp
    layer_weights = (first + attn_layers * attn_common
                     + (num_layers - attn_layers) * proj_common)
    flops = 6.0 * layer_weights
    flops += 3.0 * 4.0 * attn_len * dp * attn_layers
    if include_elementwise:
        flops += 3.0 * ELEMENTWISE_FLOPS_PER_D * d * num_layers

    if not adaptive:
        if cutoffs:
            raise ValueError("cutoffs given with adaptive=False")
        flops += 6.0 * d * vocab_size
    else:
        if cutoffs is None:
            warnings.warn("estimate_flops_per_token(adaptive=True) without cutoffs counts a "
                          "single-cluster (full) softmax; pass cutoffs= and adaptive_factor= "
                          "for the adaptive model's real cost", stacklevel=2)
        flops += 6.0 * matrix_weights(vocab_size, d, list(cutoffs or []), adaptive_factor,
                                      d_embed)
    return float(flops)
