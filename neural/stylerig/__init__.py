"""StyleRig for any StyleGAN2 (Tewari et al. 2020; docs/REFERENCE.md §5, docs/STYLERIG.md).

- ``dfr``: DFR, the MLP from W+ to the 257 rig values, trained through the rig renderer;
- ``rignet``: RigNet, per-W+-row encoder/decoder editing W+ towards target rig values;
- ``data``: generator samples (seeds -> W+ -> images cropped to the rig camera, landmarks);
- ``losses``: render, landmark and prior losses; RigNet's reconstruction/edit/consistency;
- ``trainer``: one resumable, mixed-precision, DistributedDataParallel loop for both;
- ``evaluate``: edit accuracy, identity preservation and per-layer |Δw| report;
- ``backend``: the "stylerig" runtime backend (base W+ + target rig -> edited W+).

Submodules are imported explicitly (``from neural_face_rig.neural.stylerig import dfr``).
"""

from ..errors import NeuralError


class StyleRigError(NeuralError):
    """A StyleRig model, training run or sample bank is malformed or used inconsistently."""
