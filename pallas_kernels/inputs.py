"""Shape checks of the SRU recurrence's inputs, shared by every backend: the pure-JAX ones in
`srupp_jax.nn.recurrence` and the kernels here (this package imports nothing from srupp_jax).

    U: [batch, length, k, d], k = 3 (candidate, forget, reset) or 4 (plus the skip term x')
    v, b: [2, d] (forget row, reset row); x: [batch, length, d] or None (only when k = 3)
    c0, mask_c: [batch, d] or None; mask_pad: [batch, length] or None
"""


def check_inputs(U, v, b, x=None, c0=None, mask_c=None, mask_pad=None) -> None:
    """Raise ValueError naming the first input whose shape does not fit (see above)."""
    if U.ndim != 4 or U.shape[2] not in (3, 4):
        raise ValueError(f"U has shape {U.shape}; expected [batch, length, k, d] with k = 3 "
                         "(candidate, forget, reset) or 4 (plus the skip term x')")
    batch, length, k, d = U.shape
    if length < 1 or batch < 1 or d < 1:
        raise ValueError(f"U has shape {U.shape}; batch, length and d must be >= 1")
    for name, arr in (("v", v), ("b", b)):
        if arr.shape != (2, d):
            raise ValueError(f"{name} has shape {arr.shape}; expected (2, {d}) "
                             "(forget row, reset row)")
    if x is not None:
        if k == 4:
            raise ValueError("x must be None when U carries the skip term (k = 4)")
        if x.shape != (batch, length, d):
            raise ValueError(f"x has shape {x.shape}; expected {(batch, length, d)}")
    for name, arr in (("c0", c0), ("mask_c", mask_c)):
        if arr is not None and arr.shape != (batch, d):
            raise ValueError(f"{name} has shape {arr.shape}; expected {(batch, d)}")
    if mask_pad is not None and mask_pad.shape != (batch, length):
        raise ValueError(f"mask_pad has shape {mask_pad.shape}; expected {(batch, length)}")
