"""robaug: robustness augmentations and diffusion-based data generators for image classifiers."""

__version__ = "0.1.0"
