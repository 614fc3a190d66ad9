"""Train an experiment: ``python train.py experiment=sr_demo`` (``--help`` lists the groups).

torch, Lightning and the rest of bsrlc are imported inside ``main``, so ``--help`` and a
typo'd override are answered in about a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bsrlc.cli import hydra_entry
from bsrlc.config import conf_dir

if TYPE_CHECKING:
    from omegaconf import DictConfig


@hydra_entry(config_path=conf_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Fit and test; return the metric a sweeper optimises.

    Args:
        cfg: the composed config.

    Returns:
        The value of ``optimized_metric`` (None when unset).
    """
    from bsrlc.numerics import pin_from_config

    pin_from_config(cfg)  # before the first tensor operation
    from bsrlc.training import run

    return run(cfg)


if __name__ == "__main__":
    main()
