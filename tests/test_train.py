"""Training loop: schedule, checkpoints, exact resume, real COCO images end to end."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from fcos_lab.checkpoint import load_checkpoint, save_checkpoint
from fcos_lab.demo import demo_config
from fcos_lab.errors import CheckpointError
from fcos_lab.model import build_model
from fcos_lab.presets import resolve
from fcos_lab.train import batch_schedule, learning_rate, train


def test_learning_rate_schedule_matches_paper():
    # Section 4: 0.01 at batch 16, /10 at 60K and 80K of 90K; Detectron warmup from 1/3 over 500 iters.
    config = resolve("fcos_r50_fpn_1x")
    assert learning_rate(0, config) == pytest.approx(0.01 / 3)
    assert learning_rate(250, config) == pytest.approx(0.01 * (1 / 3 * 0.5 + 0.5))
    assert learning_rate(500, config) == pytest.approx(0.01)
    assert learning_rate(59_999, config) == pytest.approx(0.01)
    assert learning_rate(60_000, config) == pytest.approx(0.001)
    assert learning_rate(80_000, config) == pytest.approx(0.0001)
    # Linear scaling: batch 8 halves the rate; the 2x schedule moves the steps to 120K and 160K.
    assert learning_rate(1000, resolve(config, ["train.batch_size=8"])) == pytest.approx(0.005)
    two_x = resolve("fcos_r101_fpn_2x")
    assert learning_rate(119_999, two_x) == pytest.approx(0.01)
    assert learning_rate(120_000, two_x) == pytest.approx(0.001)
    assert learning_rate(160_000, two_x) == pytest.approx(0.0001)


def test_batch_schedule_resumes_and_shards():
    full = list(batch_schedule(10, 4, seed=3, start=0, stop=7))
    assert all(len(b) == 4 for b in full)
    assert list(batch_schedule(10, 4, seed=3, start=4, stop=7)) == full[4:]
    # Each epoch (2 batches of 4 from 10 items) holds distinct items.
    assert len({i for _, i in full[0] + full[1]}) == 8
    ranks = [list(batch_schedule(10, 4, seed=3, start=0, stop=7, rank=r, world_size=2)) for r in range(2)]
    for step in range(7):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(full[step])


def test_checkpoint_round_trip_and_refusal(tmp_path):
    config = resolve("fcos_demo_r18")
    model = build_model(config)
    path = save_checkpoint(tmp_path / "model_0000001.pt", model, config, iteration=1, category_ids=[1, 3])
    payload = load_checkpoint(path)
    assert payload["iteration"] == 1 and payload["category_ids"] == [1, 3]
    assert payload["config"] == config
    for key, value in model.state_dict().items():
        assert torch.equal(payload["model"][key], value)
    assert load_checkpoint(tmp_path)["iteration"] == 1  # a run folder resolves to its newest checkpoint

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "fcos_lab/1", "model": Payload()}, protocol=2))  # torch.save's protocol
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()


def _tiny(tmp_path, *overrides):
    return demo_config(tmp_path, quick=True, overrides=["train.max_iters=6", "train.checkpoint_every=3", *overrides])


def test_resume_gives_identical_weights(tmp_path):
    # A fixed thread count: float sums follow it, and the default follows the machine's load.
    config = _tiny(tmp_path, "train.threads=1")
    straight = train(config, tmp_path / "straight", device="cpu", evaluate_at_end=False, progress=False)
    interrupted = tmp_path / "interrupted"
    train(config, interrupted, device="cpu", evaluate_at_end=False, progress=False)
    # Pretend the run died right after its iteration-3 checkpoint.
    for name in ("model_final.pt", "model_final.safetensors"):
        (interrupted / name).unlink()
    resumed = train(config, interrupted, device="cpu", resume=True, evaluate_at_end=False, progress=False)
    assert resumed.iterations == straight.iterations == 6
    a = load_checkpoint(straight.run_dir / "model_final.pt")["model"]
    b = load_checkpoint(interrupted / "model_final.pt")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_run_folder_contents(tmp_path):
    result = train(_tiny(tmp_path), tmp_path / "run", device="cpu", progress=False)
    run = result.run_dir
    for name in ("config.json", "metrics.jsonl", "metrics.json", "model_final.pt", "model_final.safetensors",
                 "detections_val.json", "model_0000003.pt"):
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    loss_rows = [r for r in rows if "loss" in r]
    assert loss_rows and all({"loss_cls", "loss_box", "loss_centerness", "lr", "images_per_s"} <= r.keys() for r in loss_rows)
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"AP", "AP50", "AP75", "APs", "AR100"} <= metrics.keys()
    detections = json.loads((run / "detections_val.json").read_text())
    if detections:
        assert {"level", "location", "cls_score", "centerness"} <= detections[0].keys()


@pytest.mark.slow
def test_real_coco_images_end_to_end(tmp_path, shared_coco):
    """A few iterations on the 128 real train2017 images, then COCO evaluation on the 128 real val2017 images."""
    config = resolve(
        "fcos_r50_fpn_1x",
        [
            "model.backbone=resnet18",
            "model.fpn_channels=64",
            f"data.train_ann={shared_coco / 'annotations/instances_train2017_coco128_bboxonly_DERIVED.json'}",
            f"data.train_images={shared_coco / 'images/train2017'}",
            f"data.val_ann={shared_coco / 'annotations/instances_val2017_lightly128_bboxonly_DERIVED.json'}",
            f"data.val_images={shared_coco / 'images/val2017'}",
            "input.min_size=320",
            "input.train_min_size=[320,320]",
            "input.max_size=512",
            "train.max_iters=3",
            "train.batch_size=2",
            "train.warmup_iters=2",
            "train.log_every=1",
            "train.num_workers=0",
            # Let an untrained head emit candidates so the evaluation sees real detections.
            "postprocess.score_thresh=0.0",
        ],
    )
    result = train(config, tmp_path / "coco", device="cpu", progress=False)
    assert result.iterations == 3
    assert 0.0 <= result.metrics["AP"] <= 1.0
    detections = json.loads((tmp_path / "coco" / "detections_val.json").read_text())
    assert len({d["image_id"] for d in detections}) == 128
    coco_ids = set(range(1, 91))
    assert {d["category_id"] for d in detections} <= coco_ids
