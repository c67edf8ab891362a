"""Build Deep3DFaceRecon's ``BFM_model_front.mat`` from the files a user downloads themselves.

Inputs (FILES): the Basel Face Model 2009, Guo et al.'s expression PCA (``Exp_Pca.bin``) and
four index/metadata files from the Deep3DFaceRecon_pytorch repository. Maths:

    shape/texture vertices = trimIndex[idx]      (BFM 2009 mesh, 53,490 vertices)
    expression vertices    = idx                 (expression mesh, 53,215 vertices)
    idBase   = shapePC[:, :80] * shapeEV[:80] / 1e5      meanshape = shapeMU / 1e5
    exBase   = expPC[:, :64]   * std_exp[:64] / 1e5      meantex   = texMU
    texBase  = texPC[:, :80]   * texEV[:80]

BFM micrometres / 1e5 = decimetres. The output is written atomically and validated by the
same code that loads it.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FaceModelError
from .face_model import (
    N_EXPRESSION,
    N_IDENTITY,
    N_REFLECTANCE,
    TOPOLOGY_KEYS,
    FaceModel,
    topology_from_mat,
    write_face_model_mat,
)
from .file_limits import (
    FACE_MODEL_MAX_BYTES,
    TEXT_MAX_BYTES,
    check_regular_file,
    read_regular_file,
)
from .matfile import MatContents, read_mat

MICROMETRES_PER_DM = 1e5
_DEEP3D = (
    "the BFM/ folder of the Deep3DFaceRecon_pytorch repository "
    "(github.com/sicxu/Deep3DFaceRecon_pytorch)"
)


@dataclass(frozen=True)
class RawFile:
    """One input of the conversion: official file name, what it is, where users get it."""

    name: str
    what: str
    source: str

    @property
    def hint(self) -> str:
        return f"Get {self.name} from {self.source}."


# Keyed by the parameter names of convert_bfm (the CLI options are these with dashes).
FILES: dict[str, RawFile] = {
    "morphable_model_mat": RawFile(
        "01_MorphableModel.mat",
        "Basel Face Model 2009",
        "the University of Basel (faces.dmi.unibas.ch/bfm; free, after registering)",
    ),
    "exp_pca_bin": RawFile(
        "Exp_Pca.bin",
        "expression basis of Guo et al.",
        "Guo et al.'s 3DFace \"CoarseData\" (CoarseData.zip; the Deep3DFaceRecon_pytorch README "
        "links it)",
    ),
    "front_idx_mat": RawFile("BFM_front_idx.mat", "front-face vertex index", _DEEP3D),
    "exp_idx_mat": RawFile("BFM_exp_idx.mat", "expression-mesh vertex index", _DEEP3D),
    "facemodel_info_mat": RawFile("facemodel_info.mat", "face-model triangles and masks", _DEEP3D),
    "std_exp_txt": RawFile("std_exp.txt", "expression standard deviations", _DEEP3D),
}

_BFM_KEYS = ("shapePC", "shapeEV", "shapeMU", "texPC", "texEV", "texMU")


def convert_bfm(
    morphable_model_mat: str | os.PathLike[str],
    exp_pca_bin: str | os.PathLike[str],
    front_idx_mat: str | os.PathLike[str],
    exp_idx_mat: str | os.PathLike[str],
    facemodel_info_mat: str | os.PathLike[str],
    std_exp_txt: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
) -> FaceModel:
    """Convert the raw inputs to ``out_path`` (``BFM_model_front.mat`` layout) and return the
    model. Raises FaceModelError naming the bad input; ``out_path`` is then left untouched."""
    paths = {
        "morphable_model_mat": Path(morphable_model_mat),
        "exp_pca_bin": Path(exp_pca_bin),
        "front_idx_mat": Path(front_idx_mat),
        "exp_idx_mat": Path(exp_idx_mat),
        "facemodel_info_mat": Path(facemodel_info_mat),
        "std_exp_txt": Path(std_exp_txt),
    }
    _require_inputs(paths)
    model = _build_model(paths)
    output = Path(out_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_face_model_mat(model, output)
    return model


def convert_bfm_dir(folder: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> FaceModel:
    """convert_bfm with every input taken from ``folder`` under its official name (FILES)."""
    return convert_bfm(
        **{key: Path(folder) / raw.name for key, raw in FILES.items()}, out_path=out_path
    )


def _require_inputs(paths: dict[str, Path]) -> None:
    """All missing inputs in one message, each with where to get it."""
    missing = [
        f"{FILES[key].name} ({FILES[key].what}), looked for {path}: get it from "
        f"{FILES[key].source}"
        for key, path in paths.items()
        if not path.is_file()
    ]
    if missing:
        raise FaceModelError("missing BFM input file(s): " + "; ".join(missing))


def _build_model(paths: dict[str, Path]) -> FaceModel:
    """The face model from the six inputs, every input checked on the way."""
    bfm = _read(paths, "morphable_model_mat", _BFM_KEYS)
    shape_mu = bfm.vector("shapeMU", meaning="x y z per BFM vertex")
    if shape_mu.size % 3:
        raise FaceModelError(
            f"{bfm.source}: field 'shapeMU' has {shape_mu.size} values, expected a multiple of 3"
        )
    n_bfm = shape_mu.size // 3
    front_ids, bfm_ids, n_expression = _front_vertices(paths, n_bfm)
    n = front_ids.size
    topology = topology_from_mat(
        _read(paths, "facemodel_info_mat", TOPOLOGY_KEYS),
        n,
        f"N = {n} vertices selected by {paths['front_idx_mat'].name}",
    )

    shape_rows, expression_rows = _xyz_rows(bfm_ids), _xyz_rows(front_ids)
    per_bfm_vertex = f"3 x {n_bfm} BFM vertices from 'shapeMU'"
    shape_pc = bfm.matrix("shapePC", (3 * n_bfm, None), meaning=per_bfm_vertex)
    tex_pc = bfm.matrix("texPC", (3 * n_bfm, None), meaning=per_bfm_vertex)
    tex_mu = bfm.vector("texMU", 3 * n_bfm, meaning=per_bfm_vertex)
    exp_pc = _read_exp_pca(paths["exp_pca_bin"], n_expression, paths["exp_idx_mat"].name)
    std_exp = _read_std_exp(paths["std_exp_txt"], exp_pc.shape[0])

    id_base = _scaled_basis(bfm, "shapePC", shape_pc, "shapeEV", shape_rows, N_IDENTITY)
    tex_base = _scaled_basis(bfm, "texPC", tex_pc, "texEV", shape_rows, N_REFLECTANCE)
    exp_base = exp_pc[:N_EXPRESSION, expression_rows].T * std_exp[:N_EXPRESSION]
    if not np.isfinite(exp_base).all():
        raise FaceModelError(
            f"{paths['exp_pca_bin']}: the expression components contain NaN or infinite "
            f"values; the file is damaged. {FILES['exp_pca_bin'].hint}"
        )
    return FaceModel(
        mean_shape=_float32(bfm.finite("shapeMU", shape_mu[shape_rows]) / MICROMETRES_PER_DM),
        id_base=_float32(id_base / MICROMETRES_PER_DM),
        exp_base=_float32(exp_base / MICROMETRES_PER_DM),
        mean_tex=_float32(bfm.finite("texMU", tex_mu[shape_rows])),
        tex_base=_float32(tex_base),
        **topology,
    )


def _front_vertices(paths: dict[str, Path], n_bfm: int) -> tuple[np.ndarray, np.ndarray, int]:
    """0-based ids [N] of the front-face vertices in the expression mesh and in the BFM mesh,
    and the expression mesh's vertex count: BFM id = trimIndex[idx] (both 1-based on disk)."""
    front = _read(paths, "front_idx_mat", ("idx",))
    expression_mesh = _read(paths, "exp_idx_mat", ("trimIndex",))
    trim_index = expression_mesh.vector("trimIndex", meaning="one BFM vertex per expression vertex")
    n_expression = trim_index.size
    front_ids = front.one_based_ids(
        "idx", front.vector("idx"), n_expression, "expression-mesh vertex",
        f"trimIndex in {paths['exp_idx_mat'].name} lists {n_expression}",
    )  # fmt: skip
    bfm_ids = expression_mesh.one_based_ids(
        "trimIndex", trim_index, n_bfm, "BFM vertex",
        f"shapeMU in {paths['morphable_model_mat'].name} has {n_bfm}",
    )[front_ids]  # fmt: skip
    return front_ids, bfm_ids, n_expression


