"""The classification metrics are one definition: reports and training logs agree with each
other and with scikit-learn's reference values (computed by hand here; scikit-learn is not a
dependency)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from bsrlc.data.legend import Legend
from bsrlc.errors import ConfigError
from bsrlc.evaluation.accuracy import classification_metrics, confusion_matrix
from bsrlc.tasks.classify import CentrePatchTask

# Five classes: class 3 is in the reference but never predicted, class 4 occurs nowhere.
Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
Y_PRED = np.array([0, 0, 1, 1, 1, 0, 2, 0, 2, 2])
K = 5
# scikit-learn's values, by hand from the confusion matrix (reference rows):
CONFUSION = [
    [2, 1, 0, 0, 0],
    [1, 2, 0, 0, 0],
    [1, 0, 1, 0, 0],
    [0, 0, 2, 0, 0],
    [0, 0, 0, 0, 0],
]
PRECISION = [2 / 4, 2 / 3, 1 / 3, 0, 0]  # 0 where nothing is predicted (zero_division=0)
RECALL = [2 / 3, 2 / 3, 1 / 2, 0, 0]
F1 = [4 / 7, 2 / 3, 2 / 5, 0, 0]  # 2 tp / (2 tp + fp + fn)
MACRO_F1 = 43 / 105  # f1_score(average="macro"): mean over the 4 classes that occur
KAPPA = 23 / 73  # p_o = 0.5, p_e = (3*4 + 3*3 + 2*3) / 100 = 0.27: (0.5 - 0.27) / 0.73
LEGEND = Legend.from_config(
    {"name": "five", "classes": [{"code": c + 1, "name": f"class {c}"} for c in range(K)]}
)


def test_report_metrics_equal_scikit_learn_reference_values() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, K)
    assert m["confusion"] == CONFUSION
    assert confusion_matrix(Y_TRUE, Y_PRED, K).tolist() == CONFUSION
    assert m["support"] == [3, 3, 2, 2, 0]
    assert m["oa"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx(MACRO_F1)
    assert m["kappa"] == pytest.approx(KAPPA)
    np.testing.assert_allclose(m["precision"], PRECISION, rtol=1e-6)
    np.testing.assert_allclose(m["recall"], RECALL, rtol=1e-6)
    np.testing.assert_allclose(m["f1"], F1, rtol=1e-6)
    assert list(m) == [
        "oa",
        "macro_f1",
        "kappa",
        "precision",
        "recall",
        "f1",
        "support",
        "confusion",
    ]


def _reference(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict[str, Any]:
    """scikit-learn's definitions, written out from the confusion matrix."""
    cm = np.zeros((k, k))
    np.add.at(cm, (y_true, y_pred), 1)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(tp / predicted)
        recall = np.nan_to_num(tp / support)
        f1 = np.nan_to_num(2 * tp / (support + predicted))
    present = support + predicted > 0
    n = cm.sum()
    p_o, p_e = tp.sum() / n, (support * predicted).sum() / n**2
    return {
        "oa": p_o,
        "macro_f1": f1[present].mean(),
        "kappa": (p_o - p_e) / (1 - p_e),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "confusion": cm,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_report_metrics_follow_the_definitions_on_random_labels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = 500, 6
    y_true = rng.choice(5, n, p=[0.5, 0.2, 0.15, 0.1, 0.05])  # class 5 absent
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, 4, n))  # 4 never predicted
    m, ref = classification_metrics(y_true, y_pred, k), _reference(y_true, y_pred, k)
    np.testing.assert_array_equal(m["confusion"], ref["confusion"])
    for key in ("oa", "macro_f1", "kappa"):
        assert m[key] == pytest.approx(ref[key], rel=1e-6), key
    for key in ("precision", "recall", "f1"):
        np.testing.assert_allclose(m[key], ref[key], rtol=1e-6, err_msg=key)


def test_undefined_and_bad_input() -> None:
    # one class everywhere: chance agreement is 1 and kappa undefined (NaN, as scikit-learn)
    m = classification_metrics([1, 1, 1], [1, 1, 1], 3)
    assert m["oa"] == 1.0 and np.isnan(m["kappa"])
    # labels from a uint8 map (read-only, as a memory map) are fine
    labels = np.array([0, 1, 2, 2], np.uint8)
    labels.flags.writeable = False
    assert confusion_matrix(labels, labels, 3).trace() == 4
    with pytest.raises(ValueError, match=r"^predicted labels must be indices 0\.\.2, got 0\.\.3$"):
        classification_metrics([0, 1], [0, 3], 3)
    with pytest.raises(ValueError, match="integer class indices"):
        confusion_matrix([0.0, 1.0], [0, 1], 3)
    with pytest.raises(ValueError, match="2 reference and 1 predicted"):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError, match="no samples"):
        classification_metrics([], [], 3)
    assert confusion_matrix([], [], 2).tolist() == [[0, 0], [0, 0]]


class Oracle(nn.Module):
    """A 'network' whose prediction is written in the first pixel of its input."""

    def __init__(self, in_channels: int, n_classes: int) -> None:
        super().__init__()
        self.n_classes = n_classes

    def forward(self, x: Tensor) -> Tensor:
        return 5.0 * nn.functional.one_hot(x[:, 0, 0, 0].long(), self.n_classes).float()


