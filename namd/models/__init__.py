"""Models of the NAMD pipeline: the nodule-aligned VAE, its losses, its augmentation, the U-Net,
the text encoder and the schedulers.

Import the submodules: this package imports nothing itself, so a job that needs one model does not
load every model's libraries at start-up.
"""
