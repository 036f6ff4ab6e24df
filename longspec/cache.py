"""The target's KV cache: static buffers written by position, a committed length per row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from longspec.attention.base import Prefix


@dataclass
class Shard:
    """Keys/values (n, B, Hkv, S, D) of layers first .. first + n - 1, on one device."""

    first: int
    k: Tensor
    v: Tensor


def layer_runs(devices: Sequence[torch.device]) -> list[tuple[int, int]]:
    """(first layer, layer count) of each run of consecutive layers on one device."""
    runs: list[tuple[int, int]] = []
    for idx, dev in enumerate(devices):
        if runs and devices[idx - 1] == dev:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((idx, 1))
    return runs


class KVCache:
    """Preallocated keys/values of every layer for prompt + generation budget.

    Slots [0, lengths[b]) of row b hold committed tokens. Tokens in flight (a proposal
    being verified) are written after them at ``lengths + i``; ``commit_path`` then moves
    the accepted ones into place and advances the lengths.

    ``layer_devices`` (a model split over GPUs): each layer's keys/values live on that
    layer's device, one :class:`Shard` per run of layers on one device; ``lengths`` stays
    on ``device``. On one device ``k``/``v`` are the whole (L, B, Hkv, S, D) buffers.
    """

    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_kv_heads: int,
        capacity: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
        layer_devices: Sequence[torch.device] | None = None,
    ):
        devices = list(layer_devices) if layer_devices else [torch.device(device)] * n_layers
        if len(devices) != n_layers:
            raise ValueError(f"{len(devices)} layer devices for {n_layers} layers")
        self.shards: list[Shard] = []
        self._where: list[tuple[Shard, int]] = []  # layer -> (its shard, index in it)
        for first, n in layer_runs(devices):
            shape = (n, batch, n_kv_heads, capacity, head_dim)
            k = torch.zeros(shape, dtype=dtype, device=devices[first])  # (n, B, Hkv, S, D)
            shard = Shard(first, k, torch.zeros_like(k))
            self.shards.append(shard)
            self._where += [(shard, i) for i in range(n)]
        self.lengths = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)

    @property
    def split(self) -> bool:
        return len(self.shards) > 1

    @property
    def k(self) -> Tensor:
        """(L, B, Hkv, S, D) keys of every layer (one device only; see ``layer``)."""
        return self._whole().k

    @property
    def v(self) -> Tensor:
        return self._whole().v

    def _whole(self) -> Shard:
        if self.split:
            raise RuntimeError("the KV cache is split over devices: use layer(idx)")
        return self.shards[0]

    def layer(self, idx: int) -> tuple[Tensor, Tensor]:
        """Keys and values (B, Hkv, S, D) of one layer, on that layer's device."""
        shard, i = self._where[idx]
        return shard.k[i], shard.v[i]

    def data_ptr(self) -> int:
        """Identity of the buffers (graph keys: a new cache means new graphs)."""
        return self.shards[0].k.data_ptr()

    @property
    def n_layers(self) -> int:
        return len(self._where)

    @property
    def batch(self) -> int:
        return self.lengths.shape[0]

    @property
    def capacity(self) -> int:
        return self.shards[0].k.shape[3]

    @property
    def nbytes(self) -> int:
        return sum(s.k.nbytes + s.v.nbytes for s in self.shards)

    def prefix(
        self,
        layer: int,
        keep: Tensor | None = None,
        lengths: Tensor | None = None,
        max_len: int | None = None,
    ) -> Prefix:
        """The committed part of ``layer`` (or the first ``lengths`` slots) as a prefix."""
        lengths = self.lengths if lengths is None else lengths
        k, v = self.layer(layer)
        return Prefix(k, v, lengths, keep, max_len)

    def check_room(self, start: Tensor, n_new: int) -> int:
        """Raise if n_new tokens at ``start`` (B,) would overflow; return start.max()."""
        top = int(start.max())
        if top + n_new > self.capacity:
            raise RuntimeError(f"KV cache overflow: {top + n_new} slots > capacity {self.capacity}")
        return top

    def write(self, layer: int, k_new: Tensor, v_new: Tensor, start: Tensor) -> None:
        """Store k/v_new (B, Hkv, T, D) at slots start[b] + t of each row (see check_room)."""
        n_new = k_new.shape[2]
        if n_new == 0:
            return
        slots = start[:, None] + torch.arange(n_new, device=start.device)  # (B, T)
        rows = torch.arange(k_new.shape[0], device=start.device)[:, None].expand_as(slots)
        k, v = self.layer(layer)
        # Advanced indices (rows, slots) go first: the target view is (B, T, Hkv, D).
        k[rows, :, slots] = k_new.transpose(1, 2)
        v[rows, :, slots] = v_new.transpose(1, 2)

    def commit(self, n: Tensor) -> None:
        """Advance each row's committed length by n (B,) tokens written in place."""
        self.lengths += n

    def commit_path(self, path: Tensor, n_keep: Tensor) -> None:
        """Keep the in-flight tokens ``path`` (B, P) (offsets after each row's length).

        Row b keeps path[b, :n_keep[b]] in that order; their keys/values move (all layers at
        once) to slots lengths[b] + [0, n_keep[b]) and the length advances by n_keep[b].
        A path of one column is the root alone (offset 0, already in place): no move.
        """
        if path.shape[1] == 1:
            self.commit(n_keep)
            return
        rows = torch.arange(path.shape[0], device=path.device)[:, None]  # (B, 1)
        src = self.lengths[:, None] + path  # (B, P)
        dst = self.lengths[:, None] + torch.arange(path.shape[1], device=path.device)  # (B, P)
        for shard in self.shards:
            dev = shard.k.device
            index = (rows.to(dev), src.to(dev), dst.to(dev))
            _move_slots(shard.k, *index)
            _move_slots(shard.v, *index)
        self.lengths += n_keep


