"""The rig values of a photo: R-Net when its file is given, landmark fitting otherwise.

Both read the Deep3DFaceRecon crop (``align.align_d3d``), whose camera is the rig's 224 px
camera (focal 1015, distance 10 dm): R-Net predicts all 257 values; the landmark fit
(``rig.fitting``) recovers rotation, translation and expression (and identity, with its
Gaussian prior) from the 68 points mapped into the crop; reflectance and light stay neutral.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...rig.camera import CAMERA_224
from ...rig.face_model import FaceModel
from ...rig.fitting import fit_landmarks
from ...rig.geometry import TorchFaceModel
from ...rig.params import RigParams
from . import PhotoError
from .align import D3DCrop
from .rnet import RNet, rig_from_crop

SOURCE_RNET = "rnet"
SOURCE_LANDMARKS = "landmarks"


@dataclass(frozen=True)
class PhotoRig:
    """``rig`` the canonical 257 values; ``source`` 'rnet' or 'landmarks'."""

    rig: RigParams
    source: str


def rig_from_landmarks(
    model: FaceModel | TorchFaceModel,
    crop_landmarks: np.ndarray,
    *,
    fit_identity: bool = True,
    landmark_sigma: float = 2.0,
) -> RigParams:
    """Rig values from the 68 landmarks [68, 2] in crop pixels (the rig's 224 camera).
    ``landmark_sigma`` px: the landmark noise (dlib on a photo: ~2 px)."""
    fit = fit_landmarks(model, np.asarray(crop_landmarks, np.float64), CAMERA_224,
                        fit_identity=fit_identity, landmark_sigma=landmark_sigma)
    assert isinstance(fit, RigParams)
    return fit


def photo_rig(
    crop: D3DCrop,
    *,
    rnet: RNet | None = None,
    model: FaceModel | TorchFaceModel | None = None,
    fit_identity: bool = True,
) -> PhotoRig:
    """R-Net on the crop when ``rnet`` is given, else the landmark fit with ``model``."""
    if rnet is not None:
        return PhotoRig(RigParams.from_vector(rig_from_crop(rnet, crop.image)), SOURCE_RNET)
    if model is None:
        raise PhotoError(
            "photo rig values: give an R-Net file or a face model for the landmark fit"
        )
    return PhotoRig(rig_from_landmarks(model, crop.landmarks, fit_identity=fit_identity),
                    SOURCE_LANDMARKS)
