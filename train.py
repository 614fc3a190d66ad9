"""Train an experiment: ``python train.py experiment=sr_demo`` (``--help`` lists the groups)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from bsrlc.config import conf_dir
from bsrlc.errors import exit_on_user_error
from bsrlc.training import run


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    """Fit and test; return the metric a sweeper optimises.

    Args:
        cfg: the composed config.

    Returns:
        The value of ``optimized_metric`` (None when unset).
    """
    return run(cfg)


if __name__ == "__main__":
    main()
