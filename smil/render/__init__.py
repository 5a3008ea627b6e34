"""Rendering of body-model meshes.

* :mod:`smil.render.raster`: hard z-buffer rasterisation in numpy (depth, face ids, barycentrics,
  Lambert shading, silhouette masks, occlusion-aware point visibility) for synthetic images.
* :mod:`smil.render.soft`: differentiable soft silhouettes for training.
"""