def _read(paths: dict[str, Path], key: str, fields: tuple[str, ...]) -> MatContents:
    raw = FILES[key]
    return read_mat(paths[key], what=f"{raw.name} ({raw.what})", hint=raw.hint, keys=fields)


def _xyz_rows(vertex_ids: np.ndarray) -> np.ndarray:
    """Rows [3V] of an x y z-interleaved array that belong to ``vertex_ids`` [V]."""
    return (3 * vertex_ids[:, None] + np.arange(3)).reshape(-1)


def _scaled_basis(
    mat: MatContents, pc_key: str, pcs: np.ndarray, ev_key: str, rows: np.ndarray, size: int
) -> np.ndarray:
    """pcs[rows, :size] * ev[:size] [3N, size]: principal components scaled by their standard
    deviations. Selecting rows and columns first gives the same numbers with far less memory."""
    if pcs.shape[1] < size:
        raise FaceModelError(
            f"{mat.source}: field {pc_key!r} has {pcs.shape[1]} components, at least {size} needed"
        )
    ev = mat.vector(ev_key, pcs.shape[1], meaning=f"one standard deviation per column of {pc_key}")
    return mat.finite(pc_key, pcs[rows, :size] * mat.finite(ev_key, ev[:size]))


def _float32(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float32)


def _read_exp_pca(path: Path, n_vertices: int, index_name: str) -> np.ndarray:
    """The expression components [exp_dim, 3 * n_vertices] float32 of an ``Exp_Pca.bin``.

    Layout (little-endian): int32 exp_dim, float32 mean [3n] (unused), float32 components
    [exp_dim, 3n] row-major. The official file has exp_dim 79 and n 53,215."""
    hint = FILES["exp_pca_bin"].hint
    size = check_regular_file(path, "Exp_Pca.bin", FACE_MODEL_MAX_BYTES, FaceModelError)
    if size < 4:
        raise FaceModelError(
            f"{path} is truncated: {size} bytes, not even the 4-byte header. {hint}"
        )
    exp_dim = int(np.fromfile(path, dtype="<i4", count=1)[0])
    if not N_EXPRESSION <= exp_dim <= 10_000:
        raise FaceModelError(
            f"{path}: header says {exp_dim} expression components, expected 79 (at least "
            f"{N_EXPRESSION}); this is not an Exp_Pca.bin. {hint}"
        )
    bytes_per_vertex = 4 * 3 * (1 + exp_dim)  # mean + components, float32 x y z
    expected = 4 + bytes_per_vertex * n_vertices
    if size != expected:
        payload = size - 4
        derived = (
            f"it holds {payload // bytes_per_vertex} vertices"
            if payload % bytes_per_vertex == 0
            else "its size is not a whole number of vertices"
        )
        problem = "is truncated" if size < expected else "has the wrong size"
        raise FaceModelError(
            f"{path} {problem}: expected {expected} bytes (4-byte header + float32 mean and "
            f"{exp_dim} components for {n_vertices} vertices, the length of trimIndex in "
            f"{index_name}), found {size} bytes; {derived}. The official file has 53215 "
            f"vertices and 79 components ({4 + 4 * 3 * 80 * 53215} bytes). {hint}"
        )
    components = np.fromfile(
        path, dtype="<f4", count=exp_dim * 3 * n_vertices, offset=4 + 4 * 3 * n_vertices
    )
    return components.reshape(exp_dim, 3 * n_vertices)


def _read_std_exp(path: Path, exp_dim: int) -> np.ndarray:
    """The expression standard deviations [exp_dim] from whitespace-separated text."""
    hint = FILES["std_exp_txt"].hint
    text = read_regular_file(path, "std_exp.txt", TEXT_MAX_BYTES, FaceModelError)
    try:
        values = np.loadtxt(io.BytesIO(text), dtype=np.float64, ndmin=1).reshape(-1)
    except ValueError as exc:
        raise FaceModelError(f"{path} is not a list of numbers ({exc}). {hint}") from exc
    if values.size != exp_dim:
        raise FaceModelError(
            f"{path} has {values.size} values, expected {exp_dim} (one standard deviation per "
            f"component of Exp_Pca.bin). {hint}"
        )
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise FaceModelError(f"{path}: standard deviations must be finite and positive. {hint}")
    return values
