"""SMIL body model: safe model-file I/O (SMAL/SMPL pickle format) and the LBS forward.

``load_model``/``save_model`` read and write the pickle format; :class:`SMILModel` is the
differentiable model (imported on first use, so file I/O does not load torch). The default-model
builder lives in :mod:`smil.body.default_model`.
"""

from smil.body.io import load_model, model_sha256, save_model, validate_model

__all__ = [
    "BodyOutput",
    "SMILModel",
    "load_model",
    "model_sha256",
    "save_model",
    "tree_levels",
    "validate_model",
]


def __getattr__(name: str):
    if name in ("BodyOutput", "SMILModel", "tree_levels"):
        from smil.body import model

        return getattr(model, name)
    raise AttributeError(f"module 'smil.body' has no attribute {name!r}")
