"""Probe: how fast can Triton run the verification's prefix attention on this card (GPU)?

python experiments/gpu/attn_probe.py OUT.json
The 70 tree tokens of a Llama-8B-shaped layer (32 query heads, 8 KV heads, head dim 128)
over a full prefix of 8k / 32k / 128k cached keys, no mask: the bulk of the verification's
attention, which ``split_kernel`` ran at ~290 TFLOP/s when this probe was written (~365
after the pipelining fix it led to; see ``tune_kernel.py stages``). Times, in CUDA graphs,
the project's ``split_attention_lse`` and a bare split-K probe kernel in two load styles
(pointer loads of K as (D, BN), as the project does; TMA tensor descriptors of K and V as
(BN, D) tiles) over block sizes, warps, pipeline depth and Hopper warp specialisation, plus
sdpa's cuDNN, flash and memory-efficient attention (GQA expanded) as the card's references.
Prints TFLOP/s per variant.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
from collections.abc import Callable, Iterator

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.tools.tensor_descriptor import TensorDescriptor
from tune_kernel import graphed  # this folder (run as a script)

from longspec.attention import split_kernel as sk
from longspec.bench.timing import Timing

LOG2E = 1.4426950408889634
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _probe(
    q_ptr, k_ptr, v_ptr, k_desc, v_desc, o_ptr, lse_ptr, n_keys, split_len, group, n_tokens,
    n_kv, scale, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, TMA: tl.constexpr,
    STAGES: tl.constexpr, WS: tl.constexpr, NB: tl.constexpr,
):  # fmt: skip
    """One key split of one KV head for BM query rows (head-group, token); no mask."""
    mblock, split, h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = mblock * BM + tl.arange(0, BM)  # (BM,)
    row_ok = rows < group * n_tokens
    qh = h * group + rows // n_tokens
    t = rows % n_tokens
    dims = tl.arange(0, D)
    q = tl.load(q_ptr + ((qh * n_tokens + t) * D)[:, None] + dims[None, :], row_ok[:, None], 0.0)
    m_i = tl.full((BM,), float("-inf"), tl.float32)
    l_i = tl.zeros((BM,), tl.float32)
    acc = tl.zeros((BM, D), tl.float32)
    start = split * split_len  # the host makes split_len divide n_keys
    end = start + split_len
    base = h * n_keys  # row of this head's first key in the (Hkv * S, D) view
    for i in tl.range(
        0, NB if NB > 0 else (end - start) // BN, num_stages=STAGES, warp_specialize=WS
    ):  # NB > 0: the interpreter's constant trip count
        n0 = start + i * BN
        if TMA:
            k = k_desc.load([base + n0, 0])  # (BN, D)
            v = v_desc.load([base + n0, 0])  # (BN, D)
            s = tl.dot(q, tl.trans(k)) * scale  # (BM, BN)
        else:
            keys = n0 + tl.arange(0, BN)
            kt = tl.load(k_ptr + (base + keys)[None, :] * D + dims[:, None])  # (D, BN)
            v = tl.load(v_ptr + (base + keys)[:, None] * D + dims[None, :])  # (BN, D)
            s = tl.dot(q, kt) * scale
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    out = acc / l_i[:, None]
    n_rows = n_kv * group * n_tokens
    flat = h * group * n_tokens + rows  # (BM,) row index among all (head, token) rows
    tl.store(o_ptr + (split * n_rows + flat)[:, None] * D + dims[None, :], out, row_ok[:, None])
    tl.store(lse_ptr + split * n_rows + flat, m_i + tl.log2(l_i), row_ok)


def probe_call(
    q: Tensor, k: Tensor, v: Tensor, bm: int, bn: int, warps: int, stages: int, tma: bool,
    ws: bool, target_programs: int = 512,
) -> tuple[Callable[[], None], tuple[Tensor, Tensor]]:  # fmt: skip
    """A callable running the probe kernel (partials only, no merge) on q (Hq, T, D),
    k/v (Hkv, S, D)."""
    hq, n_tokens, d = q.shape
    n_kv, n_keys = k.shape[0], k.shape[1]
    group = hq // n_kv
    n_m = math.ceil(group * n_tokens / bm)
    wanted = max(1, min(math.ceil(target_programs / (n_m * n_kv)), n_keys // bn))
    n_splits = triton.next_power_of_2(wanted)  # n_keys and bn are powers of two
    split_len = n_keys // n_splits
    o = torch.empty(n_splits, n_kv * group * n_tokens, d, device=q.device)
    lse = torch.empty(n_splits, n_kv * group * n_tokens, device=q.device)
    k2, v2 = k.reshape(-1, d), v.reshape(-1, d)
    kd = TensorDescriptor(k2, list(k2.shape), list(k2.stride()), [bn, d])
    vd = TensorDescriptor(v2, list(v2.shape), list(v2.stride()), [bn, d])
    grid = (n_m, n_splits, n_kv)

    def call():
        _probe[grid](
            q, k2, v2, kd, vd, o, lse, n_keys, split_len, group, n_tokens, n_kv,
            d**-0.5 * LOG2E, D=d, BM=bm, BN=bn, TMA=tma, STAGES=stages, WS=ws,
            NB=split_len // bn if INTERPRET else 0,
            num_warps=warps,
        )  # fmt: skip

    return call, (o, lse)


def reference(q, k, v) -> torch.Tensor:
    """(Hq, T, D) exact attention in float32."""
    group = q.shape[0] // k.shape[0]
    kk = k.float().repeat_interleave(group, 0)
    vv = v.float().repeat_interleave(group, 0)
    w = torch.softmax(q.float() @ kk.transpose(1, 2) * q.shape[-1] ** -0.5, -1)
    return w @ vv


def merged(o: Tensor, lse: Tensor, shape: torch.Size) -> Tensor:
    """Exact merge of the probe's partials o (S, rows, D), lse (S, rows) (log2 units)."""
    w = torch.softmax(lse * math.log(2), 0)  # (S, rows)
    return (w[..., None] * o).sum(0).view(shape)


