"""The one mid-epoch resume-position mechanism (lt_lightning.data.loading) and the position it reads from
Lightning (lt_lightning.compat)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import Dataset, SequentialSampler

from lt_lightning.compat import batches_trained_this_epoch
from lt_lightning.data import SyntheticLTDataModule
from lt_lightning.data.loading import ResumableDataLoader, track_position
from lt_lightning.data.samplers import SAMPLERS
from tests.data.samplers.reference import COUNTS, labels_from_counts, make


class IndexDataset(Dataset):
    """Item ``i`` is ``i``: a batch is the list of the indices it holds."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return index


def _loader(name: str, batch_size: int = 4, num_replicas: int = 1, rank: int = 0, epoch: int = 2, **kwargs):
    labels = labels_from_counts(COUNTS)
    sampler = make(name, labels, seed=3, num_replicas=num_replicas, rank=rank)
    sampler.set_epoch(epoch)
    return ResumableDataLoader(IndexDataset(len(labels)), batch_size=batch_size, sampler=sampler, **kwargs)


def _batches(loader) -> list[list[int]]:
    return [batch.tolist() for batch in loader]


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize(("num_replicas", "rank"), [(1, 0), (2, 1)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_resumed_loader_trains_exactly_the_batches_left(name, num_replicas, rank, drop_last):
    full = _batches(_loader(name, num_replicas=num_replicas, rank=rank, drop_last=drop_last))
    for done in (1, 3, len(full) - 1):
        interrupted = _loader(name, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        interrupted.batches_trained = lambda done=done: done
        state = interrupted.state_dict()
        assert state == {"samples_done": done * 4, "batch_size": 4, "num_replicas": num_replicas}
        resumed = _loader(name, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        resumed.load_state_dict(state)
        assert _batches(resumed) == full[done:]
        assert _batches(resumed) == full  # the skip applies to the resumed epoch only


def test_untracked_position_is_zero_and_track_position_reads_the_trainer():
    loader = _loader("instance")
    assert loader.state_dict()["samples_done"] == 0
    assert track_position(loader, None).batches_trained is None
    progress = SimpleNamespace(current=SimpleNamespace(processed=5))
    trainer = SimpleNamespace(
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)), num_training_batches=20
    )
    track_position(loader, trainer)
    assert loader.state_dict()["samples_done"] == 20
    progress.current.processed = 20  # the epoch is complete: a resumed run starts the next one afresh
    assert loader.state_dict()["samples_done"] == 0


def test_old_checkpoint_format_is_accepted():
    full = _batches(_loader("class"))
    resumed = _loader("class")
    resumed.load_state_dict({"batches_done": 3, "batch_size": 4})  # written before num_replicas was recorded
    assert _batches(resumed) == full[3:]


@pytest.mark.parametrize(
    "state",
    [
        {"samples_done": 0, "batch_size": 8, "num_replicas": 4},  # an epoch boundary
        {"batches_done": 0, "batch_size": 8},
        {"samples_done": 80, "batch_size": 4, "num_replicas": 1},  # the whole epoch (20 batches) trained
        {"batches_done": 20, "batch_size": 4},  # an old end-of-epoch checkpoint
        {},
    ],
)
def test_epoch_boundary_states_skip_nothing_and_check_nothing(state):
    loader = _loader("power")
    full = _batches(_loader("power"))
    loader.load_state_dict(state)
    assert _batches(loader) == full


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"samples_done": 8, "batch_size": 8, "num_replicas": 1}, r"batch size 8 \(this run: 4\)"),
        ({"samples_done": 8, "batch_size": 4, "num_replicas": 2}, r"2 processes \(this run: 1\)"),
        ({"batches_done": 2, "batch_size": 16}, r"batch size 16 \(this run: 4\)"),
    ],
)
def test_mid_epoch_state_needs_the_same_batch_size_and_process_count(state, match):
    with pytest.raises(ValueError, match=match) as info:
        _loader("instance").load_state_dict(state)
    assert "an exact resume needs the same batch size and process count" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_sampler_without_skip_next_cannot_resume_mid_epoch():
    loader = ResumableDataLoader(IndexDataset(10), batch_size=2, sampler=SequentialSampler(range(10)))
    with pytest.raises(ValueError, match="SequentialSampler has none"):
        loader.load_state_dict({"samples_done": 4, "batch_size": 2, "num_replicas": 1})


# ---- under Lightning ------------------------------------------------------------------------------


