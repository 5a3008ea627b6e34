"""Batches that leave a DataLoader worker as one shared-memory buffer.

A DataLoader worker sends each batch to the training process through shared memory. With torch's
default collation every key of the batch is its own shared-memory segment, and the receiver fetches
each segment's file descriptor from the worker over a socket: one round trip per key (12–26 for our
items), each waiting for the worker's GIL, plus a fresh segment (page faults) per key in the worker.
Here the whole batch is one segment, so one round trip:

- :func:`collate_items` (pass it as ``DataLoader(collate_fn=collate_items)``) stacks the items straight
  into one buffer, in shared memory when it runs in a worker; the batch is sent as that buffer, with
  no further copy.
- A dataset can build a whole batch at once (``__getitems__``, which a DataLoader calls with the
  batch's indices): it fills an :func:`allocate_batch` buffer in place and returns it as an
  :class:`ItemBatch`, which :func:`collate_items` passes through without a copy.
- Items are :class:`ItemDict`; ``default_collate`` keeps a mutable mapping's type, so a loader without
  ``collate_fn`` still gets an ``ItemDict`` batch, which is copied into one buffer when it is pickled
  in a worker (one copy more than :func:`collate_items`, but one round trip instead of one per key).

Either way the training process receives a plain ``dict`` of views into the buffer, with the keys,
shapes, dtypes and values ``default_collate`` would give. Outside a DataLoader worker an ``ItemDict``
pickles and copies as an ordinary dict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import get_worker_info

from smil.errors import DataError

_ALIGN = 64  # bytes: every tensor starts at a multiple (dtype views need aligned offsets)

#: (key, dtype, shape, byte offset, byte length) of each tensor in a packed buffer
Layout = list[tuple[str, torch.dtype, tuple[int, ...], int, int]]


def _layout(specs: Iterable[tuple[str, torch.dtype, tuple[int, ...]]]) -> tuple[Layout, int]:
    layout: Layout = []
    end = 0
    for key, dtype, shape in specs:
        nbytes = math.prod(shape) * dtype.itemsize
        layout.append((key, dtype, shape, end, nbytes))
        end += -(-nbytes // _ALIGN) * _ALIGN
    return layout, end


def _buffer(nbytes: int) -> torch.Tensor:
    """A ``uint8`` buffer: shared memory in a DataLoader worker (as ``default_collate`` allocates there:
    sent by file descriptor, not copied), ordinary memory elsewhere."""
    if get_worker_info() is None:
        return torch.empty(nbytes, dtype=torch.uint8)
    return torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(max(nbytes, 1)))


def unpack(layout: Layout, buffer: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensors of a packed buffer, as views into it (the receiving side of a pickled batch)."""
    return {key: buffer[start : start + nbytes].view(dtype).view(shape) for key, dtype, shape, start, nbytes in layout}


def _is_cpu_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.device.type == "cpu" and not value.is_sparse


class ItemDict(dict):
    """A dict of tensors (a dataset item, or a batch of them) that a DataLoader worker sends to the
    training process as one shared-memory buffer; see the module docstring."""

    _packed: tuple[Layout, torch.Tensor, tuple[torch.Tensor, ...]] | None = None  # set by collate_items

    def __copy__(self) -> ItemDict:  # default_collate clones the first item's mapping
        return type(self)(self)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if get_worker_info() is None or not all(_is_cpu_tensor(v) for v in self.values()):
            return type(self), (dict(self),)  # an ordinary pickle (or copy)
        if self._packed is not None:
            layout, buffer, values = self._packed
            if len(values) == len(self) and all(self.get(k) is v for (k, *_), v in zip(layout, values)):
                return unpack, (layout, buffer)  # collate_items' buffer, unchanged since: send as is
        layout, nbytes = _layout((k, v.dtype, tuple(v.shape)) for k, v in self.items())
        buffer = _buffer(nbytes)
        for (key, dtype, shape, start, size), value in zip(layout, self.values()):
            buffer[start : start + size].view(dtype).view(shape).copy_(value)
        return unpack, (layout, buffer)


def allocate_batch(specs: Iterable[tuple[str, torch.dtype, tuple[int, ...]]]) -> ItemDict:
    """An uninitialised batch, every ``(key, dtype, shape)`` a view into one buffer (shared memory in a
    DataLoader worker), which a worker sends as is; fill it in place."""
    layout, nbytes = _layout(specs)
    buffer = _buffer(nbytes)
    batch = ItemDict(unpack(layout, buffer))
    batch._packed = (layout, buffer, tuple(batch.values()))
    return batch


class ItemBatch(Sequence):
    """What a dataset's ``__getitems__`` returns: the items of a batch built in one go, each item a
    view into ``batch``. :func:`collate_items` returns ``batch`` itself (no copy); any other
    ``collate_fn`` (``default_collate``) sees an ordinary sequence of items."""

    def __init__(self, batch: ItemDict):
        self.batch = batch
        self._len = len(next(iter(batch.values()))) if batch else 0
        self._items: list[ItemDict] | None = None  # made on first access only

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> ItemDict:  # type: ignore[override]
        if self._items is None:
            columns = [(k, v.unbind(0)) for k, v in self.batch.items()]
            self._items = [ItemDict({k: rows[b] for k, rows in columns}) for b in range(self._len)]
        return self._items[i]


def collate_items(items: Sequence[Mapping[str, torch.Tensor]]) -> ItemDict:
    """Stack dataset items into a batch ``(B, …)`` per key, every key in one buffer (shared memory in a
    DataLoader worker). Same keys, shapes, dtypes and values as ``default_collate`` gives for items
    whose values are tensors. An :class:`ItemBatch` is already that batch and is returned as is."""
    if isinstance(items, ItemBatch):
        return items.batch
    if not items:
        raise DataError("cannot collate an empty batch")
    first = items[0]
    for item in items[1:]:
        if item.keys() != first.keys():
            raise DataError(f"items of one batch have different keys: {sorted(first)} and {sorted(item)}")
    for key, value in first.items():
        if not isinstance(value, torch.Tensor):
            raise DataError(f"collate_items collates tensors; item key {key!r} is a {type(value).__name__}")
    batch = allocate_batch((k, v.dtype, (len(items), *v.shape)) for k, v in first.items())
    for key, out in batch.items():
        torch.stack([item[key] for item in items], out=out)
    return batch
