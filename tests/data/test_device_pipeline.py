"""pipeline="device": same images as torchvision for a given crop/flip, same distribution, same samplers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from lt_lightning.data import CIFAR10LTDataModule, MNISTLTDataModule, SyntheticLTDataModule
from lt_lightning.data.datasets import ArrayImageDataset
from lt_lightning.data.device_pipeline import (
    AugmentSpec,
    DeviceLoader,
    augment_batch,
    spec_from_transform,
)
from lt_lightning.data.samplers import SAMPLERS, build_sampler
from lt_lightning.data.transforms import NORMALIZATION, cifar_transforms, small_image_transforms
from tests.data.formats import write_cifar, write_mnist


def _torchvision_reference(img: np.ndarray, top: int, left: int, flip: bool, pad: int, norm) -> torch.Tensor:
    """torchvision's functional steps with a chosen crop corner and flip (what RandomCrop etc. do)."""
    pil = Image.fromarray(img)
    h, w = img.shape[:2]
    if pad:
        pil = TF.pad(pil, pad, fill=0)
        pil = TF.crop(pil, top, left, h, w)
    if flip:
        pil = TF.hflip(pil)
    return TF.normalize(TF.to_tensor(pil), *norm)


@pytest.mark.parametrize(
    "shape,pad,flip,norm", [((32, 32, 3), 4, True, "cifar"), ((28, 28), 2, False, "mnist")]
)
def test_augment_batch_equals_torchvision(shape, pad, flip, norm):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(24, *shape), dtype=np.uint8)
    offsets = torch.as_tensor(rng.integers(0, 2 * pad + 1, size=(24, 2)))
    flips = torch.as_tensor(rng.random(24) < 0.5) if flip else None
    spec = AugmentSpec(pad, flip, *NORMALIZATION[norm])
    got = augment_batch(torch.as_tensor(images), spec, offsets, flips)
    for i in range(24):  # loop over the test's reference images, not in the pipeline
        ref = _torchvision_reference(
            images[i],
            int(offsets[i, 0]),
            int(offsets[i, 1]),
            bool(flip and flips[i]),
            pad,
            NORMALIZATION[norm],
        )
        torch.testing.assert_close(got[i], ref, rtol=0, atol=2e-6)  # one affine pass vs two steps


def test_spec_read_from_the_datamodules_transforms():
    assert spec_from_transform(cifar_transforms(True)[0]) == AugmentSpec(4, True, *NORMALIZATION["cifar"])
    assert spec_from_transform(cifar_transforms(True)[1]) == AugmentSpec(0, False, *NORMALIZATION["cifar"])
    mnist = small_image_transforms("mnist", 28, crop_padding=2)[0]
    assert spec_from_transform(mnist) == AugmentSpec(2, False, *NORMALIZATION["mnist"])
    from torchvision import transforms as T

    with pytest.raises(ValueError, match="ColorJitter"):
        spec_from_transform(T.Compose([T.ColorJitter(0.4), T.ToTensor()]))


def _coordinate_images(n: int) -> np.ndarray:
    """Pixel (r, c) holds (r + 1, c + 1, 7): crop corner and flip can be read back; padding reads 0."""
    r, c = np.meshgrid(np.arange(32) + 1, np.arange(32) + 1, indexing="ij")
    img = np.stack([r, c, np.full_like(r, 7)], -1).astype(np.uint8)
    return np.repeat(img[None], n, axis=0)


