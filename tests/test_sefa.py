"""SeFa: which affines, the factorisation itself, layer selections, the cache and the sheet."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.stylegan_formats import TINY_CONFIG, tiny_state, write_rosinality
from neural_face_rig.neural import cli_convert
from neural_face_rig.neural.sefa import (
    SefaError,
    affine_key,
    apply_direction,
    cache_path,
    factorize,
    factorize_cached,
    layers_tag,
    parse_layers,
)
from neural_face_rig.neural.stylegan2.config import StyleGAN2Config, expected_state_shapes

FFHQ = StyleGAN2Config()  # 1024 px config-f, 18 W+ rows
SHA = "ab" * 32


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return tiny_state(seed=5)


def test_affine_keys_follow_genforce_layer_indexing() -> None:
    expected = {
        0: "synthesis.b4.conv1.affine.weight",
        1: "synthesis.b8.conv0.affine.weight",
        2: "synthesis.b8.conv1.affine.weight",
        3: "synthesis.b16.conv0.affine.weight",
        15: "synthesis.b1024.conv0.affine.weight",
        16: "synthesis.b1024.conv1.affine.weight",
        17: "synthesis.b1024.torgb.affine.weight",
    }
    for index, key in expected.items():
        assert affine_key(FFHQ, index) == key
    shapes = expected_state_shapes(FFHQ)
    keys = [affine_key(FFHQ, i) for i in range(FFHQ.num_ws)]
    assert len(set(keys)) == 18 and all(k in shapes for k in keys)
    # Intermediate ToRGBs (which share w indices with the next conv0) are never used.
    assert not any("torgb" in k for k in keys[:-1])
    assert affine_key(TINY_CONFIG, 7) == "synthesis.b32.torgb.affine.weight"
    with pytest.raises(SefaError, match="0..17"):
        affine_key(FFHQ, 18)


@pytest.mark.parametrize(
    ("spec", "num_ws", "layers"),
    [
        ("coarse", 18, (0, 1, 2, 3)),
        ("middle", 18, (4, 5, 6, 7)),
        ("fine", 18, tuple(range(8, 18))),
        ("all", 14, tuple(range(14))),
        ("fine", 14, tuple(range(8, 14))),
        ("middle", 6, (4, 5)),
        ("0-3,8", 18, (0, 1, 2, 3, 8)),
        (" 8, 0-3 ,2 ", 18, (0, 1, 2, 3, 8)),
        ("17", 18, (17,)),
    ],
)
def test_parse_layers(spec: str, num_ws: int, layers: tuple[int, ...]) -> None:
    assert parse_layers(spec, num_ws) == layers


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("fine", r"empty for a model with 8 W\+ rows"),
        ("3-1", "found the part '3-1'"),
        ("0-8", r"0-8 is outside 0\.\.7"),
        ("eyes", "expected one of coarse, middle, fine, all"),
        ("", "found the part ''"),
        ("1-2-3", "found the part '1-2-3'"),
    ],
)
def test_parse_layers_errors(spec: str, message: str) -> None:
    with pytest.raises(SefaError, match=message):
        parse_layers(spec, 8)


def test_layers_tag() -> None:
    assert layers_tag((0, 1, 2, 3, 8)) == "0-3_8"
    assert layers_tag((5,)) == "5"
    assert layers_tag((1, 3, 4)) == "1_3-4"


def _reference(state: dict[str, torch.Tensor], keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """genforce's recipe written out: transpose, concatenate, normalise columns, np.linalg.eig
    (unsorted), then sorted here by eigenvalue."""
    weights = [state[k].numpy().astype(np.float64).T for k in keys]
    m = np.concatenate(weights, axis=1)
    m = m / np.linalg.norm(m, axis=0, keepdims=True)
    values, vectors = np.linalg.eig(m @ m.T)
    order = np.argsort(values.real)[::-1]
    return values.real[order], vectors.real[:, order].T


def test_directions_match_direct_eigendecomposition(state) -> None:
    layers = (0, 1, 2, 3, 7)
    keys = ["synthesis.b4.conv1.affine.weight", "synthesis.b8.conv0.affine.weight",
            "synthesis.b8.conv1.affine.weight", "synthesis.b16.conv0.affine.weight",
            "synthesis.b32.torgb.affine.weight"]
    factors = factorize(TINY_CONFIG, state, layers)
    values, vectors = _reference(state, keys)
    assert factors.directions.shape == (32, 32) and factors.directions.dtype == np.float32
    assert factors.layers == layers
    np.testing.assert_allclose(factors.eigenvalues, values, rtol=1e-5)
    assert np.all(np.diff(factors.eigenvalues) <= 0)
    # Eigenvectors are defined up to sign.
    dots = np.abs(np.sum(factors.directions.astype(np.float64) * vectors, axis=1))
    np.testing.assert_allclose(dots, 1.0, atol=1e-5)
    gram = factors.directions.astype(np.float64) @ factors.directions.T
    np.testing.assert_allclose(gram, np.eye(32), atol=1e-5)


def test_top_direction_maximises_the_style_response(state) -> None:
    # SeFa's objective: n* = argmax ||A n|| over unit n, A = the normalised affines stacked.
    layers = parse_layers("all", TINY_CONFIG.num_ws)
    factors = factorize(TINY_CONFIG, state, layers)
    a = np.concatenate([state[affine_key(TINY_CONFIG, i)].numpy().astype(np.float64).T
                        for i in layers], axis=1)
    a = (a / np.linalg.norm(a, axis=0, keepdims=True)).T
    best = np.linalg.norm(a @ factors.directions[0].astype(np.float64))
    probes = np.random.default_rng(0).standard_normal((2000, 32))
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    assert best >= np.linalg.norm(probes @ a.T, axis=1).max()
    np.testing.assert_allclose(best**2, factors.eigenvalues[0], rtol=1e-5)


def test_cache_hit_returns_identical_arrays(state, tmp_path: Path) -> None:
    layers = (0, 1, 2, 3)
    first = factorize_cached(TINY_CONFIG, state, layers, SHA, tmp_path)
    path = cache_path(tmp_path, SHA, layers)
    assert path.is_file() and path.name == f"sefa-{SHA[:16]}-0-3.safetensors"
    mtime = path.stat().st_mtime_ns
    # A different state under the same model id must come from the cache, not be recomputed.
    other = tiny_state(seed=99)
    second = factorize_cached(TINY_CONFIG, other, layers, SHA, tmp_path)
    assert np.array_equal(first.directions, second.directions)
    assert np.array_equal(first.eigenvalues, second.eigenvalues)
    assert path.stat().st_mtime_ns == mtime
    assert second.layers == layers
    # Another model id or layer set gets its own entry.
    third = factorize_cached(TINY_CONFIG, other, layers, "cd" * 32, tmp_path)
    assert not np.array_equal(first.directions, third.directions)
    factorize_cached(TINY_CONFIG, state, (4, 5), SHA, tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3
    assert len(list(tmp_path.glob("*.json"))) == 3


def test_no_cache_folder_writes_nothing(state, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    result = factorize_cached(TINY_CONFIG, state, (0, 1), SHA)
    assert np.array_equal(result.directions, factorize(TINY_CONFIG, state, (0, 1)).directions)
    assert list(tmp_path.iterdir()) == []


def test_cache_checks_full_digest_and_reports_damage(state, tmp_path: Path) -> None:
    layers = (0, 1)
    factorize_cached(TINY_CONFIG, state, layers, SHA, tmp_path)
    # Same 16-char prefix, different digest: recomputed for the new model, not reused.
    colliding = SHA[:16] + "0" * 48
    other = tiny_state(seed=3)
    result = factorize_cached(TINY_CONFIG, other, layers, colliding, tmp_path)
    assert np.array_equal(result.directions, factorize(TINY_CONFIG, other, layers).directions)
    path = cache_path(tmp_path, colliding, layers)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(SefaError, match="damaged SeFa cache"):
        factorize_cached(TINY_CONFIG, other, layers, colliding, tmp_path)


def test_apply_direction_edits_only_the_chosen_rows(state) -> None:
    factors = factorize(TINY_CONFIG, state, (0, 1, 2, 3))
    ws = torch.randn(2, TINY_CONFIG.num_ws, 32)
    edited = apply_direction(ws, factors.directions[0], factors.layers, -2.5)
    direction = torch.from_numpy(factors.directions[0])
    torch.testing.assert_close(edited[:, :4], ws[:, :4] - 2.5 * direction)
    assert torch.equal(edited[:, 4:], ws[:, 4:])
    assert not torch.equal(edited, ws) and ws.shape == edited.shape


def test_nfr_sefa_writes_a_labelled_contact_sheet(state, tmp_path: Path, capsys) -> None:
    from PIL import Image

    weights = write_rosinality(tmp_path / "g.pt", state)
    sheet = tmp_path / "sheet.png"
    parser = argparse.ArgumentParser(prog="nfr")
    cli_convert.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sefa", "--weights", str(weights), "--layers", "0-3", "--k", "3",
                              "--sheet", str(sheet), "--res", "16",
                              "--cache-dir", str(tmp_path / "cache")])
    assert args.handler(args) == 0
    image = np.asarray(Image.open(sheet).convert("RGB"))
    steps = cli_convert.SHEET_STEPS
    assert image.shape == (cli_convert.HEADER_HEIGHT + 3 * 16, cli_convert.LABEL_WIDTH + steps * 16,
                           3)
    # Labels were drawn: the label column and header row are not blank.
    assert (image[cli_convert.HEADER_HEIGHT:, : cli_convert.LABEL_WIDTH] < 128).any()
    assert (image[: cli_convert.HEADER_HEIGHT, cli_convert.LABEL_WIDTH:] < 128).any()

    def tile(row: int, col: int) -> np.ndarray:
        top = cli_convert.HEADER_HEIGHT + row * 16
        left = cli_convert.LABEL_WIDTH + col * 16
        return image[top : top + 16, left : left + 16].astype(int)

    # The middle column (alpha 0) is the unedited face in every row; the ends differ from it.
    for row in range(3):
        assert np.array_equal(tile(row, steps // 2), tile(0, steps // 2))
        assert np.abs(tile(row, 0) - tile(row, steps // 2)).max() > 0
        assert np.abs(tile(row, steps - 1) - tile(row, steps // 2)).max() > 0
    out = capsys.readouterr().out
    assert "direction 2: eigenvalue" in out and "sheet.png" in out
    assert len(list((tmp_path / "cache").glob("sefa-*.safetensors"))) == 1
