"""Run under ``torchrun --nproc_per_node 2``: DDP loss and gradients on half a batch each.

Rank 0 writes the averaged loss terms and the all-reduced gradients to the file named by argv[1].
"""

import sys

import torch

from fcos_lab.distributed import init_distributed
from fcos_lab.model import build_model
from fcos_lab.presets import resolve
from fcos_lab.targets import pad_ground_truth
from fcos_lab.train import compute_loss


def batch():
    generator = torch.Generator().manual_seed(5)
    images = torch.randn(4, 3, 128, 128, generator=generator)
    boxes, labels = [], []
    for count in (3, 0, 1, 5):  # uneven counts, one image without boxes: N_pos differs per rank
        xy = torch.rand(count, 2, generator=generator) * 80
        wh = torch.rand(count, 2, generator=generator) * 40 + 6
        boxes.append(torch.cat([xy, xy + wh], dim=1))
        labels.append(torch.randint(0, 5, (count,), generator=generator))
    return images, boxes, labels


def model_and_config(preset: str = "fcos_imprv_r50_fpn_1x"):
    config = resolve(preset, ["model.backbone=resnet18", "model.num_classes=5", "model.fpn_channels=64",
                              "model.frozen_stages=0"])
    torch.manual_seed(0)
    return build_model(config), config


def main(out: str) -> None:
    info = init_distributed(torch.device("cpu"))
    model, config = model_and_config()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    images, boxes, labels = batch()
    half = slice(2 * info.rank, 2 * info.rank + 2)
    gt = pad_ground_truth(boxes[half], labels[half])
    losses = compute_loss(ddp(images[half]), gt, config)
    losses["loss"].backward()
    averaged = {}
    for key, value in losses.items():
        value = value.detach().clone()
        torch.distributed.all_reduce(value)
        averaged[key] = value / info.world_size
    if info.rank == 0:
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"losses": averaged, "grads": grads}, out)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
