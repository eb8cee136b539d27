"""Mixed precision: the number format the network runs in, chosen from what the CPU or GPU can do.

Not part of the paper, whose models were trained in fp32 on GPUs. Here the convolutions (backbone, FPN,
head towers) may run under ``torch.autocast`` in bfloat16 or float16, while assignment, the losses, the
score computation and NMS stay in float32: the head returns float32 outputs (``model/head.py``) and the
training loop computes the loss outside the autocast region.

Settings (``train.amp`` for training, ``model.inference_amp`` for prediction and evaluation):

- ``off``: float32 everywhere.
- ``bf16`` / ``fp16``: that autocast dtype, whatever the hardware (fp16 training adds a gradient scaler).
- ``auto``: on a CPU, bf16 where the CPU has bf16 matrix units (Intel AMX ``amx_bf16``, or the AVX-512
  BF16 dot products ``avx512_bf16`` of Cooper Lake and AMD Zen 4 and later) and float32 elsewhere, where
  bf16 would only be emulated and slower; on CUDA, bf16 where the GPU supports it, else fp16 with a
  gradient scaler.

:func:`resolve_precision` turns a setting and a device into a :class:`Precision`; the capability
detection takes plain flag sets so that the rules are tested without the hardware.
"""

from __future__ import annotations

import functools
import logging
import platform
import re
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import torch

from fcos_lab.config import AmpSetting
from fcos_lab.errors import ConfigError

SETTINGS: tuple[str, ...] = get_args(AmpSetting)

# CPU flags (Linux /proc/cpuinfo and torch's cpuinfo use the same names) of native bf16 matrix arithmetic.
# ``avx512_core_bf16`` is oneDNN's name for the AVX-512 BF16 ISA, accepted as a synonym.
BF16_UNIT_FLAGS: tuple[str, ...] = ("amx_bf16", "avx512_bf16", "avx512_core_bf16")
# The flags worth recording beside a result: what decides the speed of fp32, bf16 and fp16 kernels.
RECORDED_FLAGS: tuple[str, ...] = (
    "avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_fp16",
)
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}

logger = logging.getLogger("fcos_lab.precision")


def cpu_has_bf16_units(flags: Iterable[str]) -> bool:
    """Whether a CPU with these feature flags does bf16 matrix products natively (AMX or AVX-512 BF16).

    Without them oneDNN and ATen still run bf16 kernels, but by converting to fp32 and back, which is
    slower than plain fp32.
    """
    return not set(BF16_UNIT_FLAGS).isdisjoint(flags)


def flags_from_cpuinfo(text: str) -> frozenset[str]:
    """The feature flags of the first processor in the text of ``/proc/cpuinfo`` (empty when absent)."""
    match = re.search(r"^flags\s*:(.*)$", text, flags=re.MULTILINE)
    return frozenset(match.group(1).split()) if match else frozenset()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """Feature flags of this CPU: the kernel's (``/proc/cpuinfo``) and torch's cpuinfo view, together.

    The kernel lists only what the OS enabled; torch's view (``torch._C._cpu._get_cpu_capability``, private)
    also works off Linux. The bf16 flags have the same names in both. Cached: read once per process.
    """
    try:
        flags = flags_from_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        flags = frozenset()
    capability = getattr(getattr(torch._C, "_cpu", None), "_get_cpu_capability", None)
    if capability is not None:
        try:
            flags |= {name for name, value in capability().items() if value is True}
        except Exception as error:  # noqa: BLE001 - a private API; the kernel's list is enough
            logger.debug("torch's CPU capability query failed: %s", error)
    return flags


