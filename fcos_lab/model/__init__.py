"""The FCOS network: backbone, FPN and head (nn.Modules only; no loss code)."""

from fcos_lab.model.detector import FCOS, FCOSOutput, build_model

__all__ = ["FCOS", "FCOSOutput", "build_model"]
