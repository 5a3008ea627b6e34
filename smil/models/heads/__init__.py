"""Regression heads. Both refine a parameter vector by iterative error feedback (IEF)."""

from smil.models.heads.mlp import MLPHead
from smil.models.heads.transformer import TransformerIEFHead

__all__ = ["MLPHead", "TransformerIEFHead", "create_head"]


def create_head(kind: str, **kwargs):
    if kind == "mlp":
        return MLPHead(**kwargs)
    if kind == "transformer":
        return TransformerIEFHead(**kwargs)
    from smil.errors import ConfigError

    raise ConfigError(f"unknown head '{kind}'; allowed: mlp, transformer", field="model.head")
