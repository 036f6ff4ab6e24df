"""Few-row CPU linears (W @ x^T) equal nn.Linear; other row counts take nn.Linear itself."""

import pytest
import torch
from torch import nn

from longspec.models import cpu_linear


@pytest.mark.parametrize("rows", [1, 2, 4, 17, 64, 65, 300])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_equals_the_module(rows, bias):
    torch.manual_seed(rows)
    layer = nn.Linear(48, 80, bias=bias)
    x = torch.randn(1, rows, 48)  # (B, T, K)
    out = cpu_linear.linear(layer, x)
    assert out.shape == (1, rows, 80) and out.is_contiguous()
    if 2 <= rows <= cpu_linear.FEW_ROWS:
        assert torch.allclose(out, layer(x), atol=1e-5)
    else:  # one row, or many: the module's own product
        assert torch.equal(out, layer(x))


def test_unbounded_rows_for_the_lm_head():
    torch.manual_seed(0)
    head = nn.Linear(32, 500, bias=False)
    x = torch.randn(2, 100, 32)  # 200 rows
    assert torch.allclose(cpu_linear.linear(head, x, max_rows=None), head(x), atol=1e-5)


def test_gated_mlp_matches_the_transformers_module():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    torch.manual_seed(1)
    mlp = LlamaMLP(LlamaConfig(hidden_size=32, intermediate_size=72, hidden_act="silu"))
    h = torch.randn(1, 5, 32)
    assert torch.allclose(cpu_linear.mlp(mlp, h), mlp(h), atol=1e-5)
