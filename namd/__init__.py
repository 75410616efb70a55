"""NAMD: Nodule-Aligned Multimodal latent Diffusion for lung nodule progression prediction.

The workflow (Snakefile, rules/) calls into this package; all logic lives here.
"""

__version__ = "0.1.0"
