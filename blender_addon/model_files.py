"""Model files per backend: what is needed, where users get it, where to put it, and whether
the file there looks right.

Nothing licensed ships with the extension. Each file has a path field in the preferences;
an empty field means "look in the models folder" (``models_dir``, default the extension's user
folder ``models``) under the file's usual names. The checks are cheap enough to run while
drawing: existence, readability, size and the first/last bytes of the container (pickle STOP
opcode, zip central directory, safetensors header, TF index footer, MAT header). No torch, no
unpickling: the worker's readers do the full validation when they load.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bpy

from .contract import catalogue
from .contract.errors import ContractError
from .contract.files import STYLERIG_FORMAT, STYLERIG_GLOB, VAE_FACTORS, vae_checkpoint_prefix
from .dependencies import extension_user_folder
from .rig.bfm_convert import FILES

FACE_MODEL_FILENAME = "BFM_model_front.mat"
PREFERENCES = "Preferences > Add-ons > Neural Face Rig"
NVIDIA_NC = "NVIDIA licence: non-commercial use only"

_HEAD_BYTES = 4096
_TAIL_BYTES = 65536 + 22  # a zip's end record sits within its last 64 KiB + 22 bytes
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_TF_TABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)
_SAFETENSORS_MAX_HEADER = 100 << 20
_SIDECAR_MAX_BYTES = 1 << 20  # a StyleRig sidecar is a few KB of settings
_NOT_MODELS = {
    b"\x89PNG\r\n\x1a\n": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive (unpack it first)",
    b"<!DOCTYPE": "a web page (the download saved an HTML page, not the file)",
    b"<html": "a web page (the download saved an HTML page, not the file)",
}


@dataclass(frozen=True)
class ModelFileStatus:
    """One file a backend needs, as found now. ``how_to_get`` lines say what it is, where
    users get it and where to put it; ``problem`` is None when the file looks right."""

    label: str
    path: str
    ok: bool
    problem: str | None
    how_to_get: tuple[str, ...]
    required: bool = True


@dataclass(frozen=True)
class ModelFile:
    """A kind of model file: where its path lives in the preferences, its usual names in the
    models folder (the first one found is used), how to check it and how users obtain it."""

    role: str
    label: str  # the preferences field's name
    noun: str  # in sentences: "No {noun} set."
    pref: str
    names: tuple[str, ...]
    check: Callable[[str], str | None]  # problem of an existing, readable path, or None
    what: str
    sources: tuple[str, ...]
    folder: bool = False
    required: bool = True

    def how_to_get(self, models_folder: str) -> tuple[str, ...]:
        kind = "folder" if self.folder else "file"
        names = " or ".join(self.names)
        return (
            f"Needed: {self.what}",
            *self.sources,
            f"Put it in the models folder as {names}: {models_folder}",
            f"or set its {kind} path in {PREFERENCES} > {self.label}.",
        )


# ------------------------------------------------------------------ cheap content checks


def _read_ends(path: str) -> tuple[bytes, bytes, int]:
    """(first bytes, last bytes, size); OSError when unreadable."""
    with open(path, "rb") as stream:
        head = stream.read(_HEAD_BYTES)
        size = os.fstat(stream.fileno()).st_size
        stream.seek(max(0, size - _TAIL_BYTES))
        tail = stream.read()
    return head, tail, size


def _foreign(head: bytes) -> str | None:
    for magic, what in _NOT_MODELS.items():
        if head.startswith(magic):
            return what
    return None


def _safetensors_problem(path: str, head: bytes, size: int) -> str | None:
    """Truncation check of a safetensors file: header length, JSON header, data extent."""
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len > _SAFETENSORS_MAX_HEADER or 8 + header_len > size:
        return f"is truncated (safetensors header of {header_len} bytes, file {size} bytes)"
    with open(path, "rb") as stream:
        stream.seek(8)
        raw = stream.read(header_len)
    try:
        header = json.loads(raw)
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"),
                  default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError) as exc:
        return f"has a damaged safetensors header ({type(exc).__name__})"
    if 8 + header_len + end > size:
        return f"is truncated ({size} bytes, its header describes {8 + header_len + end})"
    return None


def container(head: bytes) -> str:
    """'zip' (torch), 'torch-legacy', 'pickle', 'safetensors' or '' from the first bytes."""
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch-legacy"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"
    return ""


def _checkpoint_problem(
    path: str, accepted: dict[str, str], expected: str, sidecar: bool
) -> str | None:
    """Problem of a checkpoint whose container must be one of ``accepted`` (container ->
    what it is called), or None. A converted .safetensors also needs its .json sidecar."""
    head, tail, size = _read_ends(path)
    kind = container(head)
    if kind not in accepted:
        found = _foreign(head) or (
            f"a {_ALL_CONTAINERS[kind]} file" if kind else f"of an unknown format (first bytes "
            f"{head[:8].hex(' ')})"
        )
        return f"is {found}; expected {expected}"
    if kind == "pickle" and not tail.endswith(b"."):
        return f"is truncated (a pickle of {size} bytes without its end mark): download it again"
    if kind == "zip" and b"PK\x05\x06" not in tail:
        return f"is truncated (a zip of {size} bytes without its directory): download it again"
    if kind == "safetensors":
        problem = _safetensors_problem(path, head, size)
        if problem is not None:
            return problem
        json_path = os.path.splitext(path)[0] + ".json"
        if sidecar and not os.path.isfile(json_path):
            return (f"has no {os.path.basename(json_path)} next to it (the converter writes "
                    "both files; keep them together)")
    return None


_STYLEGAN2_CONTAINERS = {
    "pickle": "NVIDIA .pkl",
    "zip": "PyTorch .pt",
    "torch-legacy": "PyTorch .pt",
    "safetensors": "converted .safetensors",
}
_ALL_CONTAINERS = {"pickle": "pickle", "zip": "PyTorch", "torch-legacy": "PyTorch",
                   "safetensors": "safetensors"}


def check_stylegan2(path: str) -> str | None:
    return _checkpoint_problem(
        path, _STYLEGAN2_CONTAINERS,
        "a StyleGAN2 .pkl, a rosinality/e4e .pt or a converted .safetensors", sidecar=True,
    )


def check_discofacegan(path: str) -> str | None:
    accepted = {"pickle": "TensorFlow .pkl", "safetensors": "converted .safetensors"}
    return _checkpoint_problem(
        path, accepted, "DiscoFaceGAN's TensorFlow .pkl or its converted .safetensors",
        sidecar=True,
    )


def check_rignet(path: str) -> str | None:
    """The file ``nfr train rignet`` writes: stylerig-<sha16>.safetensors and its .json
    sidecar of format 'nfr-stylerig' (the worker checks the weights' digest when it loads)."""
    problem = _checkpoint_problem(
        path, {"safetensors": "safetensors"},
        "a StyleRig .safetensors made by 'nfr train rignet'", sidecar=True,
    )
    if problem is not None:
        return problem
    sidecar = os.path.splitext(path)[0] + ".json"
    try:
        if os.path.getsize(sidecar) > _SIDECAR_MAX_BYTES:
            return f"has a sidecar {os.path.basename(sidecar)} too large to be one"
        with open(sidecar, "rb") as stream:
            meta = json.loads(stream.read(_SIDECAR_MAX_BYTES))
    except (OSError, ValueError, RecursionError) as exc:
        return f"has an unreadable sidecar {os.path.basename(sidecar)} ({str(exc)[:100]})"
    found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
    if found != STYLERIG_FORMAT:
        return (f"has a sidecar of format {found!r:.40}; expected {STYLERIG_FORMAT!r} (the "
                "stylerig-*.json that 'nfr train rignet' writes beside it)")
    return None


def check_average_w(path: str) -> str | None:
    """A text file of numbers (np.savetxt layout); the loader checks the count."""
    head, _, _ = _read_ends(path)
    foreign = _foreign(head)
    if foreign is None and container(head) in _ALL_CONTAINERS:
        foreign = f"a {_ALL_CONTAINERS[container(head)]} file"
    if foreign is not None:
        return f"is {foreign}; expected a text file of 14 x 512 numbers"
    first = head.split(maxsplit=1)[0] if head.split() else b""
    try:
        float(first.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return (f"does not start with a number (found {first[:20]!r}); expected a text file of "
                "14 x 512 numbers")
    return None


def check_vae_folder(path: str) -> str | None:
    """DiscoFaceGAN's vae/weights: id, exp, gamma, rot, each a TF checkpoint (index + data)."""
    missing = [f for f in VAE_FACTORS if not os.path.isdir(os.path.join(path, f))]
    if missing:
        return (f"has no {', '.join(missing)} folder(s); expected id, exp, gamma and rot as in "
                "DiscoFaceGAN's vae/weights")
    for factor in VAE_FACTORS:
        try:
            prefix = vae_checkpoint_prefix(os.path.join(path, factor))
        except ContractError as exc:
            return f"has a bad {factor} folder: {exc}"
        _, tail, size = _read_ends(prefix + ".index")
        if not tail.endswith(_TF_TABLE_MAGIC):
            return f"has a damaged {factor} checkpoint index ({prefix}.index, {size} bytes)"
        shard = prefix + ".data-00000-of-00001"
        if not os.path.isfile(shard) or os.path.getsize(shard) == 0:
            return f"lacks the {factor} checkpoint data {os.path.basename(shard)}"
    return None


def check_face_model(path: str) -> str | None:
    """A MATLAB v5/v7 file (the layout Deep3DFaceRecon writes and scipy reads)."""
    head, _, size = _read_ends(path)
    if size < 128:
        return f"is too small for a .mat file ({size} bytes)"
    if head.startswith(b"MATLAB 7.3"):
        return "is a MATLAB v7.3 (HDF5) file; re-save it with save(..., '-v7')"
    if head[126:128] not in (b"IM", b"MI"):
        found = _foreign(head) or f"first bytes {head[:8].hex(' ')}"
        return f"is not a MATLAB .mat file ({found})"
    return None


# ------------------------------------------------------------------ the files


def _face_model_sources() -> tuple[str, ...]:
    """How to make BFM_model_front.mat, with the input list of rig.bfm_convert."""
    inputs = tuple(
        line
        for raw in FILES.values()
        for line in (f"    {raw.name} ({raw.what})", f"        from {raw.source}")
    )
    return (
        "Nothing licensed ships with this extension: make it from your own downloads with "
        "the project's command line, from one folder holding these six files:",
        *inputs,
        f"    nfr rig convert-bfm --bfm-dir FOLDER --out {FACE_MODEL_FILENAME}",
    )


STYLEGAN2_GENERATOR = ModelFile(
    role=catalogue.ROLE_GENERATOR,
    label="StyleGAN2 Generator",
    noun="StyleGAN2 generator",
    pref="stylegan2_generator_path",
    names=("stylegan2.safetensors", "ffhq.pkl", "stylegan2-ffhq-config-f.pkl"),
    check=check_stylegan2,
    what="a StyleGAN2 generator: NVIDIA .pkl (stylegan2-ada-pytorch, stylegan3 or the original "
    "TensorFlow release), rosinality .pt, e4e .pt, or the project's .safetensors.",
    sources=(
        "Get FFHQ 1024 from NVIDIA: ffhq.pkl (github.com/NVlabs/stylegan2-ada-pytorch) or "
        f"stylegan2-ffhq-config-f.pkl (github.com/NVlabs/stylegan2); {NVIDIA_NC}.",
        "Or your own fine-tune, a rosinality .pt (github.com/rosinality/stylegan2-pytorch) or "
        "e4e_ffhq_encode.pt (github.com/omertov/encoder4editing).",
        "Loads fastest after 'nfr convert SRC stylegan2.safetensors' (writes the .json too).",
    ),
)

DFG_GENERATOR = ModelFile(
    role=catalogue.ROLE_GENERATOR,
    label="DiscoFaceGAN Generator",
    noun="DiscoFaceGAN generator",
    pref="dfg_generator_path",
    names=("discofacegan.safetensors", "discofacegan.pkl"),
    check=check_discofacegan,
    what="DiscoFaceGAN's generator (256 px): the released TensorFlow .pkl, or its conversion "
    "by 'nfr dfg convert SRC discofacegan.safetensors'.",
    sources=(
        "Get the pre-trained model from the download link in github.com/microsoft/DiscoFaceGAN "
        "(generate_images.py: url_pretrained_model_ffhq).",
        "Code MIT; its StyleGAN parts and the FFHQ-trained weights are NVIDIA CC BY-NC: "
        "non-commercial use only.",
    ),
)

DFG_AVERAGE_W = ModelFile(
    role=catalogue.ROLE_AVERAGE_W,
    label="DiscoFaceGAN Average W",
    noun="DiscoFaceGAN average W file",
    pref="dfg_average_w_path",
    names=("discofacegan-average_w_id.txt",),
    check=check_average_w,
    what="the generator's identity-average W (text, 14 x 512 numbers) for the "
    "attribute-preserving truncation (psi below 1).",
    sources=(
        "Get it with the model (the average_w_id link in DiscoFaceGAN's generate_images.py), or "
        "compute it: nfr dfg average-w --weights GENERATOR --vae VAE_FOLDER --out FILE",
    ),
)

DFG_VAE = ModelFile(
    role=catalogue.ROLE_VAE,
    label="DiscoFaceGAN VAE Folder",
    noun="DiscoFaceGAN VAE folder",
    pref="dfg_vae_dir",
    names=("discofacegan_vae",),
    check=check_vae_folder,
    what="DiscoFaceGAN's coefficient VAEs (for Randomise): a folder with id, exp, gamma and "
    "rot, each holding stage1_epoch_395.ckpt.index and .data-00000-of-00001.",
    sources=("Copy the folder vae/weights of github.com/microsoft/DiscoFaceGAN (MIT).",),
    folder=True,
    required=False,
)

RIGNET = ModelFile(
    role=catalogue.ROLE_RIGNET,
    label="StyleRig RigNet",
    noun="RigNet",
    pref="rignet_path",
    names=(STYLERIG_GLOB,),
    check=check_rignet,
    what="a StyleRig file (DFR + RigNet) trained for the StyleGAN2 generator above: "
    "stylerig-<16 hex digits>.safetensors with its .json; it turns rig values into W+ edits.",
    sources=(
        "StyleRig weights are not released anywhere: train one for your generator on your GPU "
        "with 'nfr train rignet' (see 'nfr train rignet --help').",
    ),
)

FACE_MODEL = ModelFile(
    role="face_model",
    label="Face Model",
    noun="face model",
    pref="face_model_path",
    names=(FACE_MODEL_FILENAME,),
    check=check_face_model,
    what=f"{FACE_MODEL_FILENAME}, the 3D Morphable Face Model in Deep3DFaceRecon's layout.",
    sources=_face_model_sources(),
)

# What each backend (FaceRig.backend) reads, plus the face model of the 3DMM head.
# The catalogue says which roles a backend reads; these are the files behind the roles.
MODEL_SETS: dict[str, tuple[ModelFile, ...]] = {
    catalogue.STYLEGAN2.id: (STYLEGAN2_GENERATOR,),
    catalogue.DISCOFACEGAN.id: (DFG_GENERATOR, DFG_AVERAGE_W, DFG_VAE),
    catalogue.STYLERIG.id: (STYLEGAN2_GENERATOR, RIGNET),
    FACE_MODEL.role: (FACE_MODEL,),
}


# ------------------------------------------------------------------ resolving and checking


def models_folder(prefs: Any) -> str:
    """The folder searched for files whose path field is empty."""
    if prefs.models_dir:
        return bpy.path.abspath(prefs.models_dir)
    return extension_user_folder("models")


def _model_files(name: str) -> tuple[ModelFile, ...]:
    try:
        return MODEL_SETS[name]
    except KeyError:
        raise ValueError(f"model set {name!r}: expected one of {', '.join(MODEL_SETS)}") from None


def _resolve(prefs: Any, spec: ModelFile, override: str) -> str:
    own = override and spec.role == catalogue.ROLE_GENERATOR
    value = override if own else getattr(prefs, spec.pref)
    if value:
        return bpy.path.abspath(value)
    folder = models_folder(prefs)
    for name in spec.names:
        if "*" in name:  # a pattern: the newest match (several RigNets: the latest trained)
            matches = sorted(glob.glob(os.path.join(glob.escape(folder), name)),
                             key=_mtime, reverse=True)
            if matches:
                return matches[0]
            continue
        candidate = os.path.join(folder, name)
        if os.path.exists(candidate):
            return candidate
    return ""


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def model_paths(prefs: Any, backend: str, generator_path: str = "") -> dict[str, str]:
    """role -> absolute path ('' when unset and not in the models folder) for ``backend``
    ('stylegan2', 'discofacegan', 'stylerig' or 'face_model'). ``generator_path`` (a rig's
    own model file) overrides the preferences' generator."""
    return {spec.role: _resolve(prefs, spec, generator_path) for spec in _model_files(backend)}


def file_problem(spec: ModelFile, path: str) -> str | None:
    """Why ``path`` cannot be this file (existence, type, readability, content), or None."""
    noun = spec.noun[0].upper() + spec.noun[1:]
    if not path:
        return f"No {spec.noun} set."
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return f"{noun} not found: {path}"
    except OSError as exc:
        return f"{noun} cannot be read: {path} ({exc.strerror or exc})"
    if spec.folder != os.path.isdir(path):
        return f"{noun} path is not a {'folder' if spec.folder else 'file'}: {path}"
    if not spec.folder and not os.path.isfile(path):  # a FIFO or device: never open it here
        return f"{noun} {path}: expected a regular file, found a FIFO, device or socket"
    try:
        if spec.folder:  # its files change without changing the folder's time stamp
            problem = spec.check(path)
        else:
            with open(path, "rb") as stream:
                stream.read(1)
            if stat.st_size == 0:
                return f"{noun} {path} is empty (0 bytes)"
            problem = _content_problem(spec.check, path, stat.st_mtime_ns, stat.st_size)
    except OSError as exc:
        return f"{noun} cannot be read: {path} ({exc.strerror or exc})"
    return None if problem is None else f"{noun} {path} {problem}"


@functools.lru_cache(maxsize=64)
def _content_problem(
    check: Callable[[str], str | None], path: str, _mtime_ns: int, _size: int
) -> str | None:
    """``check(path)``, remembered while the file's time stamp and size stay the same (panels
    redraw often)."""
    return check(path)


def model_status(prefs: Any, backend: str, generator_path: str = "") -> list[ModelFileStatus]:
    """Every file ``backend`` reads, checked cheaply (safe to call while drawing)."""
    folder = models_folder(prefs)
    statuses = []
    for spec in _model_files(backend):
        path = _resolve(prefs, spec, generator_path)
        problem = file_problem(spec, path)
        statuses.append(ModelFileStatus(spec.label, path, problem is None, problem,
                                        spec.how_to_get(folder), spec.required))
    return statuses


def face_model_problem(path: str) -> str | None:
    """Why the face-model path (as typed, ``//`` allowed) is not usable, or None."""
    return file_problem(FACE_MODEL, bpy.path.abspath(path) if path else "")