@functools.cache
def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what the platform module knows."""
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), flags=re.MULTILINE)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@dataclass(frozen=True)
class Precision:
    """The number format one run of the network uses.

    Attributes:
        setting: what was asked (``auto``, ``off``, ``bf16`` or ``fp16``).
        device_type: ``"cpu"`` or ``"cuda"``, the autocast device.
        dtype: the autocast dtype; ``torch.float32`` means no autocast.
        needs_grad_scaler: fp16 training needs loss scaling (bf16 has fp32's exponent range and does not).
        description: one line for the log, e.g. ``"bf16 autocast on cpu (auto: AMD EPYC has avx512_bf16)"``.
    """

    setting: str
    device_type: str
    dtype: torch.dtype
    needs_grad_scaler: bool
    description: str

    @property
    def name(self) -> str:
        """``"fp32"``, ``"bf16"`` or ``"fp16"``."""
        return DTYPE_NAMES[self.dtype]

    @property
    def enabled(self) -> bool:
        return self.dtype != torch.float32

    def autocast(self) -> AbstractContextManager:
        """The autocast region for the network's forward pass; with fp32 it switches autocast off."""
        if not self.enabled:
            return torch.autocast(self.device_type, enabled=False)
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler for this device, a no-op unless fp16 training needs one."""
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_grad_scaler)

    def record(self) -> dict[str, Any]:
        """What actually ran, for ``config.json`` / ``metrics.json``: precision, device, CPU and flags."""
        flags = cpu_flags()
        record: dict[str, Any] = {
            "precision": self.name,
            "setting": self.setting,
            "device": self.device_type,
            "description": self.description,
            "cpu": cpu_name(),
            "cpu_flags": [flag for flag in RECORDED_FLAGS if flag in flags],
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        if self.device_type == "cuda" and torch.cuda.is_available():
            record["gpu"] = torch.cuda.get_device_name()
        return record


def resolve_precision(
    setting: str,
    device: torch.device | str,
    *,
    flags: Iterable[str] | None = None,
    cuda_bf16: bool | None = None,
) -> Precision:
    """The :class:`Precision` that ``setting`` means on ``device``.

    Args:
        setting: ``auto``, ``off``, ``bf16`` or ``fp16``.
        device: where the network runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``).
        flags: the CPU's feature flags; default :func:`cpu_flags` (given explicitly in tests).
        cuda_bf16: whether the GPU supports bf16; default ``torch.cuda.is_bf16_supported()``.

    Raises:
        ConfigError: an unknown setting.
    """
    if setting not in SETTINGS:
        raise ConfigError(f"precision {setting!r} is not a valid choice; valid choices: {', '.join(SETTINGS)}")
    device_type = torch.device(device).type
    requested = {"off": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if setting != "auto":
        dtype = requested[setting]
        why = "requested"
        if device_type == "cpu" and dtype == torch.bfloat16:
            cpu_flag_set = frozenset(cpu_flags() if flags is None else flags)
            if not cpu_has_bf16_units(cpu_flag_set):
                why += "; this CPU has no bf16 units, so bf16 is emulated and likely slower than fp32"
    elif device_type == "cuda":
        supported = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        dtype = torch.bfloat16 if supported else torch.float16
        why = "auto: the GPU supports bf16" if supported else "auto: no bf16 on this GPU, fp16 with a gradient scaler"
    elif device_type == "cpu":
        cpu_flag_set = frozenset(cpu_flags() if flags is None else flags)
        units = [flag for flag in BF16_UNIT_FLAGS if flag in cpu_flag_set]
        dtype = torch.bfloat16 if units else torch.float32
        why = f"auto: {cpu_name()} has {', '.join(units)}" if units else f"auto: {cpu_name()} has no bf16 units"
    else:
        dtype, why = torch.float32, f"auto: no mixed precision on {device_type}"
    name = DTYPE_NAMES[dtype]
    text = f"fp32 on {device_type} ({why})" if dtype == torch.float32 else f"{name} autocast on {device_type} ({why})"
    return Precision(setting, device_type, dtype, dtype == torch.float16, text)


def announce(precision: Precision, what: str) -> None:
    """Log what ``what`` runs in (precision, CPU, threads now), once per process for each distinct line."""
    _announce_once(f"{what}: {precision.description}; {cpu_name()}, {torch.get_num_threads()} intra-op threads")


@functools.cache
def _announce_once(line: str) -> None:
    logger.info(line)
