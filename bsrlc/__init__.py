"""bsrlc: Landsat archives to 10 m maps of built-up types.

Spectral-temporal metrics, SRGAN super-resolution of Landsat to Sentinel-2 resolution, and
centre-patch classification, as a PyTorch Lightning framework configured with Hydra.
"""

__version__ = "0.1.0"

BANDS: tuple[str, ...] = ("BLU", "GRN", "RED", "NIR", "SW1", "SW2")
"""The six reflective bands shared by Landsat TM/ETM+/OLI and Sentinel-2 MSI, in order."""
