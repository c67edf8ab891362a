"""The StyleRig training loop on the CPU: exact resume from checkpoints, checkpoint files and
their checks, the CSV log, settings and environment errors, mixed precision, and two gloo
processes under DistributedDataParallel staying in sync."""

from __future__ import annotations

import csv
import json
import socket

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.multiprocessing as mp
from neural_face_rig.neural.checkpoints import LoadedGenerator, save_project
from neural_face_rig.neural.engine import bf16_supported
from neural_face_rig.neural.stylegan2.config import StyleGAN2Config
from neural_face_rig.neural.stylegan2.generator import random_state_dict
from neural_face_rig.neural.stylerig import StyleRigError
from neural_face_rig.neural.stylerig.trainer import (
    CHECKPOINT_JSON,
    DFRJob,
    Distributed,
    Trainer,
    TrainSettings,
    train_dfr,
)
from torch import nn

CFG = StyleGAN2Config(z_dim=8, w_dim=16, img_resolution=16, mapping_layers=2,
                      channel_base=256, channel_max=8)



@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a busy 2-core machine two
    spinning threads per process slow everything down many times."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("generator") / "tiny.safetensors"
    save_project(LoadedGenerator(CFG, random_state_dict(CFG, seed=2), "nfr", "12" * 32), path)
    return path


def dfr_job(weights, out, steps, **settings):
    options = {"batch": 4, "lr": 1e-3, "log_every": 3, "checkpoint_every": 100,
               "progress": False, **settings}
    return DFRJob(weights, out, "synthetic:tiny", TrainSettings(steps=steps, **options),
                  samples=24, camera_size=16, hidden=16, cache_images=True)


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def module_state(trainer):
    return {k: v.clone() for k, v in trainer.module.state_dict().items()}


def test_resumed_training_matches_an_uninterrupted_run_bit_for_bit(weights, tmp_path):
    straight = train_dfr(dfr_job(weights, tmp_path / "straight", 12))
    first = train_dfr(dfr_job(weights, tmp_path / "split", 6))
    assert first.step == 6
    resumed = train_dfr(dfr_job(weights, tmp_path / "split", 12), resume=True)
    assert resumed.step == 12
    later = [r for r in straight.history if r["step"] > 6]
    assert [r["step"] for r in resumed.history] == [9, 12]
    for a, b in zip(resumed.history, later, strict=True):
        a.pop("seconds"), b.pop("seconds")
        assert a == b  # every loss, bit for bit
    final, reference = module_state(resumed), module_state(straight)
    assert all(torch.equal(final[k], reference[k]) for k in reference)
    # The resumed log holds every row once, and the same losses as the straight run's.
    split_rows, straight_rows = read_csv(tmp_path / "split" / "train_log.csv"), read_csv(
        tmp_path / "straight" / "train_log.csv")
    assert [r["step"] for r in split_rows] == ["3", "6", "9", "12"]
    for a, b in zip(split_rows, straight_rows, strict=True):
        assert a["total"] == b["total"] and a["photometric"] == b["photometric"]
    assert {"step", "seconds", "lr", "total", "photometric", "landmark", "prior",
            "light"} <= set(split_rows[0])
    # Resuming a finished run trains nothing and keeps the weights.
    again = train_dfr(dfr_job(weights, tmp_path / "split", 12), resume=True)
    assert again.history == [] and all(torch.equal(module_state(again)[k], final[k])
                                       for k in final)


