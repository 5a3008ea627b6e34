"""Networks: backbones (by timm name), heads (MLP, transformer decoder with IEF), regressors.

``create_regressor(cfg, body_model_info, rig)`` is the one factory: a config string is all a user needs.
"""

from smil.models.backbones import BACKBONES, Backbone, create_backbone
from smil.models.components.param_layout import ParamLayout
from smil.models.regressor import MultiViewRegressor, SingleViewRegressor, create_regressor

__all__ = [
    "BACKBONES",
    "Backbone",
    "MultiViewRegressor",
    "ParamLayout",
    "SingleViewRegressor",
    "create_backbone",
    "create_regressor",
]
