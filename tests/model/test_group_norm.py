"""GroupNorm with the channels-last bf16/fp16 backward: same forward, same gradients as PyTorch's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcos_lab.model.group_norm import GroupNorm


def _gradients(module: nn.Module, x: torch.Tensor, dy: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    module.zero_grad()
    y = module(x)
    y.backward(dy)
    return y, x.grad, module.weight.grad.clone(), module.bias.grad.clone()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(2, 64, 9, 13), (1, 64, 1, 1), (3, 96, 4, 5)])
def test_matches_pytorch_groupnorm_in_float64(dtype, shape):
    torch.manual_seed(0)
    channels = shape[1]
    ours = GroupNorm(32, channels)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-0.5, 0.5)
    reference = nn.GroupNorm(32, channels).double()
    reference.load_state_dict(ours.state_dict())
    x = (torch.randn(shape) * 3 + 1).to(dtype).contiguous(memory_format=torch.channels_last)
    dy = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)
    y, dx, dweight, dbias = _gradients(ours, x, dy)
    y_ref, dx_ref, dweight_ref, dbias_ref = _gradients(reference, x.double(), dy.double())
    builtin = _gradients(_builtin(ours), x, dy)

    assert y.dtype == dx.dtype == dtype and dx.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, builtin[0])  # the forward pass is PyTorch's own
    # Computed in float32 and rounded once to bf16/fp16 (8 / 11 significant bits): within one unit in the
    # last place of the largest gradient (2^-7 / 2^-10 of it) of the float64 reference, as PyTorch's kernel is.
    ulp = {torch.bfloat16: 2**-7, torch.float16: 2**-10}[dtype] * float(dx_ref.abs().max())
    assert float((dx.double() - dx_ref).abs().max()) <= ulp
    assert float((builtin[1].double() - dx_ref).abs().max()) <= ulp
    torch.testing.assert_close(dweight.double(), dweight_ref, rtol=1e-4, atol=1e-4 * float(dweight_ref.abs().max()))
    torch.testing.assert_close(dbias.double(), dbias_ref, rtol=1e-4, atol=1e-4 * float(dbias_ref.abs().max()))


def _builtin(ours: GroupNorm) -> nn.GroupNorm:
    module = nn.GroupNorm(ours.num_groups, ours.num_channels)
    module.load_state_dict(ours.state_dict())
    return module


def test_other_inputs_take_pytorchs_path_unchanged():
    ours = GroupNorm(32, 64)
    builtin = _builtin(ours)
    for x in (torch.randn(2, 64, 5, 7), torch.randn(2, 64, 5, 7).bfloat16()):  # fp32 NHWC too; bf16 NCHW
        for layout in (torch.channels_last, torch.contiguous_format):
            x = x.contiguous(memory_format=layout)
            if x.dtype == torch.bfloat16 and layout == torch.channels_last:
                continue  # the one case with its own backward, tested above
            dy = torch.ones_like(x)
            for a, b in zip(_gradients(ours, x, dy), _gradients(builtin, x, dy)):
                assert torch.equal(a, b)
    assert set(ours.state_dict()) == set(nn.GroupNorm(32, 64).state_dict())
