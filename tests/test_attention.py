"""Every attention backend equals the eager reference; hybrid equals dense tree masking."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longspec.attention import HybridAttention, Prefix, eager_attention, sdpa_attention
from longspec.attention.hybrid import merge_lse
from longspec.tree import ancestor_mask

BACKENDS = {"sdpa": sdpa_attention, "hybrid": HybridAttention()}


def random_tree_mask(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """(B, n, n) ancestor mask of random trees (node 0 root, parents before children)."""
    parents = torch.full((batch, n), -1, dtype=torch.long)
    for i in range(1, n):
        parents[:, i] = torch.randint(0, i, (batch,), generator=gen)
    return ancestor_mask(parents)


def make_case(batch, hq, hkv, cap, n_new, dim, gen, dtype=torch.float32, device="cpu"):
    q = torch.randn(batch, hq, n_new, dim, generator=gen).to(device, dtype)
    k = torch.randn(batch, hkv, cap, dim, generator=gen).to(device, dtype)
    v = torch.randn(batch, hkv, cap, dim, generator=gen).to(device, dtype)
    kn = torch.randn(batch, hkv, n_new, dim, generator=gen).to(device, dtype)
    vn = torch.randn(batch, hkv, n_new, dim, generator=gen).to(device, dtype)
    lengths = torch.randint(1, cap + 1, (batch,), generator=gen).to(device)
    mask = random_tree_mask(batch, n_new, gen).to(device)
    return q, Prefix(k, v, lengths), kn, vn, mask


def dense_reference(q, prefix, kn, vn, mask):
    """Float64 attention over the whole context with one materialised mask."""
    used = prefix.used()
    k = torch.cat([prefix.k[:, :, :used], kn], 2).double()
    v = torch.cat([prefix.v[:, :, :used], vn], 2).double()
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    slots = torch.arange(used)
    vis = slots[None, None, :] < prefix.lengths[:, None, None].cpu()
    full = torch.cat([vis.expand(-1, q.shape[2], -1), mask.cpu()], -1)[:, None]
    s = (q.double() @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    s = s.masked_fill(~full.to(s.device), float("-inf"))
    return torch.softmax(s, -1) @ v


@pytest.mark.parametrize("name", sorted(BACKENDS))
@pytest.mark.parametrize("prefix_len", [1, 17, 300, 8192])
@pytest.mark.parametrize("n_new", [1, 5, 69, 128])
def test_backends_match_dense_reference(name, prefix_len, n_new):
    gen = torch.Generator().manual_seed(prefix_len * 131 + n_new)
    q, prefix, kn, vn, mask = make_case(1, 4, 2, prefix_len, n_new, 16, gen)
    prefix.lengths[:] = prefix_len
    ref = dense_reference(q, prefix, kn, vn, mask)
    out = BACKENDS[name](q, prefix, kn, vn, mask)
    assert (out.double() - ref).abs().max() <= 1e-5


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    groups=st.sampled_from([(4, 4), (4, 2), (6, 1)]),
    cap=st.integers(1, 64),
    n_new=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_backends_match_eager_on_random_batches(batch, groups, cap, n_new, seed):
    gen = torch.Generator().manual_seed(seed)
    q, prefix, kn, vn, mask = make_case(batch, groups[0], groups[1], cap, n_new, 8, gen)
    ref = eager_attention(q, prefix, kn, vn, mask)
    assert (ref.double() - dense_reference(q, prefix, kn, vn, mask)).abs().max() <= 1e-5
    for backend in BACKENDS.values():
        assert (backend(q, prefix, kn, vn, mask) - ref).abs().max() <= 1e-5


def written_in_flight(prefix: Prefix, kn, vn) -> Prefix:
    """The prefix with the tokens in flight written at slots lengths[b] + t of a buffer
    with room for them (as the target does before attending), the rest left random."""
    batch, heads, n_new, dim = kn.shape
    cap = prefix.k.shape[2] + n_new + 3
    k = torch.randn(batch, heads, cap, dim, dtype=kn.dtype)
    v = torch.randn_like(k)
    k[:, :, : prefix.k.shape[2]], v[:, :, : prefix.v.shape[2]] = prefix.k, prefix.v
    for b, length in enumerate(prefix.lengths.tolist()):
        k[b, :, length : length + n_new], v[b, :, length : length + n_new] = kn[b], vn[b]
    keep = (
        None
        if prefix.keep is None
        else torch.nn.functional.pad(prefix.keep, (0, cap - prefix.k.shape[2]))
    )
    return Prefix(k, v, prefix.lengths, keep, in_flight_cached=True)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    cap=st.integers(1, 40),
    n_new=st.integers(1, 9),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sdpa_reads_tokens_in_flight_from_the_buffer(batch, cap, n_new, causal, seed):
    gen = torch.Generator().manual_seed(seed)
    q, prefix, kn, vn, mask = make_case(batch, 6, 2, cap, n_new, 8, gen)
    mask = None if causal else mask
    ref = eager_attention(q, prefix, kn, vn, mask)
    cached = written_in_flight(prefix, kn, vn)
    assert (sdpa_attention(q, cached, kn * 0, vn * 0, mask) - ref).abs().max() <= 1e-5
    cached.keep = torch.rand(batch, 1, cached.k.shape[2], generator=gen) < 0.7
    prefix.keep = cached.keep[:, :, :cap]
    ref = eager_attention(q, prefix, kn, vn, mask)
    assert (sdpa_attention(q, cached, kn * 0, vn * 0, mask) - ref).abs().max() <= 1e-5


def test_keep_mask_limits_prefix():
    gen = torch.Generator().manual_seed(0)
    q, prefix, kn, vn, mask = make_case(2, 2, 2, 40, 3, 8, gen)
    prefix.lengths[:] = 40
    keep = torch.zeros(2, 1, 40, dtype=torch.bool)
    keep[:, :, :4] = True  # sink
    keep[:, :, 30:] = True  # window
    prefix.keep = keep
    ref = eager_attention(q, prefix, kn, vn, mask)
    cut = Prefix(prefix.k[:, :, keep[0, 0]], prefix.v[:, :, keep[0, 0]], torch.tensor([14, 14]))
    assert torch.allclose(eager_attention(q, cut, kn, vn, mask), ref, atol=1e-6)
    for backend in BACKENDS.values():
        assert torch.allclose(backend(q, prefix, kn, vn, mask), ref, atol=1e-5)


def test_merge_is_exact_softmax_split():
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(2, 3, 4, 10, generator=gen, dtype=torch.float64)
    v = torch.randn(2, 3, 10, 5, generator=gen, dtype=torch.float64)
    whole = torch.softmax(s, -1) @ v
    a, b = s[..., :7], s[..., 7:]
    oa, ob = torch.softmax(a, -1) @ v[:, :, :7], torch.softmax(b, -1) @ v[:, :, 7:]
    merged = merge_lse(oa, torch.logsumexp(a, -1), ob, torch.logsumexp(b, -1))
    assert torch.allclose(merged, whole, atol=1e-12)


def test_prefill_causal_path_matches_eager():
    gen = torch.Generator().manual_seed(2)
    q, prefix, kn, vn, _ = make_case(2, 4, 2, 8, 33, 16, gen)
    prefix.lengths[:] = 0
    ref = eager_attention(q, prefix, kn, vn, None)
    for backend in BACKENDS.values():
        assert torch.allclose(backend(q, prefix, kn, vn, None), ref, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("prefix_len", [1, 1000, 8192])
@pytest.mark.parametrize("n_new", [1, 69, 128])
def test_hybrid_float16_on_gpu(prefix_len, n_new):
    gen = torch.Generator().manual_seed(prefix_len + n_new)
    q, prefix, kn, vn, mask = make_case(
        1, 8, 2, prefix_len, n_new, 64, gen, dtype=torch.float16, device="cuda"
    )
    prefix.lengths[:] = prefix_len
    ref = dense_reference(
        q.cpu(),
        Prefix(prefix.k.cpu(), prefix.v.cpu(), prefix.lengths.cpu()),
        kn.cpu(),
        vn.cpu(),
        mask.cpu(),
    )
    from longspec.attention.triton_hybrid import TritonHybridAttention

    for backend in [*BACKENDS.values(), TritonHybridAttention(min_prefix=0)]:
        out = backend(q, prefix, kn, vn, mask).cpu().double()
        assert (out - ref).abs().max() <= 2e-3


@pytest.mark.gpu
@pytest.mark.parametrize("n_new", [1, 71])
def test_split_kernel_fused_merge_on_gpu(n_new):
    """In-kernel split merge equals the merge kernel (float16, 32k keys, 1 query token and
    70 tree tokens in flight), leaves its counters at 0, and repeats exactly."""
    from longspec.attention import split_kernel

    gen = torch.Generator().manual_seed(n_new)
    n_keys, lengths = 32768, torch.tensor([32768 - n_new, 20000, 0], device="cuda")
    q = torch.randn(3, 32, n_new, 128, generator=gen).to("cuda", torch.float16)
    k, v = torch.randn(2, 3, 8, n_keys, 128, generator=gen).to("cuda", torch.float16)
    mask = random_tree_mask(3, n_new, gen).cuda() if n_new > 1 else None
    args = (q, k, v, lengths, None, True, mask, torch.float16)
    ref_out, ref_lse = split_kernel.split_attention_lse(*args, fused_merge=False)
    for _ in range(2):
        out, lse = split_kernel.split_attention_lse(*args, fused_merge=True)
        torch.cuda.synchronize()
        assert all(not c.any() for c in split_kernel._COUNTERS.values())
        assert (out.float() - ref_out.float()).abs().max() <= 2e-3  # a float16 rounding step
        assert (lse - ref_lse).abs().max() <= 1e-5
    again = split_kernel.split_attention_lse(*args, fused_merge=True)
    assert torch.equal(again[0], out) and torch.equal(again[1], lse)


@pytest.mark.gpu
@pytest.mark.parametrize("n_new", [1, 69])
def test_bfloat16_fast_paths_on_gpu(n_new):
    """The GPU kernels in bfloat16 (the Triton interpreter cannot check it on CPU): the
    split-KV hybrid attention against float64 math, the fused norm against the module
    (the residual add exact), rotary-into-cache against rotate-then-write."""
    from longspec.attention.triton_hybrid import TritonHybridAttention
    from longspec.cache import KVCache
    from longspec.models.fused_kernels import add_rms_norm, rotary_into_cache
    from longspec.models.glide import RMSNorm
    from longspec.models.rotary import apply_rotary, rotate_half

    gen = torch.Generator().manual_seed(n_new)
    q, prefix, kn, vn, mask = make_case(
        1, 8, 2, 1000, n_new, 64, gen, dtype=torch.bfloat16, device="cuda"
    )
    prefix.lengths[:] = 1000
    cpu = Prefix(prefix.k.cpu(), prefix.v.cpu(), prefix.lengths.cpu())
    ref = dense_reference(q.cpu(), cpu, kn.cpu(), vn.cpu(), mask.cpu())
    out = TritonHybridAttention(min_prefix=0)(q, prefix, kn, vn, mask)
    assert out.dtype == torch.bfloat16 and (out.cpu().double() - ref).abs().max() <= 1.6e-2

    norm = RMSNorm(576, 1e-5).to("cuda", torch.bfloat16)
    norm.weight.data.uniform_(0.5, 1.5)
    x, delta = torch.randn(2, 3, n_new, 576, generator=gen).to("cuda", torch.bfloat16)
    summed, normed = add_rms_norm(x, delta, norm.weight, norm.eps)
    want = norm(x + delta).float()
    assert torch.equal(summed, x + delta)
    assert ((normed.float() - want).abs() <= 2**-7 * want.abs().clamp_min(1)).all()

    n_q, n_kv, dim = 4, 2, 64
    qkv = torch.randn(2, n_new, (n_q + 2 * n_kv) * dim, generator=gen).to("cuda", torch.bfloat16)
    cos, sin = torch.randn(2, 2, n_new, dim, generator=gen).to("cuda", torch.bfloat16)
    cache = KVCache(1, 2, n_kv, n_new + 8, dim, torch.bfloat16, "cuda")
    start = torch.tensor([3, 0], device="cuda")
    q_rot, k_rot, _ = rotary_into_cache(qkv, cos, sin, *cache.layer(0), start, n_q, n_kv)
    heads = qkv.unflatten(-1, (n_q + 2 * n_kv, dim)).transpose(1, 2)  # (B, H, T, D)
    # Within the rounding of torch's rotate-then-write: on the H200 the kernel rounds a
    # product or the sum differently now and then, so the two may differ by an ulp of each
    # product (float32 is exact under the interpreter; float16 keeps graphed == eager
    # tokens, check_graphs.py).
    c, s_ = cos[:, None].float(), sin[:, None].float()  # (B, 1, T, D)
    for got, x in ((q_rot, heads[:, :n_q]), (k_rot, heads[:, n_q : n_q + n_kv])):
        want = apply_rotary(x, cos, sin).float()
        scale = (x.float() * c).abs() + (rotate_half(x).float() * s_).abs() + want.abs()
        assert ((got.float() - want).abs() <= 2**-7 * scale).all()
