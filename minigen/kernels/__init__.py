"""Triton kernels for the course's models, each beside the plain PyTorch version it must match (DESIGN section 5).

    attention(q, k, v, *, causal=False, key_padding_mask=None, scale=None, backend=None)     q, k, v (B, H, N, D)
    layernorm_modulate(x, shift, scale, *, eps=1e-6, backend=None)                           x (B, N, C), (B, C)
    gated_residual(x, y, gate, *, backend=None)                                              x, y (B, N, C), (B, C)
    groupnorm_silu(x, num_groups, weight, bias, *, eps=1e-5, backend=None)                   x (B, C, H, W)
    temporal_attention(q, k, v, *, causal=False, scale=None, backend=None)       q, k, v (B, T, S, H, D), any strides

and `<name>_reference` for each, with the same signature. Every function picks its backend per call: Triton for
CUDA tensors on compute capability >= 8.0 where a recorded GPU measurement shows the kernel winning for that kind of
call (`_dispatch.TRITON_WINS`: today the norms' forwards, i.e. calls autograd does not record); otherwise PyTorch
SDPA for attention and temporal attention (CPU and GPU; temporal: permute -> SDPA -> permute) and the reference
for the norms. `backend=` or `MINIGEN_KERNELS=reference|sdpa|triton` override the choice (Triton on CPU tensors
runs in Triton's interpreter, which needs TRITON_INTERPRET=1 before triton is imported). Triton is optional: without
it this package imports and everything runs on SDPA and the references. The modules are `flash_attention`, `norm`
and `temporal_attention` (here the name `temporal_attention` is the function; `from minigen.kernels.temporal_attention
import ...` reaches the module's other names).
"""
from . import flash_attention, norm
from ._dispatch import triton_can_run
from .flash_attention import attention, attention_flops, attention_reference
from .norm import (gated_residual, gated_residual_reference, groupnorm_silu, groupnorm_silu_reference,
                   layernorm_modulate, layernorm_modulate_reference)
from .temporal_attention import temporal_attention, temporal_attention_flops, temporal_attention_reference

__all__ = ["attention", "attention_reference", "attention_flops", "layernorm_modulate",
           "layernorm_modulate_reference", "gated_residual", "gated_residual_reference", "groupnorm_silu",
           "groupnorm_silu_reference", "temporal_attention", "temporal_attention_reference", "temporal_attention_flops",
           "triton_can_run"]
