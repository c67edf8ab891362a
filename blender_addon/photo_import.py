"""Face Rig from Photo, Blender's side: the photo job for the worker, its progress and cancel,
the rig made from the result, and the inverted latent kept in the .blend.

The inversion runs in the worker (``photo`` job, contract/protocol.py); nothing here imports
torch. The result is stored on the rig object as ID properties (saved with the .blend, rolled
back by undo, copied with the object): the base latent as a double array (float32 values are
exact in a double, so a reopened file renders bit for bit the same face), its shape, space
and backend, DiscoFaceGAN's noise part, and where it came from. ``rig_state`` uses it in
place of the seed (``with_stored_latent``), so reopening the file or a farm render never
inverts again.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

import bpy
import numpy as np
from bpy.types import Context, Image, Object

from .contract import catalogue
from .contract import protocol as wp
from .contract.state import RigState
from .rig.params import RigParams
from .worker_job import WorkerJobRun

LATENT_PROP = "nfr_photo_latent"
SHAPE_PROP = "nfr_photo_latent_shape"
SPACE_PROP = "nfr_photo_latent_space"
NOISE_PROP = "nfr_photo_noise"
CUTOFF_PROP = "nfr_photo_cutoff"
BACKEND_PROP = "nfr_photo_backend"
MODEL_PROP = "nfr_photo_model"
SOURCE_PROP = "nfr_photo_source"
PHOTO_PROPS = (LATENT_PROP, SHAPE_PROP, SPACE_PROP, NOISE_PROP, CUTOFF_PROP, BACKEND_PROP,
               MODEL_PROP, SOURCE_PROP)

ENCODER_NAMES = ("e4e_ffhq_encode.pt",)
RNET_NAMES = ("epoch_20.pth",)
PHOTO_TIMEOUT = 1800.0
"""Seconds a background-mode inversion may take (refinement at 1024 on CPU is slow)."""
REFERENCE_GAP = 0.05  # card sides between the neural card and the photo's card


class PhotoImportError(Exception):
    """The photo cannot be inverted (no model, no face, worker error): one line for the user."""


# ------------------------------------------------------------------ the stored latent


@dataclass(frozen=True)
class StoredLatent:
    """A rig's inverted photo: ``latent`` [num_ws, w_dim] ("w+") or [z_dim] ("z",
    DiscoFaceGAN: coefficients + ``noise`` [noise_dim]) for ``backend``."""

    backend: str
    latent: np.ndarray
    latent_space: str
    noise: np.ndarray
    cutoff: int | None


def store_latent(ob: Object, result: wp.PhotoResult, source: dict[str, Any]) -> None:
    """Keep ``result``'s base latent on ``ob`` (module docstring)."""
    latent = np.asarray(result.latent, np.float32)
    ob[LATENT_PROP] = latent.astype(np.float64).reshape(-1).tolist()
    ob[SHAPE_PROP] = [int(n) for n in latent.shape]
    ob[SPACE_PROP] = result.latent_space
    ob[NOISE_PROP] = np.asarray(result.noise, np.float32).astype(np.float64).tolist() or [0.0]
    ob[CUTOFF_PROP] = -1 if result.cutoff is None else int(result.cutoff)
    ob[BACKEND_PROP] = result.backend
    ob[MODEL_PROP] = result.model_sha256
    ob[SOURCE_PROP] = json.dumps(source, sort_keys=True)


def _floats(value: Any) -> np.ndarray:
    values = value.to_list() if hasattr(value, "to_list") else list(value)
    return np.asarray(values, np.float64).astype(np.float32)


def stored_latent(ob: Object) -> StoredLatent | None:
    """``ob``'s inverted latent, or None (none stored, or one that does not fit together)."""
    if LATENT_PROP not in ob or SHAPE_PROP not in ob:
        return None
    shape = tuple(int(n) for n in ob[SHAPE_PROP])
    latent = _floats(ob[LATENT_PROP])
    space = str(ob.get(SPACE_PROP, ""))
    if (space not in wp.PHOTO_LATENT_SPACES or int(np.prod(shape)) != latent.size
            or not np.isfinite(latent).all()):
        return None
    noise = _floats(ob.get(NOISE_PROP, ())) if space == "z" else np.zeros(0, np.float32)
    cutoff = int(ob.get(CUTOFF_PROP, -1))
    return StoredLatent(str(ob.get(BACKEND_PROP, "")), latent.reshape(shape), space, noise,
                        None if cutoff < 0 else cutoff)