class _Points(L.LightningDataModule):
    """The example as validation batches (of 4, so the metrics accumulate over batches)."""

    bands = ("b1", "b2")
    num_classes = K
    legend = LEGEND

    def val_dataloader(self) -> DataLoader:
        image = torch.zeros(len(Y_PRED), len(self.bands), 3, 3)
        image[:, 0, 0, 0] = torch.from_numpy(Y_PRED).float()
        rows = [{"image": i, "label": torch.tensor(t)} for i, t in zip(image, Y_TRUE, strict=True)]
        return DataLoader(rows, batch_size=4)


def test_training_logs_equal_the_report(tmp_path) -> None:
    """Lightning builds the network in configure_model (sizes from the datamodule) and the
    logged validation metrics and confusion CSV are the report's numbers."""
    task = CentrePatchTask(net={"_target_": f"{__name__}.Oracle"})
    assert task.net is None  # sizes unknown until the data is set up
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.validate(task, datamodule=_Points(), verbose=False)
    assert isinstance(task.net, Oracle)
    assert (task.hparams.net["in_channels"], task.hparams.net["n_classes"]) == (2, K)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    report = classification_metrics(Y_TRUE, Y_PRED, K)
    for key in ("oa", "macro_f1", "kappa"):
        assert logged[f"val/{key}"] == pytest.approx(report[key], rel=1e-6), key
    for key in ("precision", "recall", "f1"):
        per_class = [logged[f"val/{key}_class_{c}"] for c in range(K)]
        np.testing.assert_allclose(per_class, report[key], rtol=1e-6, err_msg=key)
    lines = (tmp_path / "val_confusion.csv").read_text().splitlines()
    assert lines[0] == "reference\\predicted," + ",".join(LEGEND.names)
    table = [[int(v) for v in line.split(",")[1:]] for line in lines[1:]]
    assert table == report["confusion"] == CONFUSION


def _datamodule() -> SimpleNamespace:
    return SimpleNamespace(
        setup=lambda stage: None,
        bands=["b1", "b2", "b3"],
        num_classes=2,
        legend=Legend.from_config(
            {"name": "two", "classes": [{"code": 1, "name": "a"}, {"code": 2, "name": "b"}]}
        ),
        norm_stats={"mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0]},
        balance="weights",
        class_weights=[0.25, 0.75],
        train_priors=[0.6, 0.4],
    )


def test_configure_model_builds_once_from_the_data_and_checks_sizes() -> None:
    net = {"_target_": "bsrlc.models.centre_patch.PixelMLP", "hidden": [4]}
    task = CentrePatchTask(net=net)
    with pytest.raises(ConfigError, match=r"^model\.net\.in_channels and model\.net\.n_classes"):
        task.configure_model()
    task._trainer = SimpleNamespace(datamodule=_datamodule())
    task.setup("fit")
    assert task.net is None  # setup sizes the network; the hook builds it
    task.configure_model()
    built = task.net
    assert built is not None and task.norm_mean.tolist() == [1.0, 2.0, 3.0]
    assert task.norm_std.tolist() == [4.0, 5.0, 6.0]
    assert task.loss_weights.tolist() == [0.25, 0.75]
    np.testing.assert_allclose(task.train_priors.tolist(), [0.6, 0.4])
    with torch.no_grad():
        task.norm_mean.fill_(9.0)  # as a restored checkpoint would
    task.configure_model()  # idempotent: neither rebuilt nor reloaded
    assert task.net is built and task.norm_mean.tolist() == [9.0] * 3
    # a checkpoint rebuilds the same network before its weights load
    ckpt = {"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict()}
    task.on_save_checkpoint(ckpt)
    loaded = CentrePatchTask(net=net)
    loaded.on_load_checkpoint(ckpt)
    loaded.load_state_dict(ckpt["state_dict"])
    assert loaded.norm_mean.tolist() == [9.0] * 3 and loaded.bands == ["b1", "b2", "b3"]
    # configured sizes that disagree with the data are refused in one line
    wrong = CentrePatchTask(net={**net, "in_channels": 4, "n_classes": 2})
    wrong._trainer = SimpleNamespace(datamodule=_datamodule())
    with pytest.raises(ConfigError, match=r"^model\.net\.in_channels=4 does not match the data"):
        wrong.setup("fit")


def test_wall_to_wall_ratios_are_the_report_precision_and_recall() -> None:
    """The area scores of a whole map are precision/recall where defined, NaN where not."""
    from bsrlc.evaluation.maps import wall_to_wall

    codes = np.asarray(LEGEND.codes)
    truth, pred = codes[Y_TRUE].reshape(2, 5), codes[Y_PRED].reshape(2, 5)
    area = wall_to_wall(pred, truth, LEGEND)
    report = classification_metrics(Y_TRUE, Y_PRED, K)
    users = [area["users_accuracy"][n] for n in LEGEND.names]
    producers = [area["producers_accuracy"][n] for n in LEGEND.names]
    np.testing.assert_allclose(users[:3], report["precision"][:3], rtol=1e-6)
    np.testing.assert_allclose(producers[:4], report["recall"][:4], rtol=1e-6)
    assert np.isnan(users[3:]).all() and np.isnan(producers[4])  # never mapped / never true
    assert area["area_oa"] == pytest.approx(report["oa"])
