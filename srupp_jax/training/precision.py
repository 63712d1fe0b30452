"""Which compute dtype suits a device (`train.compute_dtype`): what the notebook and the
README's per-card advice use.

    dtype, why = precision.for_device(jax.devices()[0])

bfloat16 where the hardware computes it fast: TPUs, and NVIDIA GPUs of compute capability 8.0
or newer (A100, A10, L4, RTX 30xx/40xx, H100, H200). float16 with loss scaling on older GPUs
(T4 7.5, V100 7.0, P100 6.0), which have float16 tensor cores or units but no fast bfloat16.
float32 on a CPU. Reasoned from the hardware's data sheets, not measured here (no GPU has been
at hand; benchmarks/gpu_all.sh measures both dtypes when one is).
"""
from __future__ import annotations

FAST_BF16_CAPABILITY = 8.0     # NVIDIA Ampere and newer


def for_device(device) -> tuple[str, str]:
    """(compute dtype name, one line saying why) for a jax Device."""
    platform, kind = device.platform, getattr(device, "device_kind", "") or ""
    if platform == "tpu":
        return "bfloat16", f"{kind or 'TPU'}: bfloat16 is the TPU's native fast dtype"
    if platform == "gpu":
        try:
            capability = float(getattr(device, "compute_capability", "") or 0.0)
        except ValueError:
            capability = 0.0
        if capability >= FAST_BF16_CAPABILITY:
            return "bfloat16", (f"{kind} (compute capability {capability:g}): fast bfloat16, "
                                "no loss scaling needed")
        if capability:
            return "float16", (f"{kind} (compute capability {capability:g}): no fast bfloat16; "
                               "float16 with dynamic loss scaling")
        return "float32", f"{kind}: compute capability unknown, float32 to be safe"
    return "float32", f"{platform.upper()}: float32 (reduced precision brings no speed here)"