def with_stored_latent(ob: Object, state: RigState) -> RigState:
    """``state`` with ``ob``'s inverted latent as its base face when one is stored for the
    state's backend: W+ as it is; DiscoFaceGAN's z rebuilt from the state's rig values (so
    its sliders still edit) and the stored noise."""
    stored = stored_latent(ob)
    if stored is None or stored.backend != state.backend:
        return state
    if stored.latent_space == "w+":
        return dataclasses.replace(state, latent=stored.latent, latent_space="w+")
    if state.rig is None:
        return state
    coefficients = RigParams.from_vector(np.asarray(state.rig, np.float32)).to_dfg_vector()
    z = np.concatenate([coefficients, stored.noise]).astype(np.float32)
    if z.shape != stored.latent.shape:
        return state
    return dataclasses.replace(state, latent=z, latent_space="z", cutoff=stored.cutoff)


# ------------------------------------------------------------------ the job


def choose_backend(prefs: Any, backend: str) -> str:
    """``backend``, or for "AUTO" the first whose required files are set (Add Face Rig's
    order)."""
    from .model_files import model_status

    if backend != "AUTO":
        return backend
    for name in catalogue.AUTO_ORDER:
        if all(status.ok for status in model_status(prefs, name) if status.required):
            return name
    return catalogue.DEFAULT_BACKEND


def _beside_models(prefs: Any, path: str, names: tuple[str, ...]) -> str:
    """``path`` made absolute, or the first of ``names`` in the models folder ('' if none)."""
    from .model_files import models_folder

    if path:
        return os.path.normpath(bpy.path.abspath(path))
    folder = models_folder(prefs)
    for name in names:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return ""


def photo_job(prefs: Any, photo: str, backend: str, *, target: str, face_index: int = 0,
              steps: int = 0, encoder: str = "", rnet: str = "") -> wp.PhotoJob:
    """The worker job inverting ``photo`` into ``backend`` with the preferences' files."""
    from .model_files import model_paths
    from .preferences import resolved_face_model_path

    paths = model_paths(prefs, backend)
    generator = paths.get(catalogue.ROLE_GENERATOR, "")
    if not generator or not os.path.isfile(generator):
        raise PhotoImportError(
            f"No {backend} generator: set it in Preferences > Add-ons > Neural Face Rig (or "
            "put it in the models folder)")
    return wp.PhotoJob(
        photo=photo, model_path=generator, backend=backend, target=target,
        device=catalogue.device_from_item(prefs.device),
        encoder=_beside_models(prefs, encoder, ENCODER_NAMES),
        rnet=_beside_models(prefs, rnet, RNET_NAMES),
        face_model=resolved_face_model_path(prefs),
        average_w_id=paths.get(catalogue.ROLE_AVERAGE_W, ""),
        rignet=paths.get(catalogue.ROLE_RIGNET, ""),
        face_index=face_index, steps=steps,
    )


def photo_file_of_image(image: Image) -> tuple[str, bool]:
    """A file the worker can read holding ``image``: its own file, or (packed or generated)
    a PNG copy in Blender's temporary folder. Returns (path, whether it is a temporary copy)."""
    path = bpy.path.abspath(image.filepath, library=image.library) if image.filepath else ""
    if path and os.path.isfile(path) and not image.packed_file:
        return os.path.normpath(path), False
    stem = os.path.join(bpy.app.tempdir, f"nfr_photo_{os.getpid()}_{id(image):x}")
    if image.packed_file is not None:  # the file's own bytes: exact, whatever its format
        suffix = os.path.splitext(image.filepath)[1].lower() or ".png"
        with open(stem + suffix, "wb") as handle:
            handle.write(image.packed_file.data)
        return stem + suffix, True
    copy = stem + ".png"  # generated or painted: its pixels as an 8-bit PNG
    pixels = np.empty(image.size[0] * image.size[1] * image.channels, np.float32)
    image.pixels.foreach_get(pixels)
    saved = bpy.data.images.new("nfr photo copy", image.size[0], image.size[1], alpha=True)
    try:
        saved.pixels.foreach_set(pixels if image.channels == 4 else _rgba(pixels, image))
        saved.filepath_raw = copy
        saved.file_format = "PNG"
        saved.save()
    finally:
        bpy.data.images.remove(saved)
    return copy, True


