"""Image backbones through timm, created by name.

Every backbone returns spatial tokens ``(B, N, D)`` — the last ResNet stage's feature map flattened, or
a ViT's patch tokens — plus a pooled feature ``(B, D)``. :meth:`Backbone.forward_with_map` adds a
finer feature map for keypoint heatmaps: a ResNet's second stage (stride 8), a ViT's patch grid.
Weights start random; pretrained weights come only from a local file (``pretrained_path``), never from
a download at run time.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import nn

from smil.errors import ConfigError

#: Supported backbone names (timm model names) and their family.
BACKBONES: dict[str, str] = {
    "resnet18": "resnet",
    "resnet34": "resnet",
    "resnet50": "resnet",
    "resnet101": "resnet",
    "resnet152": "resnet",
    "vit_tiny_patch16_224": "vit",
    "vit_small_patch16_224": "vit",
    "vit_base_patch16_224": "vit",
    "vit_large_patch16_224": "vit",
}

#: The ResNet stage (timm feature index: 0 stem, 1…4 layers) whose output feeds keypoint heatmaps: stride 8.
RESNET_MAP_STAGE = 2


class Backbone(nn.Module):
    """A timm model wrapped to return ``(tokens (B,N,D), pooled (B,D))``."""

    def __init__(self, name: str, image_size: int) -> None:
        super().__init__()
        import timm

        if name not in BACKBONES:
            close = difflib.get_close_matches(name, list(BACKBONES), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown backbone '{name}'{hint} (supported: {', '.join(BACKBONES)})", field="model.backbone"
            )
        self.name = name
        self.family = BACKBONES[name]
        if self.family == "resnet":
            self.net = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
        else:
            self.net = timm.create_model(name, pretrained=False, num_classes=0, img_size=image_size)
        self.dim = int(self.net.num_features)
        if self.family == "resnet":
            self.map_dim = int(self.net.feature_info[RESNET_MAP_STAGE]["num_chs"])
            self.map_stride = int(self.net.feature_info[RESNET_MAP_STAGE]["reduction"])
        else:
            self.map_dim, self.map_stride = self.dim, int(self.net.patch_embed.patch_size[0])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.family == "resnet":
            return self._resnet_tokens(self.net(images))
        return self._vit_tokens(images)

    def forward_with_map(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``tokens, pooled`` as :meth:`forward`, plus a feature map ``(B, map_dim, H/s, W/s)`` at
        stride ``s = map_stride``, from the same pass."""
        if self.family == "resnet":
            final, (fmap,) = self.net.forward_intermediates(images, indices=[RESNET_MAP_STAGE])
            return (*self._resnet_tokens(final), fmap)
        tokens, pooled = self._vit_tokens(images)
        h, w = images.shape[-2] // self.map_stride, images.shape[-1] // self.map_stride
        return tokens, pooled, tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)

    @staticmethod
    def _resnet_tokens(fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = fmap.flatten(2).transpose(1, 2)  # (B, h·w, D)
        return tokens, tokens.mean(dim=1)

    def _vit_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.net.forward_features(images)  # (B, prefix + N, D)
        prefix = int(getattr(self.net, "num_prefix_tokens", 1))
        tokens = feats[:, prefix:]
        pooled = feats[:, 0] if prefix > 0 else tokens.mean(dim=1)
        return tokens, pooled

    def load_weights(self, path: str | Path) -> None:
        """Load a local state dict (a timm checkpoint of the same architecture)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError("pretrained weights file not found", path=path, field="model.pretrained_path")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input error
            raise ConfigError(f"cannot read weights ({exc})", path=path, field="model.pretrained_path") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        own = self.net.state_dict()
        # Classifier weights of an ImageNet checkpoint are not part of a headless backbone.
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head.", "classifier."))}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
        if missing or unexpected or wrong:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
            if wrong:
                k = wrong[0]
                parts.append(f"{len(wrong)} of wrong shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
            raise ConfigError(
                f"weights do not match backbone '{self.name}': " + "; ".join(parts),
                path=path,
                field="model.pretrained_path",
            )
        self.net.load_state_dict(state)


def create_backbone(name: str, image_size: int = 224, pretrained_path: str | Path = "") -> Backbone:
    backbone = Backbone(name, image_size)
    if pretrained_path:
        backbone.load_weights(pretrained_path)
    return backbone