class Recorder(L.LightningModule):
    """Records the labels and inputs of every training batch; a linear layer so that there is a step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.seen: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append((self.current_epoch, x.clone(), y.clone()))
        return self.layer(x).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class PositionProbe(Callback):
    def __init__(self) -> None:
        self.positions: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.positions.append(batches_trained_this_epoch(trainer))


def _trainer(root: Path, **kwargs) -> L.Trainer:
    return L.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        **kwargs,
    )


def test_lightning_position_is_the_batches_trained_this_epoch(tmp_path):
    dm = SyntheticLTDataModule(num_classes=3, feature_dim=4, max_count=40, imbalance_ratio=4, batch_size=16)
    probe = PositionProbe()
    _trainer(tmp_path, callbacks=[probe], enable_checkpointing=False).fit(Recorder(), datamodule=dm)
    per_epoch = len(dm.train_dataloader())
    assert probe.positions == [*range(1, per_epoch), 0] * 2  # 0 once the epoch's batches are all trained


@pytest.mark.slow
@pytest.mark.parametrize(("sampler", "pipeline"), [("class", "dataloader"), ("stratified", "device")])
@pytest.mark.parametrize("at", ["mid-epoch", "last batch"])
def test_lightning_resumes_with_the_batches_left(tmp_path, sampler, pipeline, at):
    def fresh():
        return SyntheticLTDataModule(
            num_classes=4,
            feature_dim=4,
            max_count=40,
            imbalance_ratio=4,
            batch_size=8,
            sampler=sampler,
            pipeline=pipeline,
        )

    straight = Recorder()
    _trainer(tmp_path / "a", enable_checkpointing=False).fit(straight, datamodule=fresh())
    step = 3 if at == "mid-epoch" else len(fresh().train_dataloader())
    save = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=step, save_top_k=-1)
    _trainer(tmp_path / "b", callbacks=[save], max_steps=step).fit(Recorder(), datamodule=fresh())
    resumed = Recorder()
    ckpt = str(tmp_path / f"ckpt/epoch=0-step={step}.ckpt")
    _trainer(tmp_path / "c").fit(resumed, datamodule=fresh(), ckpt_path=ckpt)
    assert [e for e, _, _ in resumed.seen] == [e for e, _, _ in straight.seen[step:]]
    for (_, x, y), (_, x_ref, y_ref) in zip(resumed.seen, straight.seen[step:]):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_the_position_read_names_the_lightning_version_when_the_loop_changed():
    # compat.py's version check: a Lightning whose fit loop no longer has batch_progress is refused in one
    # line instead of resuming at a wrong position
    import types

    import lightning
    import pytest

    trainer = types.SimpleNamespace(
        fit_loop=types.SimpleNamespace(epoch_loop=object()), num_training_batches=4
    )
    with pytest.raises(RuntimeError, match=rf"lightning {lightning.__version__}: .*batch_progress"):
        batches_trained_this_epoch(trainer)


# ---------------------------------------------------------------------------------- issue 20
def test_a_batch_larger_than_the_training_set_warns_once(recwarn):
    dm = SyntheticLTDataModule(
        num_classes=4,
        feature_dim=8,
        max_count=40,
        imbalance_ratio=4,
        test_per_class=5,
        batch_size=10_000,
        seed=0,
    )
    with pytest.warns(UserWarning, match=r"batch_size=10000 is larger than the training set \(\d+ samples\)"):
        loader = dm.train_dataloader()
    assert len(loader) == 1  # what the warning is about: one batch an epoch
    small = SyntheticLTDataModule(
        num_classes=4, feature_dim=8, max_count=40, imbalance_ratio=4, test_per_class=5, batch_size=8, seed=0
    )
    recwarn.clear()
    small.train_dataloader()
    assert not [w for w in recwarn if "larger than the training set" in str(w.message)]


def test_a_process_count_change_mid_epoch_names_the_count_it_was_taken_with():
    state = {"samples_done": 8, "batch_size": 4, "num_replicas": 1}
    with pytest.raises(ValueError, match=r"taken mid-epoch with 1 process \(this run: 2\)"):
        _loader("instance", num_replicas=2, rank=1).load_state_dict(state)


def test_a_position_that_fills_the_epoch_of_another_process_count_is_refused_not_taken_for_an_epoch_end():
    # 1 process, 6 of its 13 batches trained; with 2 processes an epoch is 7 batches per rank: 6 x 4
    # samples would be (almost) a whole epoch there, but it is half of the 1-process one
    one = _loader("stratified")
    two = _loader("stratified", num_replicas=2, rank=0)
    whole = len(two) * 4
    state = {"samples_done": whole, "batch_size": 4, "num_replicas": 1}
    assert whole < len(one) * 4
    with pytest.raises(ValueError, match=r"taken mid-epoch with 1 process \(this run: 2\)"):
        two.load_state_dict(state)
    two.load_state_dict({**state, "num_replicas": 2})  # the same world: a finished epoch, accepted
    assert _batches(two) == _batches(_loader("stratified", num_replicas=2, rank=0))