def variants(q: Tensor, k: Tensor, v: Tensor) -> Iterator[tuple[str, Callable, Callable]]:
    """(name, callable, output callable) of every variant for one context."""
    hq, hkv = q.shape[0], k.shape[0]
    lengths = torch.tensor([k.shape[1]], device="cuda")
    qb, kb, vb = q[None], k[None], v[None]
    yield (
        "project split_attention_lse",
        lambda: sk.split_attention_lse(qb, kb, vb, lengths),
        lambda: sk.split_attention_lse(qb, kb, vb, lengths)[0][0],
    )
    kx = k.repeat_interleave(hq // hkv, 0)[None]  # (1, Hq, S, D)
    vx = v.repeat_interleave(hq // hkv, 0)[None]
    for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
        kind = getattr(torch.nn.attention.SDPBackend, backend)

        def sdpa(kind=kind):
            with torch.nn.attention.sdpa_kernel(kind):
                return torch.nn.functional.scaled_dot_product_attention(qb, kx, vx)

        yield f"sdpa {backend} (GQA expanded)", sdpa, lambda s=sdpa: s()[0]
    settings = itertools.product([64, 128], [64, 128], [4, 8], [2, 3], [False, True], [False, True])
    for bm, bn, warps, stages, tma, ws in settings:
        if bm == 128 and warps == 4 and bn == 128:
            continue
        call, (o, lse) = probe_call(q, k, v, bm, bn, warps, stages, tma, ws)
        load = ("tma" if tma else "ptr") + (" ws" if ws else "")
        out = lambda c=call, o=o, lse=lse: (c(), merged(o, lse, q.shape))[1]  # noqa: E731
        yield f"probe m{bm} n{bn} w{warps} s{stages} {load}", call, out


def measure(ctx: int, timing: Timing) -> list[dict]:
    """Every variant at one context: microseconds, TFLOP/s, max error against float32."""
    hq, hkv, d, n_tokens = 32, 8, 128, 70
    q = torch.randn(hq, n_tokens, d, device="cuda", dtype=torch.float16)
    k = torch.randn(hkv, ctx, d, device="cuda", dtype=torch.float16)
    v = torch.randn_like(k)
    flops = 4 * hq * n_tokens * ctx * d
    ref = reference(q, k, v) if ctx <= 32768 else None
    rows = []
    for name, fn, out in variants(q, k, v):
        try:
            sec = timing.median(graphed(fn)) / 20
        except Exception as err:  # a variant this card or compiler refuses
            print(f"| {ctx} | {name} | failed: {str(err)[:150]} |")
            continue
        err = None if ref is None else float((out() - ref).abs().max())
        tflops = flops / sec / 1e12
        rows.append({"context": ctx, "variant": name, "us": sec * 1e6, "tflops": tflops,
                     "max_err": err})  # fmt: skip
        print(f"| {ctx} | {name} | {sec * 1e6:.1f} us | {tflops:.0f} TFLOP/s | {err} |")
    return rows


def main(path: str) -> None:
    torch.manual_seed(0)
    timing = Timing(torch.device("cuda"), reps=10, warmup=2)
    rows = []
    for ctx in (8192, 32768, 131072):
        rows += measure(ctx, timing)
        torch.cuda.empty_cache()
    with open(path, "w") as f:
        json.dump({"card": torch.cuda.get_device_name(), "triton": triton.__version__,
                   "torch": torch.__version__, "rows": rows}, f, indent=2)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
