"""The one catalogue of backends and the vocabularies both sides speak.

A backend id (``RigState.backend``, the add-on's Backend menu, the worker's registry) names an
entry of ``BACKENDS``; what it reads (file roles), the size it renders when a model file does
not say, the rig groups and named controls it honours, whether SeFa sliders apply and whether
it can read the rig values of a base face (``estimate``) are stated here once. Device,
precision and noise-mode names are the strings the protocol carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import ContractError

# ------------------------------------------------------------------ vocabularies

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
"""Device names of a job: "auto" (CUDA when the worker's torch has it, else the CPU), "cpu",
"cuda"; "cuda:N" picks a GPU (``check_device``)."""
DEVICE_ITEMS: tuple[tuple[str, str, str], ...] = (
    ("AUTO", "Auto", "CUDA when the worker's torch finds a CUDA device, else the CPU"),
    ("CPU", "CPU", "Always the CPU (installs the CPU-only torch build)"),
    ("CUDA", "CUDA", "An NVIDIA GPU through CUDA torch"),
)
"""Blender enum items of the device preference; ``device_from_item`` maps them to DEVICES."""

Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
"""Compute dtypes: fp32 (final frames, bit-reproducible), fp16 (CUDA), bf16 (native-bf16 CPUs
and GPUs; previews)."""

NoiseMode = Literal["const", "none", "random"]
NOISE_MODES: tuple[str, ...] = ("const", "none", "random")
"""Per-layer noise: the checkpoint's constant buffers, none, or seeded random noise."""
DEFAULT_NOISE_MODE: NoiseMode = "const"

LATENT_SPACES: tuple[str, ...] = ("z", "w", "w+")

RIG_GROUPS: tuple[str, ...] = (
    "identity", "expression", "reflectance", "rotation", "illumination", "translation",
)
"""The rig's groups in canonical order (rig/params.py owns their sizes)."""
CONTROLS: dict[str, tuple[str, ...]] = {
    "pose": ("rotation",),
    "expression": ("expression",),
    "illumination": ("illumination",),
}
"""Named controls of a RigNet and the rig groups each one sets."""

# ------------------------------------------------------------------ file roles

ROLE_GENERATOR = "generator"
ROLE_AVERAGE_W = "average_w_id"
ROLE_VAE = "vae"
ROLE_RIGNET = "rignet"
FILE_ROLES: tuple[str, ...] = (ROLE_GENERATOR, ROLE_AVERAGE_W, ROLE_VAE, ROLE_RIGNET)
"""Names of the files of a job (``RenderJob.model_path`` is the generator; ``files`` holds
the others by these names)."""


# ------------------------------------------------------------------ backends


@dataclass(frozen=True)
class BackendSpec:
    """One backend.

    files: roles it needs (the generator first); optional_files: roles it uses when present.
    default_resolution: output pixels when a model file does not say (None: read it from the
    file). groups: rig groups that change its face; controls: named controls it drives (a
    subset of CONTROLS). sefa: SeFa sliders apply. estimate: it can read the rig values of
    the face it would render without edits (what sliders start from).
    """

    id: str
    label: str
    description: str
    title: str  # heading of its model files in the preferences
    files: tuple[str, ...]
    optional_files: tuple[str, ...] = ()
    default_resolution: int | None = None
    groups: tuple[str, ...] = ()
    controls: tuple[str, ...] = ()
    sefa: bool = True
    estimate: bool = False

    @property
    def roles(self) -> tuple[str, ...]:
        return self.files + self.optional_files


STYLEGAN2 = BackendSpec(
    id="stylegan2",
    label="StyleGAN2",
    description="A StyleGAN2 generator posed by seed and SeFa sliders only",
    title="StyleGAN2 (SeFa sliders)",
    files=(ROLE_GENERATOR,),
)
DISCOFACEGAN = BackendSpec(
    id="discofacegan",
    label="DiscoFaceGAN",
    description="DiscoFaceGAN: the rig coefficients drive the generator",
    title="DiscoFaceGAN",
    files=(ROLE_GENERATOR, ROLE_AVERAGE_W),
    optional_files=(ROLE_VAE,),
    default_resolution=256,
    groups=("identity", "expression", "reflectance", "rotation", "illumination"),
    controls=tuple(CONTROLS),
    estimate=True,
)
STYLERIG = BackendSpec(
    id="stylerig",
    label="StyleRig",
    description="A RigNet edits a StyleGAN2's latent to match the rig values",
    title="StyleRig (RigNet on the StyleGAN2 generator)",
    files=(ROLE_GENERATOR, ROLE_RIGNET),
    groups=("expression", "rotation", "illumination"),
    controls=tuple(CONTROLS),
    estimate=True,
)

BACKENDS: dict[str, BackendSpec] = {spec.id: spec for spec in (STYLEGAN2, DISCOFACEGAN, STYLERIG)}
"""Every backend by id, in menu order."""
DEFAULT_BACKEND = STYLEGAN2.id
AUTO_ORDER: tuple[str, ...] = (DISCOFACEGAN.id, STYLERIG.id, STYLEGAN2.id)
"""Rig-driven backends first: "Auto" picks the first whose required files are all there."""


def backend(backend_id: str) -> BackendSpec:
    """The catalogue entry of ``backend_id``; ContractError naming the known ids otherwise."""
    try:
        return BACKENDS[backend_id]
    except (KeyError, TypeError):
        raise ContractError(
            f"backend: expected one of {', '.join(BACKENDS)}, found {backend_id!r}"
        ) from None


def backend_items() -> tuple[tuple[str, str, str], ...]:
    """(id, label, description) of every backend: a Blender enum's items."""
    return tuple((spec.id, spec.label, spec.description) for spec in BACKENDS.values())


def device_from_item(item: str) -> str:
    """A DEVICE_ITEMS identifier ("AUTO", "CPU", "CUDA") -> its DEVICES name."""
    name = item.lower()
    if name not in DEVICES:
        raise ContractError(f"device: expected one of {', '.join(DEVICES)}, found {item!r}")
    return name


def check_device(device: object, where: str = "device") -> str:
    """``device`` when it is a DEVICES name or "cuda:N"; ContractError otherwise."""
    text = device if isinstance(device, str) else ""
    base, _, index = text.partition(":")
    if base not in DEVICES or (index and (base != "cuda" or not index.isdigit()
                                          or len(index) > 3)):
        raise ContractError(
            f"{where}: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found {device!r:.80}"
        )
    return text
