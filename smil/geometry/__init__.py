"""Geometry: rotations, pinhole cameras, DLT triangulation and Procrustes alignment.

Conventions (OpenCV pinhole camera, column-vector rotations, column-wise 6D, wxyz quaternions) are
documented in ``docs/conventions.md`` and in each module's docstring.
"""

from smil.geometry.camera import (
    camera_center,
    distort_points,
    focal_to_fov,
    fov_to_focal,
    intrinsics,
    project,
    projection_matrix,
    undistort_points,
    world_to_camera,
)
from smil.geometry.procrustes import similarity_procrustes
from smil.geometry.rotations import (
    ROTATION_FORMATS,
    average_rotations,
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    geodesic_angle,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rot6d,
    project_to_so3,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    rot6d_to_matrix,
    to_matrix,
)
from smil.geometry.triangulation import reprojection_error, triangulate_dlt

__all__ = [
    "ROTATION_FORMATS",
    "average_rotations",
    "axis_angle_to_matrix",
    "axis_angle_to_quaternion",
    "camera_center",
    "distort_points",
    "focal_to_fov",
    "fov_to_focal",
    "geodesic_angle",
    "intrinsics",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "matrix_to_rot6d",
    "project",
    "project_to_so3",
    "projection_matrix",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "reprojection_error",
    "rot6d_to_matrix",
    "similarity_procrustes",
    "to_matrix",
    "triangulate_dlt",
    "undistort_points",
    "world_to_camera",
]
