"""callbacks/predictions.py: ``PredictionWriter`` saves the predict loop's logits, predictions, targets and
dataset indices (``.pt``) and a CSV, the same values ``trainer.predict`` returns."""

from __future__ import annotations

import torch

from lt_lightning.callbacks import PredictionWriter
from lt_lightning.callbacks.predictions import concat_predictions
from lt_lightning.models import JointModule
from tests.models.helpers import cpu_trainer, model_kwargs, synthetic_dm


def test_prediction_writer_saves_logits_and_csv(tmp_path, capsys):
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm))
    writer = PredictionWriter(output_dir=str(tmp_path / "pred"))
    out = cpu_trainer(tmp_path, callbacks=[writer]).predict(model, datamodule=dm, return_predictions=True)
    saved = torch.load(tmp_path / "pred/predictions.pt")
    assert writer.last_path == str(tmp_path / "pred/predictions.pt")
    torch.testing.assert_close(saved["logits"], torch.cat([o["logits"] for o in out]))
    assert torch.equal(saved["index"], torch.arange(len(dm.test_dataset)))
    assert torch.equal(saved["targets"], dm.test_dataset.targets)
    rows = (tmp_path / "pred/predictions.csv").read_text().splitlines()
    assert rows[0] == "index,target,prediction" and len(rows) == len(dm.test_dataset) + 1
    i, y, p = map(int, rows[5].split(","))
    assert (i, y, p) == (4, int(saved["targets"][4]), int(saved["preds"][4]))
    accuracy = (saved["preds"] == saved["targets"]).double().mean().item()
    assert f"top-1 accuracy {accuracy:.4f}" in capsys.readouterr().out


def test_concat_predictions():
    batches = [{"preds": torch.tensor([1, 2])}, {"preds": torch.tensor([0])}]
    assert torch.equal(concat_predictions(batches)["preds"], torch.tensor([1, 2, 0]))
    assert concat_predictions([]) == {}