def test_checkpoint_files_and_their_checks(weights, tmp_path):
    out = tmp_path / "run"
    trainer = train_dfr(dfr_job(weights, out, 5, checkpoint_every=2))
    document = json.loads((out / CHECKPOINT_JSON).read_text())
    assert document["step"] == 5 and document["kind"] == "dfr"
    assert sorted(p.name for p in out.glob("checkpoint-*.safetensors")) == [document["weights"]]
    tensors = safetensors.torch.load_file(str(out / document["weights"]))
    assert any(k.startswith("optimizer.") and k.endswith(".exp_avg_sq") for k in tensors)
    for key, value in trainer.module.state_dict().items():
        assert torch.equal(tensors[f"module.{key}"], value)
    assert (out / "dfr.safetensors").is_file() and (out / "dfr.json").is_file()

    def toy_loss(module, rng):
        return {"total": module(torch.from_numpy(rng.standard_normal((4, 2)).astype(
            np.float32))).square().mean()}

    toy_out = tmp_path / "toy"
    Trainer("toy", nn.Linear(2, 2), toy_loss, TrainSettings(steps=2, progress=False),
            toy_out).run()
    saved = json.loads((toy_out / CHECKPOINT_JSON).read_text())["weights"]
    saved_rng = safetensors.torch.load_file(str(toy_out / saved))["rng.torch"]
    torch.manual_seed(123)
    toy = Trainer("toy", nn.Linear(2, 2), toy_loss, TrainSettings(steps=2), toy_out)
    assert toy.load_checkpoint() == 2 and torch.equal(torch.get_rng_state(), saved_rng)

    other = Trainer("rignet", nn.Linear(2, 2), toy_loss, TrainSettings(steps=1), out)
    with pytest.raises(StyleRigError, match="a 'dfr' checkpoint, this run trains 'rignet'"):
        other.load_checkpoint()
    blob = bytearray((out / document["weights"]).read_bytes())
    blob[-1] ^= 0xFF
    (out / document["weights"]).write_bytes(bytes(blob))
    with pytest.raises(StyleRigError, match="does not match checkpoint.json"):
        train_dfr(dfr_job(weights, out, 6), resume=True)


def test_settings_environment_and_non_finite_losses(tmp_path, monkeypatch):
    with pytest.raises(StyleRigError, match="batch: expected an integer >= 1, found 0"):
        TrainSettings(steps=3, batch=0)
    with pytest.raises(StyleRigError, match="lr: expected a positive number"):
        TrainSettings(steps=3, lr=0.0)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(StyleRigError, match="RANK 2 is outside WORLD_SIZE 2"):
        Distributed.from_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(StyleRigError, match="WORLD_SIZE: expected an integer, found 'two'"):
        Distributed.from_env()

    layer = nn.Linear(3, 1)

    def exploding(module, rng):
        return {"total": module(torch.ones(1, 3)).sum() * float("nan")}

    trainer = Trainer("toy", layer, exploding, TrainSettings(steps=4, progress=False), tmp_path)
    with pytest.raises(StyleRigError, match="the loss became nan at step 1"):
        trainer.run()


def test_mixed_precision_on_the_cpu(tmp_path):
    layer = nn.Linear(4, 1)

    def loss(module, rng):
        x = torch.from_numpy(rng.standard_normal((8, 4)).astype(np.float32))
        out = module(x)
        return {"total": out.float().square().mean(), "dtype_bf16": torch.tensor(
            float(out.dtype == torch.bfloat16))}

    settings = TrainSettings(steps=3, amp=True, progress=False)
    if bf16_supported("cpu"):
        trainer = Trainer("toy", layer, loss, settings, tmp_path)
        history = trainer.run()
        assert history[-1]["dtype_bf16"] == 1.0 and np.isfinite(history[-1]["total"])
    else:
        with pytest.raises(StyleRigError, match="needs CUDA or a CPU with native bfloat16"):
            Trainer("toy", layer, loss, settings, tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank, weights, out, port):
    import os

    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    trainer = train_dfr(dfr_job(weights, out, 3, log_every=1))
    first_batch = trainer.step_rng(0).integers(0, 24, 4)
    safetensors.torch.save_file(
        {**{f"module.{k}": v.contiguous() for k, v in trainer.module.state_dict().items()},
         "first_batch": torch.from_numpy(first_batch)},
        str(out / f"rank{rank}.safetensors"),
    )
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_stay_in_sync(weights, tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(weights, out, _free_port()), nprocs=2, join=True)
    ranks = [safetensors.torch.load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1)]
    assert not torch.equal(ranks[0]["first_batch"], ranks[1]["first_batch"])  # own batches
    for key in ranks[0]:
        if key.startswith("module."):
            assert torch.equal(ranks[0][key], ranks[1][key]), key
    # Rank 0 alone wrote the log and the checkpoint; the weights moved from their start.
    assert [r["step"] for r in read_csv(out / "train_log.csv")] == ["1", "2", "3"]
    start = train_dfr(dfr_job(weights, tmp_path / "zero", 1, lr=1e-12)).module.state_dict()
    assert not torch.equal(ranks[0]["module.fc0.weight"], start["fc0.weight"])
