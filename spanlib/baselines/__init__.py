"""Baseline density models for the out-of-distribution and inpainting comparisons: EBM, MAF and VAE.

Each model takes images of shape (batch, channels, height, width) in [0, 1], has a config dataclass with
`for_profile("quick" | "colab" | "paper")`, and provides `fit`, `score` (higher = more in-distribution),
`sample`, `save` and `load`.
"""

from .ebm import EBM, EBMConfig, langevin_dynamics
from .maf import MAF, MAFConfig, flow_log_density
from .vae import VAE, VAEConfig

__all__ = ["EBM", "EBMConfig", "MAF", "MAFConfig", "VAE", "VAEConfig", "flow_log_density", "langevin_dynamics"]
