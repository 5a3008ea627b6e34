"""What makes the host wait for a GPU: a value or a data-dependent shape read back from the device,
boolean-mask indexing, a linear solver's error check, a blocking copy between host and device.

One place for this judgement, used by the step benchmarks' operator census
(``benchmarks/bench_train.py``) and by the tests that keep reads out of the training step. It is made
per ATen call at the dispatcher, so it works on a CPU, where these calls are ordinary operators (and
copies never block). Reads that a kernel makes inside itself are not seen: on a GPU cuSOLVER-backed
kernels such as ``linalg.svd`` (the Procrustes alignment) check their error codes that way.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: Operators that read a value or a data-dependent shape back from the device.
SYNC_OPS = frozenset({
    "aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::unique_consecutive",
    "aten::_unique2", "aten::unique_dim", "aten::repeat_interleave", "aten::nonzero_static",
    "aten::_linalg_check_errors",
})


def is_device_read(name: str, args: tuple, kwargs: dict) -> bool:
    """Whether an ATen call (``name`` as ``aten::op``) makes the host wait for a CUDA device."""
    if name == "aten::repeat_interleave":
        return kwargs.get("output_size") is None  # the output's length is known without a read
    if name in SYNC_OPS:
        return True
    if name in ("aten::index", "aten::index_put_", "aten::index_put") and len(args) > 1:
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or []))
    if name == "aten::_to_copy" and isinstance(args[0], torch.Tensor):
        dst = kwargs.get("device")
        return dst is not None and _blocking_copy(args[0], torch.device(dst), kwargs.get("non_blocking", False))
    if name == "aten::copy_" and len(args) > 1 and isinstance(args[1], torch.Tensor):
        non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
        return _blocking_copy(args[1], args[0].device, non_blocking)
    return False


def _blocking_copy(src: torch.Tensor, dst: torch.device, non_blocking: bool) -> bool:
    if src.device.type == "cuda" and dst.type == "cpu":
        return True  # the host needs the values
    return src.device.type == "cpu" and dst.type == "cuda" and not (non_blocking and src.is_pinned())


class DeviceReads(TorchDispatchMode):
    """Records in ``seen`` the name of every device read dispatched while active and ``armed``."""

    def __init__(self, armed: bool = True) -> None:
        super().__init__()
        self.armed, self.seen = armed, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.name().split(".")[0]
        if self.armed and is_device_read(name, args, kwargs):
            self.seen.append(name)
        return func(*args, **kwargs)