def _read_params(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop corner (top, left) and flip of normalised crops of :func:`_coordinate_images`."""
    mean, std = NORMALIZATION["cifar"]
    raw = torch.round((x * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]) * 255)
    rows, cols = raw[:, 0].long(), raw[:, 1].long()  # [B, 32, 32]; 0 = padding
    # Output pixel (16, 16) always shows the image (offsets are within ±4). Unflipped it is padded pixel
    # (top + 16, left + 16) = image pixel (top + 12, left + 12), stored as (top + 13, left + 13);
    # flipped, output column 16 is crop column 15: image column left + 11, stored as left + 12.
    top = rows[:, 16, 16] - 13
    flip = cols[:, 16, 17] < cols[:, 16, 16]
    left = torch.where(flip, cols[:, 16, 16] - 12, cols[:, 16, 16] - 13)
    return top.numpy(), left.numpy(), flip.numpy()


def test_augmentation_distribution_matches_torchvision():
    n = 3000
    images = _coordinate_images(n)
    labels = torch.zeros(n, dtype=torch.long)
    train_tf, _ = cifar_transforms(True)
    torch.manual_seed(0)
    tv = torch.stack([ArrayImageDataset(images, labels, train_tf)[i][0] for i in range(n)])
    sampler = build_sampler("instance", labels, seed=0, num_replicas=1, rank=0, num_classes=1)
    loader = DeviceLoader(images, labels, sampler, 500, spec_from_transform(train_tf), seed=3)
    dev = torch.cat([x for x, _ in loader])
    for x in (tv, dev):
        top, left, flip = _read_params(x)
        for off in (top, left):  # uniform over {0..8}
            counts = np.bincount(off, minlength=9)
            assert counts.shape == (9,)
            assert scipy.stats.chisquare(counts).pvalue > 1e-3
        assert scipy.stats.binomtest(int(flip.sum()), n, 0.5).pvalue > 1e-3
    # the two pipelines' corner distributions agree (two-sample chi-square on the 81 corners)
    t1, l1, _ = _read_params(tv)
    t2, l2, _ = _read_params(dev)
    table = np.stack([np.bincount(t1 * 9 + l1, minlength=81), np.bincount(t2 * 9 + l2, minlength=81)])
    assert scipy.stats.chi2_contingency(table).pvalue > 1e-3


def test_read_params_sees_known_crops():
    # the statistical test's decoder itself, on crops with known parameters
    images = torch.as_tensor(_coordinate_images(6))
    offsets = torch.tensor([[0, 0], [8, 8], [4, 4], [1, 7], [6, 2], [3, 0]])
    flips = torch.tensor([False, True, False, True, True, False])
    x = augment_batch(images, AugmentSpec(4, True, *NORMALIZATION["cifar"]), offsets, flips)
    top, left, flip = _read_params(x)
    assert top.tolist() == offsets[:, 0].tolist() and left.tolist() == offsets[:, 1].tolist()
    assert flip.tolist() == flips.tolist()


def test_loader_uses_the_sampler_and_its_ddp_slice():
    labels = torch.arange(103) % 5
    images = np.random.default_rng(0).integers(0, 256, size=(103, 8, 8, 3), dtype=np.uint8)
    spec = AugmentSpec(0, False, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    for rank in (0, 1):
        sampler = build_sampler("class", labels, seed=4, num_replicas=2, rank=rank, num_classes=5)
        loader = DeviceLoader(images, labels, sampler, 16, spec)
        assert loader.sampler is sampler
        sampler.set_epoch(3)
        batches = list(loader)
        assert len(batches) == len(loader) == -(-len(sampler) // 16)
        idx = list(iter(sampler))
        assert torch.cat([y for _, y in batches]).tolist() == labels[idx].tolist()
        want = (torch.as_tensor(images[idx]).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
        torch.testing.assert_close(torch.cat([x for x, _ in batches]), want)
    loader = DeviceLoader(images, labels, sampler, 16, spec, drop_last=True)
    assert len(list(loader)) == len(loader) == len(sampler) // 16


def test_epochs_are_reproducible_and_differ():
    images = _coordinate_images(64)
    labels = torch.zeros(64, dtype=torch.long)
    spec = AugmentSpec(4, True, *NORMALIZATION["cifar"])

    def epoch(e: int, seed: int = 0) -> torch.Tensor:
        sampler = build_sampler("instance", labels, seed=seed, num_replicas=1, rank=0, num_classes=1)
        sampler.set_epoch(e)
        return torch.cat([x for x, _ in DeviceLoader(images, labels, sampler, 10, spec, seed=seed)])

    assert torch.equal(epoch(2), epoch(2))  # a resumed epoch replays exactly
    assert not torch.equal(epoch(2), epoch(3))
    assert not torch.equal(epoch(2), epoch(2, seed=1))


def test_mid_epoch_state_resumes_with_the_remaining_batches():
    # a mid-epoch checkpoint stores the samples trained; the resumed loader yields exactly the rest,
    # with the same crops and flips (drawn for the whole epoch from (seed, epoch, rank))
    images = _coordinate_images(64)
    labels = torch.arange(64) % 4
    spec = AugmentSpec(4, True, *NORMALIZATION["cifar"])

    def loader() -> DeviceLoader:
        sampler = build_sampler("class", labels, seed=5, num_replicas=1, rank=0, num_classes=4)
        sampler.set_epoch(1)
        return DeviceLoader(images, labels, sampler, 10, spec, seed=2)

    full = list(loader())
    interrupted = loader()
    interrupted.batches_trained = lambda: 3
    state = interrupted.state_dict()
    assert state == {"samples_done": 30, "batch_size": 10, "num_replicas": 1}
    resumed = loader()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(full) - 3
    for (x, y), (x_ref, y_ref) in zip(rest, full[3:]):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    assert len(list(resumed)) == len(full)  # the skip applies to the resumed epoch only
    with pytest.raises(ValueError, match="same batch size"):
        loader().load_state_dict({"batches_done": 2, "batch_size": 16})


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize(("num_replicas", "rank"), [(1, 0), (2, 1), (3, 2)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_resumed_device_batches_equal_the_uninterrupted_ones(name, num_replicas, rank, drop_last):
    """Bit for bit, for every sampler and rank: the crops and flips follow the skipped position."""
    images = np.random.default_rng(1).integers(0, 256, size=(101, 32, 32, 3), dtype=np.uint8)
    labels = torch.arange(101) % 5
    spec = AugmentSpec(4, True, *NORMALIZATION["cifar"])

    def loader() -> DeviceLoader:
        options = {"q": 0.5} if name == "power" else {}
        sampler = build_sampler(
            name,
            labels,
            seed=7,
            num_replicas=num_replicas,
            rank=rank,
            num_epochs=3,
            batch_size=6 * num_replicas,
            **options,
        )
        sampler.set_epoch(2)
        return DeviceLoader(images, labels, sampler, 6, spec, seed=4, drop_last=drop_last)

    full = list(loader())
    for done in (1, len(full) // 2, len(full) - 1):
        resumed = loader()
        resumed.load_state_dict({"samples_done": done * 6, "batch_size": 6, "num_replicas": num_replicas})
        rest = list(resumed)
        assert len(rest) == len(full) - done
        for (x, y), (x_ref, y_ref) in zip(rest, full[done:]):
            assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_augment_batch_needs_the_parameters_its_spec_uses():
    images = torch.zeros(2, 8, 8, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="crop corners"):
        augment_batch(images, AugmentSpec(2, False), None, None)
    with pytest.raises(ValueError, match="flips"):
        augment_batch(images, AugmentSpec(0, True), None, None)


def test_datamodules_device_pipeline(tmp_path):
    write_cifar(tmp_path, 10, 20, 4)
    write_mnist(tmp_path, "MNIST", 20, 4)
    for cls in (CIFAR10LTDataModule, MNISTLTDataModule):
        kwargs = dict(data_dir=str(tmp_path), imbalance_ratio=10, max_count=20, batch_size=16, seed=1)
        ref, dev = cls(**kwargs), cls(pipeline="device", **kwargs)
        tv_loader, dev_loader = ref.train_dataloader(), dev.train_dataloader()
        assert isinstance(dev_loader, DeviceLoader) and type(dev_loader.sampler) is type(tv_loader.sampler)
        assert len(dev_loader) == len(tv_loader)
        tv_y = torch.cat([y for _, y in tv_loader])
        dev_batches = list(dev_loader)
        assert torch.equal(torch.cat([y for _, y in dev_batches]), tv_y)
        x = dev_batches[0][0]
        assert x.dtype == torch.float32 and x.shape[1:] == next(iter(tv_loader))[0].shape[1:]
    synth = SyntheticLTDataModule(pipeline="device", batch_size=32)
    x, y = next(iter(synth.train_dataloader()))
    assert x.dtype == torch.float32 and len(y) == 32
    with pytest.raises(ValueError, match="unknown pipeline"):
        CIFAR10LTDataModule(data_dir="x", pipeline="gpu")


@pytest.mark.slow
def test_fit_with_device_pipeline_resumes_exactly(tmp_path):
    """Lightning drives the DeviceLoader (set_epoch on its sampler every epoch); resume is exact."""
    from functools import partial

    from lt_lightning.models import JointModule
    from lt_lightning.optim import LRSchedule
    from tests.models.helpers import cpu_trainer

    write_cifar(tmp_path, 10, 12, 2)

    def fresh():
        torch.manual_seed(0)
        dm = CIFAR10LTDataModule(
            data_dir=str(tmp_path), imbalance_ratio=4, max_count=12, batch_size=16, pipeline="device"
        )
        model = JointModule(
            num_classes=10,
            class_counts=dm.class_counts,
            backbone="resnet32",
            optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4),
            lr_schedule=LRSchedule(name="constant"),
        )
        return dm, model

    dm, straight = fresh()
    seen = []
    trainer = cpu_trainer(tmp_path / "a", max_epochs=2, limit_val_batches=0)
    orig = DeviceLoader.__iter__

    def spy(self):
        seen.append(self.sampler.epoch)
        return orig(self)

    DeviceLoader.__iter__ = spy
    try:
        trainer.fit(straight, datamodule=dm)
    finally:
        DeviceLoader.__iter__ = orig
    assert sorted(set(seen)) == [0, 1] and seen[-1] == 1  # (Lightning may open one extra iterator)
    dm, first = fresh()
    t = cpu_trainer(tmp_path / "b", max_epochs=1, limit_val_batches=0)
    t.fit(first, datamodule=dm)
    t.save_checkpoint(tmp_path / "one.ckpt")
    dm, resumed = fresh()
    cpu_trainer(tmp_path / "c", max_epochs=2, limit_val_batches=0).fit(
        resumed, datamodule=dm, ckpt_path=str(tmp_path / "one.ckpt")
    )
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_cli_fit_with_device_pipeline_and_bf16(tmp_path, monkeypatch):
    """``lt-lightning fit --data.pipeline device --trainer.precision bf16-mixed`` end to end (digits-LT)."""
    from pathlib import Path

    from lt_lightning.cli import build_cli

    monkeypatch.chdir(tmp_path)
    configs = Path(__file__).parents[2] / "configs"
    cli = build_cli(
        [
            "fit",
            "--config",
            str(configs / "digits_lt/implicit_etf.yaml"),
            "--data.pipeline",
            "device",
            "--trainer.precision",
            "bf16-mixed",
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_val_batches",
            "1",
        ]
    )
    assert isinstance(cli.trainer.train_dataloader, DeviceLoader)
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))


@pytest.mark.slow
@pytest.mark.ddp
def test_device_pipeline_under_real_ddp_takes_the_samplers_slices(tmp_path):
    """2-process CPU DDP: each rank's DeviceLoader yields exactly its contiguous slice of the epoch."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from lt_lightning.data.samplers import ClassBalancedSampler
    from tests.data.samplers.reference import reference_padded_order

    repo = Path(__file__).resolve().parents[2]
    launcher_vars = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"}
    env = {k: v for k, v in os.environ.items() if k not in launcher_vars}
    env["PYTHONPATH"] = os.pathsep.join([str(repo), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    script = repo / "tests" / "data" / "ddp_sampler_script.py"
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "device"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, record in enumerate(records):
        assert record["sampler_world"] == [2, rank] and record["used_sampler"] == "ClassBalancedSampler"
    reference = ClassBalancedSampler(records[0]["labels"], seed=records[0]["seed"])
    for epoch in ("0", "1"):
        together = records[0]["epochs"][epoch] + records[1]["epochs"][epoch]
        assert together == reference_padded_order(reference.global_indices(int(epoch)).tolist(), 2)
    assert records[0]["epochs"]["0"] != records[0]["epochs"]["1"]  # set_epoch reached the sampler


def test_a_device_loader_over_an_evaluation_split_gives_the_dataloader_s_batches(tmp_path):
    # the evaluation loaders can use DeviceLoader too (the eval transform is ToTensor + Normalize, so no
    # parameters are drawn): same samples, same order, same values to float32 rounding, per rank
    write_cifar(tmp_path, 10, 20, 4)
    dm = CIFAR10LTDataModule(data_dir=str(tmp_path), imbalance_ratio=10, max_count=20, batch_size=16)
    dm.setup("fit")
    for dataset, loader in (
        (dm.val_dataset, dm.val_dataloader()),
        (dm.train_eval_dataset, dm.train_eval_dataloader()),
    ):
        spec = spec_from_transform(dataset.transform)
        assert spec.crop_padding == 0 and not spec.flip
        device = DeviceLoader(dataset.images, dataset.targets, loader.sampler, loader.batch_size, spec)
        assert len(device) == len(loader)
        pairs = list(zip(device, loader, strict=True))
        for (x, y), (x_ref, y_ref) in pairs:
            assert torch.equal(y, y_ref)
            torch.testing.assert_close(x, x_ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("world", [(1, 0), (2, 1)])
def test_the_device_pipeline_serves_the_evaluation_splits_on_the_device(tmp_path, world):
    # pipeline="device": validation, test and the NC callback's training pass are DeviceLoaders giving
    # the DataLoader path's samples in its order (this rank's unpadded share) and its values to float32
    # rounding; predictions keep the DataLoader (writers read the dataset's order and files)
    write_cifar(tmp_path, 10, 20, 4)
    kwargs = dict(data_dir=str(tmp_path), imbalance_ratio=10, max_count=20, batch_size=16, eval_batch_size=7)
    ref, dev = CIFAR10LTDataModule(**kwargs), CIFAR10LTDataModule(pipeline="device", **kwargs)
    for dm in (ref, dev):
        dm._world = lambda: world
    for name in ("val_dataloader", "test_dataloader", "train_eval_dataloader"):
        loader, on_device = getattr(ref, name)(), getattr(dev, name)()
        assert isinstance(on_device, DeviceLoader) and not isinstance(loader, DeviceLoader), name
        assert len(on_device) == len(loader) and on_device.batch_size == 7
        for (x, y), (x_ref, y_ref) in zip(on_device, loader, strict=True):
            assert torch.equal(y, y_ref)
            torch.testing.assert_close(x, x_ref, atol=1e-6, rtol=0)
    assert not isinstance(dev.predict_dataloader(), DeviceLoader)
    digits = SyntheticLTDataModule(pipeline="device", batch_size=32, eval_batch_size=1000)
    x, y = next(iter(digits.val_dataloader()))  # float inputs: passed through as they are
    x_ref, y_ref = next(iter(SyntheticLTDataModule(batch_size=32, eval_batch_size=1000).val_dataloader()))
    assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
