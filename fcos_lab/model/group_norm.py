"""GroupNorm (Wu & He, 2018; the head's normalization, Section 4.1.3) with a fast NHWC bf16/fp16 backward.

The forward pass is PyTorch's. Its CPU backward kernel, given a channels-last bf16 input (what the head
sees under bf16 autocast with ``train.channels_last``), is several times slower than the same kernel in
NCHW or in fp32: 18 ms against 2.7 ms for ``[2, 256, 64, 64]`` on one thread of an AMD EPYC (Zen 5), the
largest operator after the convolutions in a bf16 training step. Converting to NCHW and back costs more
than it saves (a layout copy of that tensor takes 4-7 ms), so :class:`GroupNorm` computes the backward
pass itself with channels-last friendly reductions, in float32.

Backward of ``y = (x - mu_g) * r_g * w_c + b_c`` over a group of ``M = H * W * C/G`` elements, with per
channel sums ``S1 = sum_hw dy`` and ``S2 = sum_hw dy * x`` (``x_hat = (x - mu) * r``):

- ``dbias_c = sum_n S1``; ``dweight_c = sum_n r_g (S2 - mu_g S1)``;
- ``A_g = sum_{c in g} w_c S1`` and ``B_g = r_g sum_{c in g} w_c (S2 - mu_g S1)`` (the group sums of
  ``dy w`` and ``dy w x_hat``);
- ``dx = r_g w_c dy - r_g^2 B_g / M * x + (r_g^2 B_g mu_g - r_g A_g) / M``,

i.e. ``dx = r (dy w - A / M - x_hat B / M)``, the usual normalization backward.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

REDUCED = (torch.bfloat16, torch.float16)


class _GroupNormNHWC(torch.autograd.Function):
    """PyTorch's GroupNorm forward; the backward of the module docstring on the channels-last layout."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float) -> Tensor:
        batch, channels, height, width = x.shape
        y, mean, rstd = torch.ops.aten.native_group_norm(x, weight, bias, batch, channels, height * width, groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups = groups
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        batch, channels, height, width = x.shape
        groups = ctx.groups
        per_group = channels // groups
        count = height * width * per_group  # M
        # [B, C, H, W] channels-last is [B, H, W, C] in memory: a free view as [B, HW, C].
        x_flat = x.permute(0, 2, 3, 1).reshape(batch, height * width, channels).float()
        dy_flat = dy.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
        dy_flat = dy_flat.reshape(batch, height * width, channels).float()
        s1 = dy_flat.sum(1)  # [B, C]
        s2 = (dy_flat * x_flat).sum(1)
        mean, rstd, w = mean.float(), rstd.float(), weight.float()  # [B, G], [B, G], [C]
        mean_c, rstd_c = mean.repeat_interleave(per_group, 1), rstd.repeat_interleave(per_group, 1)
        centered = s2 - mean_c * s1  # sum_hw dy * (x - mu), [B, C]
        dweight = (rstd_c * centered).sum(0)
        dbias = s1.sum(0)
        sum_dyw = (w * s1).view(batch, groups, per_group).sum(-1)  # A, [B, G]
        sum_dyw_xhat = (w * centered).view(batch, groups, per_group).sum(-1) * rstd  # B, [B, G]
        coef_x = (-rstd * rstd * sum_dyw_xhat / count).repeat_interleave(per_group, 1)
        coef_1 = ((rstd * rstd * sum_dyw_xhat * mean - rstd * sum_dyw) / count).repeat_interleave(per_group, 1)
        dx = torch.addcmul(coef_1[:, None, :], coef_x[:, None, :], x_flat)
        dx.addcmul_((rstd_c * w)[:, None, :], dy_flat)
        dx = dx.to(x.dtype).view(batch, height, width, channels).permute(0, 3, 1, 2)  # channels-last again
        return dx, dweight.to(weight.dtype), dbias.to(weight.dtype), None, None


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and state dict) whose CPU backward is fast for channels-last bf16/fp16.

    Other inputs (fp32, NCHW, CUDA, no gradient, no affine terms) take PyTorch's own path unchanged.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (x.device.type == "cpu" and x.dtype in REDUCED and x.ndim == 4 and self.affine and x.requires_grad
                and torch.is_grad_enabled() and x.is_contiguous(memory_format=torch.channels_last)):
            return _GroupNormNHWC.apply(x, self.weight, self.bias, self.num_groups, self.eps)
        return super().forward(x)