def _rgba(pixels: np.ndarray, image: Image) -> np.ndarray:
    channels = image.channels
    values = pixels.reshape(-1, channels)
    out = np.ones((values.shape[0], 4), np.float32)
    out[:, :min(channels, 3)] = values[:, :3]
    if channels < 3:
        out[:, 1] = out[:, 2] = values[:, 0]
    return out.reshape(-1)


class PhotoRun(WorkerJobRun):
    """One photo job in the worker (``WorkerJobRun``): it ends in ``result``, a
    ``wp.PhotoResult``; the worker checks for a cancel between stages and optimisation
    steps."""

    noun = "photo"
    result_kind = wp.PHOTO_RESULT
    error_type = PhotoImportError
    timeout = PHOTO_TIMEOUT
    stage_span = {"detect": (0.0, 0.05), "align": (0.05, 0.1), "rig": (0.1, 0.2),
                  "encode": (0.2, 0.3), "refine": (0.3, 1.0), "invert": (0.3, 1.0),
                  "done": (1.0, 1.0)}

    def __init__(self, job: wp.PhotoJob) -> None:
        super().__init__(job, wp.photo_message)

    def read_result(self, data: dict[str, Any]) -> wp.PhotoResult:
        return wp.photo_result_from_json(data)

    @property
    def result(self) -> wp.PhotoResult | None:
        return self.outcome


# ------------------------------------------------------------------ the rig


def create_photo_rig(context: Context, result: wp.PhotoResult, photo: str,
                     photo_image: Image | None = None) -> Object:
    """Add a face rig for ``result`` (Add Face Rig), its sliders at the photo's values, the
    latent stored, and the photo as a reference card beside the neural card."""
    from . import live, rig_estimate, rig_props
    from .controls_eval import control_basis

    if bpy.ops.nfr.add_rig(backend=result.backend) != {"FINISHED"}:
        raise PhotoImportError("Add Face Rig failed (see the report)")
    card = context.view_layer.objects.active
    face_rig = card.face_rig
    source = {"photo": photo if photo_image is None else f"image {photo_image.name}",
              "face_box": list(result.face_box),
              "faces_found": result.faces_found, "rig_source": result.rig_source,
              "model_sha256": result.model_sha256}
    store_latent(card, result, source)
    if result.backend == catalogue.DISCOFACEGAN:
        face_rig.psi = result.psi
    params = RigParams.from_vector(np.asarray(result.rig, np.float32))
    params = rig_estimate.store(card, params.to_vector(), "")  # clipped to the hard limits
    rig_props.set_rig_params(card, params)
    try:  # Reset returns to the photo's values, and no estimate of the seed is asked for
        card[rig_estimate.KEY_PROP] = rig_estimate.estimate_key(live.job_for(card))
    except live.LiveError:
        pass
    if control_basis(card) is not None:  # the expression as named controls (exact remainder)
        bpy.ops.nfr.controls_from_expression()
    _photo_key_light(card)
    _reference_card(card, photo, photo_image)
    live.request_update(card)
    return card


