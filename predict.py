"""Predict: ``python predict.py model=CKPT_OR_BUNDLE input=RASTER_OR_DIR out_dir=DIR``.

``input`` is a raster (GeoTIFF or VRT), a folder of rasters (one per period), a list of them,
or a raster group: files on one grid whose bands are found by description across them, joined
by ``+`` (``input=s2_2019_P50.tif+s2_2019_P25.tif``; periods: ``input=[a_2018.tif+b_2018.tif,
a_2019.tif+b_2019.tif]``). See ``conf/predict/predict.yaml`` for every option.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bsrlc.cli import hydra_entry
from bsrlc.config import conf_dir

if TYPE_CHECKING:
    from omegaconf import DictConfig


@hydra_entry(config_path=f"{conf_dir()}/predict", config_name="predict")
def main(cfg: DictConfig) -> None:
    """Run the prediction pipeline.

    Args:
        cfg: the composed config.
    """
    from bsrlc.predict import predict

    results = predict(cfg)
    for kind in ("sr", "maps"):
        for label, path in results[kind].items():
            print(f"{kind} {label}: {path}")


if __name__ == "__main__":
    main()
