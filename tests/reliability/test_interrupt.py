"""Interrupted training: SIGKILL at a random moment, resume, identical weights; non-finite losses."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fcos_lab.checkpoint import load_checkpoint
from fcos_lab.data.synthetic import make_synthetic_coco
from fcos_lab.demo import demo_config
from fcos_lab.objective import Objective
from fcos_lab.train import NonFiniteLossError, train

MAX_ITERS = 10


def _train_cmd(run_dir: Path, synthetic: Path, *extra: str) -> list[str]:
    overrides = [
        f"data.synthetic_root={synthetic}", "data.synthetic_num_train=16", "data.synthetic_num_val=8",
        "data.synthetic_image_size=160", "input.min_size=160", "input.train_min_size=[144,176]",
        "input.max_size=256", f"train.max_iters={MAX_ITERS}", "train.batch_size=2", "train.warmup_iters=3",
        "train.checkpoint_every=1", "train.keep_checkpoints=2", "train.num_workers=0", "train.log_every=1",
    ]
    return [sys.executable, "-m", "fcos_lab.cli", "train", "--preset", "fcos_demo_r18", "--device", "cpu",
            "--run-dir", str(run_dir), "--no-eval", *extra, *overrides]


@pytest.mark.slow
def test_sigkill_at_random_moment_then_resume_is_exact(tmp_path):
    synthetic = tmp_path / "synthetic"
    make_synthetic_coco(synthetic, num_train=16, num_val=8, image_size=160, seed=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    done = subprocess.run(_train_cmd(straight, synthetic), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]

    killed = tmp_path / "killed"
    target = random.Random().randint(2, MAX_ITERS - 2)  # the iteration after whose checkpoint we strike
    delay = random.Random().uniform(0, 0.3)  # then anywhere inside the following step(s) or checkpoint write
    process = subprocess.Popen(_train_cmd(killed, synthetic), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while not (killed / f"model_{target:07d}.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, f"the run ended by itself before the kill (target {target})"
    assert not (killed / "model_final.pt").exists()
    # Atomic writes: whatever is on disk loads; at most `keep_checkpoints` numbered files remain (+1 in flight).
    for path in killed.glob("model_*.pt"):
        load_checkpoint(path)

    done = subprocess.run(_train_cmd(killed, synthetic, "--resume"), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    a = load_checkpoint(straight / "model_final.pt")["model"]
    b = load_checkpoint(killed / "model_final.pt")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after SIGKILL near iteration {target} (+{delay:.2f} s)"


def test_non_finite_losses_skip_then_stop(tmp_path, monkeypatch, caplog):
    config = demo_config(tmp_path, quick=True, overrides=["train.max_iters=12", "train.checkpoint_every=2",
                                                          "train.max_bad_steps=3"])
    real = Objective.loss
    calls = {"n": 0}

    def flaky(self, output, gt):
        calls["n"] += 1
        losses = real(self, output, gt)
        if calls["n"] == 3 or calls["n"] >= 6:  # one isolated bad step, then a run of them
            losses = {k: v * float("nan") for k, v in losses.items()}
        return losses

    monkeypatch.setattr(Objective, "loss", flaky)
    with pytest.raises(NonFiniteLossError, match="3 consecutive non-finite losses"):
        train(config, tmp_path / "run", device="cpu", evaluate_at_end=False, progress=False)
    assert "non-finite loss" in caplog.text
    # Steps 1, 2 good, 3 skipped, 4, 5 good -> the iteration-4 checkpoint was written before the failure.
    payload = load_checkpoint(tmp_path / "run" / "model_0000004.pt")
    assert payload["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in payload["model"].values() if v.is_floating_point())


def test_unwritable_run_folder_fails_before_training(tmp_path, capsys):
    from fcos_lab.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["train", "--preset", "fcos_demo_r18", "--device", "cpu", "--run-dir", str(blocker / "run"),
                 f"data.synthetic_root={tmp_path / 'syn'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "run folder is not writable" in err and "Traceback" not in err
    assert not (tmp_path / "syn").exists(), "nothing should be generated before the folder check"


def test_non_finite_checked_at_log_time_without_per_step_sync(tmp_path, monkeypatch):
    config = demo_config(tmp_path, quick=True, overrides=["train.max_iters=12", "train.log_every=2",
                                                          "train.skip_nonfinite=false"])
    real = Objective.loss
    calls = {"n": 0}

    def flaky(self, output, gt):
        calls["n"] += 1
        losses = real(self, output, gt)
        return {k: v * float("nan") for k, v in losses.items()} if calls["n"] == 3 else losses

    monkeypatch.setattr(Objective, "loss", flaky)
    with pytest.raises(NonFiniteLossError, match=r"iterations 3\.\.4"):
        train(config, tmp_path / "run", device="cpu", evaluate_at_end=False, progress=False)