def _move_slots(buf: Tensor, rows: Tensor, src: Tensor, dst: Tensor) -> None:
    """buf (L, B, Hkv, S, D): slots src (B, P) of each row -> slots dst, all layers at once.

    Everything is gathered before writing, so overlapping source/destination slots are safe.
    """
    buf[:, rows, :, dst] = buf[:, rows, :, src]  # (L, B, P, Hkv, D)


class DraftCache:
    """Constant-size self-attention cache of the GLIDE draft.

    ``ring`` holds the keys/values of committed tokens at slot ``position % capacity``
    (rotary already applied, so slot order does not matter); only the last ``window``
    positions are ever read, and capacity = window + the most tokens absorbed at once, so
    an absorb never overwrites a key that a query of the same absorb still needs.
    ``pending`` holds the proposal nodes of the current round (root first). Ring and
    pending slots are two views of one buffer, the pending slots right after the ring's, so
    a kernel reads [ring | pending] in one pass (``keys``/``values``).
    """

    def __init__(
        self,
        batch: int,
        n_kv_heads: int,
        head_dim: int,
        window: int,
        max_absorb: int,
        max_pending: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ):
        self.window = window
        self.period = window + max_absorb  # slot of position p is p % period
        slots = self.period + 1  # the extra last slot swallows writes of invalid entries
        shape = (batch, n_kv_heads, slots + max_pending, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)  # (B, Hkv, C + P, D)
        self.values = torch.zeros_like(self.keys)
        self.ring_k, self.pend_k = self.keys[:, :, :slots], self.keys[:, :, slots:]  # views
        self.ring_v, self.pend_v = self.values[:, :, :slots], self.values[:, :, slots:]
        self.ring_pos = torch.full((batch, slots), -1, dtype=torch.long, device=device)
        self.n_pending = 0
        self._starts: dict[int, Tensor] = {}  # pending count -> (B,) first free slot

    @property
    def capacity(self) -> int:
        """Ring slots attention reads (the spare slot included; it is never visible)."""
        return self.ring_pos.shape[1]

    def reset(self) -> None:
        """Forget every token (reuse the buffers for a new batch)."""
        self.ring_pos.fill_(-1)
        self.n_pending = 0

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.keys, self.values, self.ring_pos))

    def absorb(self, k: Tensor, v: Tensor, positions: Tensor, valid: Tensor) -> None:
        """Store committed k/v (B, Hkv, T, D) at positions (B, T) where valid (B, T).

        Only each row's last ``window`` valid positions are kept (older keys are never
        read, and two positions a period apart would share a slot). Every other entry goes
        to the spare last slot with position -1 (never visible), so the write has a static
        shape and needs no host synchronisation; rows padded on the right keep their own
        last window.
        """
        slots = self.ring_slots(positions, valid)  # (B, T)
        rows = torch.arange(k.shape[0], device=k.device)[:, None].expand_as(slots)  # (B, T)
        self.ring_k[rows, :, slots] = k.transpose(1, 2)  # (B, T, Hkv, D)
        self.ring_v[rows, :, slots] = v.transpose(1, 2)

    def ring_slots(self, positions: Tensor, valid: Tensor) -> Tensor:
        """(B, T) ring slot of each entry of :meth:`absorb` (the spare slot where it is not
        kept), with ``ring_pos`` already set for them: the caller writes keys and values."""
        if positions.shape[1] > self.period - self.window:
            newest = torch.where(valid, positions, -1).amax(1, keepdim=True)  # (B, 1)
            valid = valid & (positions > newest - self.window)
        slots = torch.where(valid, positions % self.period, self.period)  # (B, T)
        self.ring_pos.scatter_(1, slots, torch.where(valid, positions, -1))  # spare: all -1
        return slots

    def ring_visible(self, positions: Tensor) -> Tensor:
        """(B, T, C) bool: ring slots inside each query's window (p - window, p)."""
        kpos = self.ring_pos[:, None, :]  # (B, 1, C)
        qpos = positions[:, :, None]  # (B, T, 1)
        return (kpos >= 0) & (kpos < qpos) & (kpos > qpos - self.window)

    def clear_pending(self) -> None:
        self.n_pending = 0

    def take_pending(self, n: int) -> tuple[Tensor, int]:
        """Room for n more pending nodes: (their first slot as a (B,) tensor, the new count).

        The slot tensors are made once per count and kept, so a captured graph makes none.
        """
        start = self._starts.get(self.n_pending)
        if start is None:
            start = torch.full_like(self.ring_pos[:, 0], self.n_pending)  # (B,)
            self._starts[self.n_pending] = start
        self.n_pending += n
        return start, self.n_pending

    def push_pending(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append proposal nodes' k/v (B, Hkv, T, D); return all pending (B, Hkv, P+T, D)."""
        end = self.n_pending + k.shape[2]
        self.pend_k[:, :, self.n_pending : end] = k
        self.pend_v[:, :, self.n_pending : end] = v
        self.n_pending = end
        return self.pend_k[:, :, :end], self.pend_v[:, :, :end]