def _photo_key_light(card: Object) -> None:
    """The photo's light as the rig's key light (the inverse fit), the raw SH keeping what the
    key light does not express: the face's total light stays the photo's."""
    from .controls_eval import _lit, key_light, set_key_light
    from .properties import HARD_LIMITS, coefficient_key, deferred_rig_changes
    from .rig.key_light import key_light_to_sh, sh_to_key_light

    controls = getattr(card, "face_controls", None)
    if controls is None:
        return
    illumination = card.face_rig.illumination
    raw = np.array([getattr(illumination, coefficient_key(i)) for i in range(27)], np.float64)
    light = sh_to_key_light(raw)
    props = controls.key_light
    names = ("azimuth", "elevation", "intensity", "colour", "ambient")
    old = {name: getattr(props, name) for name in names}
    old = {name: tuple(v) if hasattr(v, "__len__") else v for name, v in old.items()}
    with deferred_rig_changes():
        set_key_light(props, light)
        # From the values Blender stored (clamped, float32): what the renders will add.
        added = key_light_to_sh(key_light(controls, None, card)) if _lit(controls) else 0.0
        residual = raw - np.asarray(added, np.float64)
        if (np.abs(residual) > np.asarray(HARD_LIMITS["illumination"])).any():
            for name, value in old.items():  # the raw SH alone, as the photo gave it
                setattr(props, name, value)
            return
        for i, value in enumerate(residual.tolist()):
            setattr(illumination, coefficient_key(i), value)


def _reference_card(card: Object, photo: str, image: Image | None) -> Object:
    """The photo on a card parented to the neural card, beside it (its aspect kept)."""
    from . import portrait

    if image is None:
        image = bpy.data.images.load(photo, check_existing=True)
    layout = portrait.portrait_layout()
    reference = portrait.build_card(f"{card.name} Photo", card.users_collection[0], layout,
                                    image)
    width, height = (max(1, n) for n in image.size)
    reference.scale = (width / max(width, height), 1.0, height / max(width, height))
    reference.parent = card
    reference.location = ((1.0 + REFERENCE_GAP) * layout.card_size, 0.0, 0.0)
    reference["nfr_photo_reference"] = True
    return reference


# ------------------------------------------------------------------ the operator's work


class PhotoImport:
    """One Face Rig from Photo: the photo's file (a temporary copy for an image of the .blend
    without one), its job running in the worker, and the rig made from its result. The modal
    operator calls ``step`` on its timer and ``cancel`` on Esc; background mode calls
    ``finish``. Nothing is added to the .blend before the result is there, and the temporary
    copy is removed however it ends."""

    def __init__(self, context: Context, *, filepath: str = "", image_name: str = "",
                 backend: str = "AUTO", face_index: int = 0, steps: int = 0,
                 encoder: str = "", rnet: str = "", target: str = "photo") -> None:
        from .preferences import addon_preferences

        self.image: Image | None = None
        self.temporary = ""
        self.card: Object | None = None
        if image_name:
            image = bpy.data.images.get(image_name)
            if image is None:
                raise PhotoImportError(f"No image {image_name!r} in this file")
            photo, temporary = photo_file_of_image(image)
            self.image, self.temporary = image, photo if temporary else ""
            self.label = image.name
        else:
            photo = os.path.normpath(bpy.path.abspath(filepath)) if filepath else ""
            if not os.path.isfile(photo):
                raise PhotoImportError(f"Photo not found: {photo or '(no file chosen)'}")
            self.label = os.path.basename(photo)
        self.photo = photo
        try:
            prefs = addon_preferences(context)
            job = photo_job(prefs, photo, choose_backend(prefs, backend), target=target,
                            face_index=face_index, steps=steps, encoder=encoder, rnet=rnet)
            self.run = PhotoRun(job)
        except BaseException:
            self._remove_temporary()
            raise

    def step(self, context: Context) -> str:
        """Poll the job: "running", "done" (the rig is made: ``card``) or "failed" (raises
        nothing: ``error`` says why; a cancel is "failed" with an empty error)."""
        if not self.run.poll():
            return "running"
        self._remove_temporary()
        if self.run.result is None:
            return "failed"
        self.card = create_photo_rig(context, self.run.result, self.photo, self.image)
        return "done"

    @property
    def error(self) -> str:
        return self.run.error

    def finish(self, context: Context, progress: Any = None) -> Object:
        """Wait for the result (background mode) and make the rig."""
        try:
            result = self.run.wait(progress=progress)
        finally:
            self._remove_temporary()
        self.card = create_photo_rig(context, result, self.photo, self.image)
        return self.card

    def cancel(self) -> None:
        self.run.cancel()
        self._remove_temporary()

    def _remove_temporary(self) -> None:
        if self.temporary:
            try:
                os.remove(self.temporary)
            except OSError:
                pass
            self.temporary = ""
