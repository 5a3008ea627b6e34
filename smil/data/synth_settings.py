"""The settings of ``smil synth`` (:class:`SynthSettings`), apart from the generator so that the
command line can read their defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from smil.errors import ConfigError


@dataclass(frozen=True)
class SynthSettings:
    """Everything that decides the generated data; stored in the manifest header's ``info``.

    Angles in degrees, lengths relative to the animal's bounding radius unless stated.
    """

    image_size: int = 256  # square images, pixels
    views: int = 1
    rig: str = "random"  # "fixed" (one calibrated rig) | "random" (new camera per sample and view)
    seed: int = 0
    world_unit_m: float = 0.01  # metres per world unit
    # Body.
    pose_sigma_body: float = 0.12  # rad, per axis-angle component of body/wing/other joints
    pose_sigma_limb: float = 0.35  # rad, legs, antennae and mouthparts
    pose_clip: float = 2.5  # every pose component is clipped to ±pose_clip·sigma
    beta_sigma: float = 0.6  # betas ~ N(0, beta_sigma²)
    scale_weight_sigma: float = 0.3  # weights of scaledirs ~ N(0, σ²) (models that have them)
    trans_weight_sigma: float = 0.3  # weights of transdirs ~ N(0, σ²) (models that have them)
    scale_range: tuple[float, float] = (0.8, 1.25)  # global scale, log-uniform, world units/model unit
    tilt_sigma: float = 8.0  # pitch and roll ~ N(0, σ²), clipped to ±2.5σ; yaw uniform
    trans_sigma: float = 0.08  # placement offset from the origin ~ N(0, σ²) per axis, × radius
    # Random cameras.
    fov_range: tuple[float, float] = (30.0, 60.0)  # vertical field of view
    elevation_range: tuple[float, float] = (-10.0, 75.0)
    fill_range: tuple[float, float] = (0.65, 1.0)  # bounding sphere's angular radius / half FOV
    roll_sigma: float = 5.0
    aim_sigma: float = 0.1  # look-at point offset from the animal's centre, × radius
    # Fixed rig.
    rig_fov: float = 40.0
    rig_elevations: tuple[float, ...] = (25.0, 45.0)  # cycled over the cameras
    rig_fill: float = 1.0  # the largest expected animal's angular radius / half FOV
    # Appearance.
    ambient_range: tuple[float, float] = (0.25, 0.45)
    jpeg_quality: int = 92
    # Visibility.
    visibility_factor: float = 2.0  # depth-test fallback for meshes without consistent winding
    visibility_floor: float = 0.01  # least local radius, × the body's bounding radius
    batch_size: int = 16  # body-model forward batch (aligned; part of what decides the bits)

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ConfigError(
                f"image_size must be at least 16 pixels, got {self.image_size}", field="image_size"
            )
        if self.views < 1:
            raise ConfigError(f"views must be at least 1, got {self.views}", field="views")
        if self.rig not in ("fixed", "random"):
            raise ConfigError(f"rig must be 'fixed' or 'random', got {self.rig!r}", field="rig")
        if not self.world_unit_m > 0:
            raise ConfigError(f"world_unit_m must be positive, got {self.world_unit_m}", field="world_unit_m")
        if self.seed < 0:
            raise ConfigError(f"seed must be non-negative, got {self.seed}", field="seed")
        for name in ("fov_range", "elevation_range", "fill_range", "scale_range", "ambient_range"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ConfigError(f"{name} must be (low, high) with low ≤ high, got {(lo, hi)}", field=name)
        if not (0 < self.fov_range[0] and self.fov_range[1] < 170):
            raise ConfigError(
                f"fov_range must lie in (0, 170) degrees, got {self.fov_range}", field="fov_range"
            )
        if not (-85 <= self.elevation_range[0] and self.elevation_range[1] <= 85):
            raise ConfigError(
                f"elevation_range must lie in [-85, 85] degrees, got {self.elevation_range}",
                field="elevation_range",
            )
        if not (0 < self.fill_range[0] and self.fill_range[1] <= 1):
            raise ConfigError(f"fill_range must lie in (0, 1], got {self.fill_range}", field="fill_range")
        if not 0 < self.scale_range[0]:
            raise ConfigError(f"scale_range must be positive, got {self.scale_range}", field="scale_range")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}", field="batch_size")

    @property
    def camera_names(self) -> list[str]:
        return [f"cam{i}" for i in range(self.views)]
