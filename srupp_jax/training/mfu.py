"""Model FLOPs utilisation (MFU) of a training run.

  peak_flops_per_device()          dense bf16 peak of jax.devices()[0] from a table, None if
                                   unknown.
  mfu(tokens_per_sec, flops_per_token, peak_flops)   model FLOPs utilisation, None if no peak.

The FLOPs per token come from the model (`model.flops_per_token`, srupp_jax.models.flops).
"""
from __future__ import annotations

from typing import Optional

#: Dense bf16 peak FLOP/s per device (chip), matched by substring of `device_kind`
#: (lower-case), first match wins, so specific names come before general ones.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("h100 pcie", 756e12),
    ("h100 nvl", 835e12),
    ("h100", 989e12),          # SXM
    ("h200", 989e12),
    ("gh200", 989e12),
    ("a100", 312e12),
    ("v100", 125e12),
    ("tpu v4", 275e12),
    ("tpu v5 lite", 197e12),   # v5e
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),        # v5p reports "TPU v5"
    ("tpu v6 lite", 918e12),   # v6e (Trillium)
    ("tpu v6e", 918e12),
)


def peak_flops_per_device(device_kind: Optional[str] = None) -> Optional[float]:
    """Dense bf16 peak FLOP/s of one device, from PEAK_FLOPS; None for CPU or unknown kinds.

    device_kind: defaults to `jax.devices()[0].device_kind`."""
    if device_kind is None:
        import jax
        device_kind = jax.devices()[0].device_kind
    kind = device_kind.lower()
    if "cpu" in kind:
        return None
    for key, peak in PEAK_FLOPS:
        if key in kind:
            return peak
    return None


def mfu(tokens_per_sec: float, flops_per_token: float, peak_flops: Optional[float], *,
        num_devices: int = 1) -> Optional[float]:
    """Model FLOPs utilisation: tokens_per_sec * flops_per_token / (peak_flops * num_devices).

    tokens_per_sec is the throughput of all `num_devices` together; peak_flops is per device
    (`peak_flops_per_device()`). None when peak_flops is None (CPU / unknown device)."""
    if peak_flops is None or peak_flops <= 0:
        return None
    if num_devices < 1:
        raise ValueError(f"num_devices={num_devices}; expected >= 1")
    return float(tokens_per_sec) * float(flops_per_token) / (float(peak_flops) * num_devices)
