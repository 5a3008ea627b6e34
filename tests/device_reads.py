"""Catch what would make the host wait for a GPU: a value read back (``.item()``, ``bool(tensor)``),
``nonzero``, boolean-mask indexing, a linear solver's error check. On a CPU these are ordinary
operators; recorded here by name. Reads that a kernel makes inside itself are not seen: cuSOLVER-backed
kernels such as ``linalg.eigh`` and ``linalg.svd`` check their error codes that way on a GPU."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

READS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::_linalg_check_errors")


class DeviceReads(TorchDispatchMode):
    """Records, while active and ``armed``, every operator that reads from the device."""

    def __init__(self, armed: bool = True) -> None:
        super().__init__()
        self.armed, self.seen = armed, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name().split(".")[0]
        indices = args[1] if name.startswith("aten::index") and len(args) > 1 else None
        boolean_index = isinstance(indices, (list, tuple)) and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
        if self.armed and (name in READS or boolean_index):
            self.seen.append(name)
        return func(*args, **(kwargs or {}))
