"""Linear layers for a few rows on the CPU, as the transposed product W @ x^T.

MKL's GEMM for x (M, K) times W^T with 2 <= M <= 64 rows runs far below the memory
bandwidth on small CPUs; the same product computed as W (N, K) @ x^T (K, M) does not.
Measured on the 2-core CI machine (float32, ms per matrix, 4 rows, a one-off probe):
576x576 0.18 -> 0.09, 1536x576 0.59 -> 0.28, 576x1536 0.45 -> 0.31, 49152x576 22.9 -> 7.4;
one row and hundreds of rows are as fast or faster the usual way. Over a SmolLM2 forward
the GEMMs of a 4-token verification went from 70 to 44 ms
(experiments/results/cpu_forward_profile_smollm2{_before,}.json).
The sums run in another order, so results may differ in the last bits.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

FEW_ROWS = 64  # the transposed product is used for 2 .. FEW_ROWS rows


def product(
    weight: Tensor, x: Tensor, bias: Tensor | None = None, max_rows: int | None = FEW_ROWS
) -> Tensor:
    """x (..., K) @ weight (N, K)^T (+ bias) -> (..., N); on the CPU with 2 .. max_rows
    rows (None: no upper limit) as (W @ x^T)^T."""
    rows = x.numel() // x.shape[-1]
    if x.device.type != "cpu" or rows < 2 or (max_rows is not None and rows > max_rows):
        return F.linear(x, weight, bias)
    flat = x.reshape(rows, x.shape[-1])  # (M, K)
    out = (weight @ flat.T).T.contiguous()  # (M, N); row-major for what follows
    if bias is not None:
        out += bias
    return out.reshape(*x.shape[:-1], out.shape[-1])


def linear(layer: nn.Linear, x: Tensor, max_rows: int | None = FEW_ROWS) -> Tensor:
    """layer(x) through ``product``."""
    return product(layer.weight, x, layer.bias, max_rows)


def mlp(module: nn.Module, x: Tensor) -> Tensor:
    """A gated MLP (Llama / Qwen2: down(act(gate(x)) * up(x))) through ``linear``."""
    gate = linear(module.gate_proj, x)  # (..., I)
    return linear(module.down_proj, module.act_fn(gate) * linear(module.up_proj, x))
