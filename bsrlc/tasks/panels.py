"""Send images (SR panels, confusion matrices) to whichever loggers a run has.

W&B gets media, TensorBoard gets an image summary, and every run also keeps a PNG in its output
folder (``panels/``), so CSV-only runs have their figures too.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger


def log_image(
    module: L.LightningModule, key: str, image: torch.Tensor | np.ndarray, caption: str
) -> Path | None:
    """Log an RGB image to every logger and save it as a PNG in the run folder.

    Args:
        module: the LightningModule (its trainer holds the loggers).
        key: the image's name, e.g. ``val/panel``.
        image: (3, H, W) float in [0, 1] or (H, W, 3) uint8.
        caption: what the image shows.

    Returns:
        The PNG path written (None outside a trainer or off rank zero).
    """
    trainer = module.trainer
    if trainer is None or not trainer.is_global_zero:
        return None
    arr = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else image
    if arr.ndim == 3 and arr.shape[0] == 3:
        arr = (np.clip(np.transpose(arr, (1, 2, 0)), 0, 1) * 255).astype(np.uint8)
    step = trainer.global_step
    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            lg.log_image(key=key, images=[arr], caption=[caption], step=step)
        elif isinstance(lg, TensorBoardLogger):
            lg.experiment.add_image(key, arr, step, dataformats="HWC")
    import imageio.v3 as iio

    out = Path(trainer.default_root_dir) / "panels" / f"{key.replace('/', '_')}_{step:07d}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(out, arr)
    return out
