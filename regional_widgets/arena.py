"""An arena of fixed-size slots for history snapshots: tensors are copied in and copied out.

Why: a long run keeps hundreds of snapshots and evicts some in the middle. As separate tensors
they fragment the C heap (glibc raises its mmap threshold after the first large free, so later
snapshots land on the heap and freed holes are rarely returned): resident memory grows far past
the bytes actually held. Here every snapshot tensor is copied into a slot of a large chunk (one
pool of slots per byte size; a chunk is bigger than glibc's largest mmap threshold, so it is its
own mapping and goes back to the system when dropped). A freed slot is reused before any new
one (lowest first), so resident memory follows the bytes held.

A `Slot` frees itself when its last reference goes (CPython refcounting), so a snapshot that is
dropped, evicted or rolled back needs no bookkeeping. `Slot.read()` returns a fresh tensor with
the original bits, shape and dtype. Pure torch: no traitlets here.
"""
from __future__ import annotations

import heapq

import torch

CHUNK_BYTES = 64 * 2**20  # > glibc's largest dynamic mmap threshold (32 MiB on 64-bit)
MIN_BYTES = 16 * 2**10  # smaller tensors (scalars, sampler bookkeeping) stay as they are
# dtypes whose same-dtype copy_ moves the bytes as they are (floats: NaN payloads and signed zeros
# included): copied through a typed view of the slot. Any other dtype is copied as raw bytes.
_TYPED_COPY = frozenset({torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                         torch.int16, torch.int8, torch.uint8})


class Slot:
    """One stored tensor (contiguous CPU bytes); frees its place in the pool when dropped."""

    __slots__ = ("_pool", "_chunk", "_index", "shape", "dtype", "nbytes", "__weakref__")

    def __init__(self, pool: "_Pool", chunk: int, index: int, shape, dtype, nbytes: int):
        self._pool, self._chunk, self._index = pool, chunk, index
        self.shape, self.dtype, self.nbytes = shape, dtype, nbytes

    def _bytes(self) -> torch.Tensor:
        start = self._index * self._pool.slot_bytes
        return self._pool.chunks[self._chunk][start:start + self.nbytes]

    def read(self) -> torch.Tensor:
        """A new tensor equal, bit for bit, to the one stored."""
        return self._bytes().view(self.dtype).reshape(self.shape).clone()

    def __del__(self):
        try:
            self._pool.release(self._chunk, self._index)
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to give back
            pass


class _Pool:
    """Slots of one byte size in chunks of `CHUNK_BYTES` (at least one slot per chunk)."""

    def __init__(self, slot_bytes: int):
        self.slot_bytes = slot_bytes
        self.per_chunk = max(1, CHUNK_BYTES // slot_bytes)
        self.chunks: dict = {}
        self.used: dict = {}
        self.free: list = []  # heap of (chunk, index): the lowest free slot is reused first
        self.views: dict = {}  # chunk -> {index: (dtype, shape, a typed view of that slot)}, made on first use
        self._next = 0

    def view(self, chunk: int, index: int, dtype, shape) -> tuple:
        """(dtype, shape as a tuple, slot ``index`` of ``chunk`` as a tensor of them), kept for the next use."""
        start = index * self.slot_bytes
        view = self.chunks[chunk][start:start + self.slot_bytes].view(dtype).view(shape)
        self.views[chunk][index] = entry = (dtype, tuple(shape), view)
        return entry

    def take(self) -> tuple:
        if not self.free:
            chunk, self._next = self._next, self._next + 1
            # untouched pages of a fresh mapping cost no resident memory until a slot is written
            self.chunks[chunk] = torch.empty(self.per_chunk * self.slot_bytes, dtype=torch.uint8)
            self.used[chunk] = 0
            self.views[chunk] = {}
            self.free = [(chunk, i) for i in range(self.per_chunk)]  # sorted: a heap
        chunk, index = heapq.heappop(self.free)
        self.used[chunk] += 1
        return chunk, index

    def release(self, chunk: int, index: int) -> None:
        used = self.used[chunk] - 1
        self.used[chunk] = used
        heapq.heappush(self.free, (chunk, index))
        if used:  # only a release that empties its chunk can leave two chunks empty (`take` fills one)
            return
        empty = [c for c, n in self.used.items() if n == 0]
        if len(empty) > 1:  # keep one empty chunk for the next snapshots, give the others back
            drop = set(empty[1:])
            for c in drop:
                del self.chunks[c], self.used[c], self.views[c]
            self.free = [slot for slot in self.free if slot[0] not in drop]
            heapq.heapify(self.free)

    @property
    def nbytes_reserved(self) -> int:
        return len(self.chunks) * self.per_chunk * self.slot_bytes


class Arena:
    """Pools of slots by byte size. ``store(t)`` copies a tensor in, or returns None when it cannot
    (not on the CPU, not contiguous, under `MIN_BYTES`, or needing grad): such a tensor is kept as it is."""

    def __init__(self):
        self._pools: dict = {}

    @staticmethod
    def storable(t: torch.Tensor) -> bool:
        return (t.device.type == "cpu" and t.is_contiguous() and t.element_size() * t.numel() >= MIN_BYTES
                and not t.requires_grad)

    def store(self, t: torch.Tensor):
        # `storable`'s test, written out: this runs for every large tensor of every sub-step
        if not t.is_cpu or not t.is_contiguous() or t.requires_grad:
            return None
        nbytes = t.nbytes
        if nbytes < MIN_BYTES:
            return None
        pool = self._pools.get(nbytes)
        if pool is None:
            pool = self._pools[nbytes] = _Pool(nbytes)
        dtype = t.dtype
        if dtype in _TYPED_COPY:  # into the slot's view of this dtype and shape, made once per slot
            chunk, index = pool.take()
            shape = t.shape
            view = pool.views[chunk].get(index)
            if view is None or view[0] is not dtype or view[1] != shape:
                view = pool.view(chunk, index, dtype, shape)
            view[2].copy_(t)
            return Slot(pool, chunk, index, view[1], dtype, nbytes)
        try:
            raw = t.view(-1).view(torch.uint8)  # no grad (tested above): no detach needed
        except RuntimeError:  # a dtype torch cannot view as bytes
            return None
        chunk, index = pool.take()
        start = index * pool.slot_bytes
        pool.chunks[chunk][start:start + nbytes].copy_(raw)
        return Slot(pool, chunk, index, tuple(t.shape), dtype, nbytes)

    @property
    def nbytes_reserved(self) -> int:
        """Bytes of the chunks held (their untouched pages are not resident)."""
        return sum(pool.nbytes_reserved for pool in self._pools.values())
