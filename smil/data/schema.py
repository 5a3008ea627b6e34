"""The HDF5 dataset schema: names, dtypes, split codes and the version this smil reads and writes.

The full reference (every attribute and array, with shapes, units and conventions) is
``docs/dataset-format.md``. ``smil.data.store`` writes and reads files following these constants; nothing
else should spell a dataset name or attribute out by hand.

Versioning policy: ``SCHEMA_VERSION`` changes whenever a reader of the previous version would misread a
new file (a renamed or re-shaped array, a changed unit or convention). Adding an optional array or
attribute that old readers can ignore does not change it. A reader refuses any version it does not list
in ``READABLE_VERSIONS``, naming the version and the file.
"""

from __future__ import annotations

import h5py
import numpy as np

from smil.data.manifest import PARAM_SHAPES

#: The version written by this smil.
SCHEMA_VERSION = 1
#: The versions this smil can read.
READABLE_VERSIONS = (1,)

#: HDF5 format bounds: files are readable by HDF5 >= 1.10 (h5py >= 2.8).
LIBVER = ("v110", "v110")

# --- file attributes --------------------------------------------------------------------------
ATTR_SCHEMA_VERSION = "schema_version"
ATTR_JOINT_NAMES = "joint_names"  # JSON list of str
ATTR_WORLD_UNIT_M = "world_unit_m"  # float, metres per world unit
ATTR_IMAGE_SIZE = "image_size"  # int array (W, H) of every stored view image
ATTR_SOURCE_KIND = "source_kind"  # "replicant" | "sleap" | "synthetic"
ATTR_BODY_MODEL_SHA256 = "body_model_sha256"  # str, "" when none
ATTR_SMIL_VERSION = "smil_version"
ATTR_PREPROCESS_SETTINGS = "preprocess_settings"  # JSON object
ATTR_CAMERA_NAMES = "camera_names"  # JSON list of str, length V
ATTR_SPLIT_SEED = "split_seed"  # int
ATTR_SPLIT_NAMES = "split_names"  # JSON list, '["train", "val", "test"]'

REQUIRED_ATTRS = (
    ATTR_SCHEMA_VERSION,
    ATTR_JOINT_NAMES,
    ATTR_WORLD_UNIT_M,
    ATTR_IMAGE_SIZE,
    ATTR_SOURCE_KIND,
    ATTR_BODY_MODEL_SHA256,
    ATTR_SMIL_VERSION,
    ATTR_PREPROCESS_SETTINGS,
    ATTR_CAMERA_NAMES,
    ATTR_SPLIT_SEED,
    ATTR_SPLIT_NAMES,
)

SOURCE_KINDS = ("replicant", "sleap", "synthetic")

# --- splits -----------------------------------------------------------------------------------
SPLIT_NAMES = ("train", "val", "test")
SPLIT_CODES = {name: code for code, name in enumerate(SPLIT_NAMES)}  # train 0, val 1, test 2

# --- datasets (N samples, V views, J joints, B betas) -----------------------------------------
IMAGES = "images"  # (N, V) vlen uint8: JPEG bytes, empty for an invalid view
MASKS = "masks"  # (N, V) vlen uint8: PNG bytes of a uint8 mask (255 = animal), empty when absent
HAS_MASK = "has_mask"  # (N, V) bool
VIEW_VALID = "view_valid"  # (N, V) bool
K = "K"  # (N, V, 3, 3) f4, intrinsics of the stored (cropped, resized) image
R = "R"  # (N, V, 3, 3) f4, world -> camera rotation
T = "t"  # (N, V, 3) f4, world -> camera translation, world units
KEYPOINTS2D = "keypoints2d"  # (N, V, J, 2) f4, pixels (x, y) in the stored image; NaN = unknown
VISIBILITY = "visibility"  # (N, V, J) f4 in [0, 1]
KEYPOINTS3D = "keypoints3d"  # (N, J, 3) f4, world units; NaN = missing
SAMPLE_ID = "sample_id"  # (N,) str
GROUP = "group"  # (N,) str, split group
SESSION = "session"  # (N,) str
FRAME = "frame"  # (N,) int64, -1 = none
SPLIT = "split"  # (N,) uint8, SPLIT_CODES
PARAMS = "params"  # group: /params/{name} f4 and /params/has_{name} bool, for names in PARAM_NAMES

PARAM_NAMES = tuple(PARAM_SHAPES)
HAS_PREFIX = "has_"

JPEG_DTYPE = h5py.vlen_dtype(np.uint8)
STR_DTYPE = h5py.string_dtype("utf-8")

#: Arrays read per sample: chunked in blocks of ``SAMPLE_CHUNK`` whole samples, so reading a sample
#: touches one chunk of each (and a few kilobytes of it), while writing and whole-array loads handle
#: 16× fewer chunks than with one sample per chunk.
PER_SAMPLE_ARRAYS = (IMAGES, MASKS, K, R, T, KEYPOINTS2D, VISIBILITY, KEYPOINTS3D)
#: Small arrays the reader loads whole when it opens a file: chunked in blocks of ``COLUMN_CHUNK`` rows.
COLUMN_ARRAYS = (HAS_MASK, VIEW_VALID, SAMPLE_ID, GROUP, SESSION, FRAME, SPLIT)
COLUMN_CHUNK = 1024
SAMPLE_CHUNK = 16

REQUIRED_ARRAYS = PER_SAMPLE_ARRAYS + COLUMN_ARRAYS


def param_path(name: str) -> str:
    """HDF5 path of a body parameter array, e.g. ``params/betas``."""
    return f"{PARAMS}/{name}"


def has_param_path(name: str) -> str:
    """HDF5 path of a body parameter's presence flags, e.g. ``params/has_betas``."""
    return f"{PARAMS}/{HAS_PREFIX}{name}"
