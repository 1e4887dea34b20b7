"""The shared machinery of every long-tailed datamodule: loaders, sampler choice and the run's facts.

Every datamodule knows ``num_classes``, ``class_counts`` and ``shot_groups`` right after ``__init__``
(LightningCLI links them into the model before ``setup`` runs), builds its datasets in ``setup``, and
offers ``train_eval_dataloader()``: the training set un-augmented and in order, for measurements.

Under DDP the training loader's sampler is one of ours (a ``DistributedSampler`` subclass, so Lightning
leaves it alone): every rank draws the same global epoch from ``(seed, epoch)`` and takes its own
slice. The evaluation loaders (val, test, train-eval) give each rank a disjoint, unpadded share, so
metrics that sum per-class counts across ranks count every sample exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
from torch.utils.data import DataLoader

import lt_lightning.spec as spec
from lt_lightning.data.datasets import LabelledDataset
from lt_lightning.data.device_pipeline import PIPELINES, DeviceLoader, PipelineName, spec_from_transform
from lt_lightning.data.loading import ResumableDataLoader, track_position
from lt_lightning.data.samplers import (
    SAMPLERS,
    DistributedEvalSampler,
    LongTailSampler,
    SamplerName,
    build_sampler,
)

__all__ = ["LongTailDataModule", "resolve_dir", "train_drop_last"]

_Loader = TypeVar("_Loader", bound=DataLoader)


#: the per-process training batch when neither batch_size nor global_batch_size is given
DEFAULT_BATCH_SIZE = 128


class LongTailDataModule(L.LightningDataModule):
    """Shared machinery: loaders, sampler choice, seed, class counts and shot groups.

    Subclasses call :meth:`_set_class_counts` in ``__init__`` (which fixes ``num_classes``,
    ``class_counts`` and ``shot_groups``) and implement ``_build_datasets()`` returning ``(train,
    train_eval, val, test)`` :class:`~lt_lightning.data.datasets.LabelledDataset` s.

    Args:
        batch_size: training batch size per process (default 128 when ``global_batch_size`` is unset).
        global_batch_size: the training batch summed over all processes (the papers' batch sizes are
            global): each of the ``world_size`` processes takes ``global_batch_size / world_size``, which
            must divide evenly, so the optimisation does not change with the number of GPUs. Set one of
            the two, not both.
        eval_batch_size: batch size of the evaluation loaders (default: ``batch_size``, else
            ``global_batch_size``).
        num_workers: DataLoader workers.
        sampler: ``"instance"``, ``"class"`` (Kang's 4-per-visit round robin), ``"sqrt"``, ``"power"``
            (class probability ∝ n_c^q), ``"progressive"`` or ``"stratified"`` (Markou: every batch holds
            each class in its training proportion), the keys of :data:`~lt_lightning.data.samplers.SAMPLERS`.
        sampler_q: q of the ``"power"`` sampler, in [0, 1].
        samples_per_class: samples per class visit of the ``"class"`` sampler (Kang: 4).
        sampler_epochs: T of the ``"progressive"`` sampler (default: the trainer's ``max_epochs``).
        seed: seed of the split and of the sampler order.
        pin_memory: DataLoader ``pin_memory`` (page-locked host batches for faster GPU copies).
        persistent_workers: keep the DataLoader workers alive between epochs (needs ``num_workers > 0``).
        drop_last: drop the last incomplete training batch of every epoch.
        many_threshold: classes with more training samples than this are many-shot.
        few_threshold: classes with fewer training samples than this are few-shot.
        shot_group_boundaries: ``[medium_start, few_start]``: the shot groups as ranges of class rank
            instead of count thresholds, with the classes ranked by descending training count
            (:func:`lt_lightning.spec.count_order`): the ``medium_start`` most frequent classes are
            many-shot, the next ``few_start - medium_start`` medium, the rest few. Where the class ids
            already descend in count (CIFAR-LT) rank = id; on ImageNet-LT, Places-LT and iNat the split
            file's ids are ranked as ``np.argsort(-counts)``, as Yang renumbers ImageNet-LT (his
            ``[390, 835]``; CIFAR-100-LT ``[36, 71]``).
        pipeline: ``"dataloader"`` (default: torchvision transforms in a DataLoader) or ``"device"``
            (in-memory datasets only: the data move once to the training device and each training
            batch is gathered and augmented there, see :mod:`lt_lightning.data.device_pipeline`;
            same samplers, same augmentation distribution).

    Attributes:
        num_classes: K.
        class_counts: ``[K]`` training samples per class.
        shot_groups: ``[K]`` shot group of every class, 0 many, 1 medium, 2 few: from
            ``shot_group_boundaries`` (ranges of count rank, as Yang's ``head/med/tail_class_idx``) when
            given, else from the count thresholds (:mod:`lt_lightning.spec`). Computed once, here.
    """

    num_classes: int
    class_counts: list[int]
    shot_groups: list[int]
    #: whether the training set is in memory, so that ``pipeline="device"`` can hold it on the device
    supports_device_pipeline: bool = True

    def __init__(
        self,
        *,
        batch_size: int | None = None,
        global_batch_size: int | None = None,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        sampler: SamplerName = "instance",
        sampler_q: float | None = None,
        samples_per_class: int = 4,
        sampler_epochs: int | None = None,
        seed: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        drop_last: bool = False,
        many_threshold: int = spec.DEFAULT_MANY_THRESHOLD,
        few_threshold: int = spec.DEFAULT_FEW_THRESHOLD,
        shot_group_boundaries: Sequence[int] | None = None,
        pipeline: PipelineName = "dataloader",
    ) -> None:
        super().__init__()
        if pipeline not in PIPELINES:
            raise ValueError(f"unknown pipeline {pipeline!r}; valid pipelines: {', '.join(PIPELINES)}")
        if pipeline == "device" and not self.supports_device_pipeline:
            raise ValueError(f"{type(self).__name__} reads images from disk; use pipeline='dataloader'")
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; valid samplers: {', '.join(SAMPLERS)}")
        if sampler == "power" and (sampler_q is None or not 0.0 <= sampler_q <= 1.0):
            raise ValueError(f"the 'power' sampler needs sampler_q in [0, 1], got {sampler_q!r}")
        if sampler_q is not None and not 0.0 <= sampler_q <= 1.0:
            raise ValueError(f"sampler_q must lie in [0, 1], got {sampler_q!r}")
        if batch_size is not None and global_batch_size is not None:
            raise ValueError(
                f"batch_size={batch_size} (per process) and global_batch_size={global_batch_size} (summed "
                "over processes) are both set; set one (on the command line, null the other: "
                "--data.init_args.global_batch_size null)"
            )
        if batch_size is None and global_batch_size is None:
            batch_size = DEFAULT_BATCH_SIZE
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if global_batch_size is not None and global_batch_size < 1:
            raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
        if samples_per_class < 1:
            raise ValueError(f"samples_per_class must be >= 1, got {samples_per_class}")
        self.batch_size = batch_size
        self.global_batch_size = global_batch_size
        self.eval_batch_size = eval_batch_size or batch_size or global_batch_size
        self.num_workers = num_workers
        self.sampler = sampler
        self.sampler_q = sampler_q
        self.samples_per_class = samples_per_class
        self.sampler_epochs = sampler_epochs
        self.seed = seed
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.drop_last = drop_last
        self.many_threshold = many_threshold
        self.few_threshold = few_threshold
        self.shot_group_boundaries = None if shot_group_boundaries is None else list(shot_group_boundaries)
        self.pipeline = pipeline
        self.train_dataset: LabelledDataset | None = None
        self.train_eval_dataset: LabelledDataset | None = None
        self.val_dataset: LabelledDataset | None = None
        self.test_dataset: LabelledDataset | None = None

    # ---- facts about the split -------------------------------------------------------------------
    def _set_class_counts(self, counts: Sequence[int]) -> None:
        """Fix the run's facts: ``num_classes``, ``class_counts`` and (from them) ``shot_groups``.

        Raises:
            ValueError: a class without training samples, or ``shot_group_boundaries`` that are not two
                class indices ``0 <= medium_start <= few_start <= K``, or ``few_threshold >
                many_threshold``.
        """
        zero = [c for c, n in enumerate(counts) if n < 1]
        if zero:
            raise ValueError(
                f"classes {zero} would have no training samples (counts {list(counts)}); "
                "lower imbalance_ratio or raise max_count"
            )
        self.num_classes = len(counts)
        self.class_counts = [int(n) for n in counts]
        if self.shot_group_boundaries is not None:
            groups = spec.shot_groups_from_boundaries(
                self.num_classes, self.shot_group_boundaries, class_counts=self.class_counts
            )
        else:
            groups = spec.shot_groups(self.class_counts, self.many_threshold, self.few_threshold)
        self.shot_groups = groups.tolist()

    def __str__(self) -> str:
        # Lightning's LightningDataModule.__str__ builds every loader (running setup) to print dataset
        # sizes, and fails on a DeviceLoader; the run's facts are known without building anything.
        counts = getattr(self, "class_counts", None)  # None while a subclass's __init__ is running
        return (
            f"{type(self).__name__}(num_classes={len(counts) if counts else None}, "
            f"train samples={sum(counts) if counts else None}, sampler={self.sampler!r}, "
            f"pipeline={self.pipeline!r}, batch_size={self.batch_size}, "
            f"global_batch_size={self.global_batch_size})"
        )

    @property
    def val_is_test(self) -> bool:
        """True when validation reuses the test split (no ``val_per_class`` / no separate val file):
        anything chosen on validation (τ, α, a checkpoint) would then be chosen on the test set."""
        self.train_dataset_or_setup()
        return self.val_dataset is self.test_dataset

    @property
    def num_train_samples(self) -> int:
        return int(sum(self.class_counts))

    # ---- building --------------------------------------------------------------------------------
    def _build_datasets(self) -> tuple[LabelledDataset, LabelledDataset, LabelledDataset, LabelledDataset]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        train, train_eval, val, test = self._build_datasets()
        realized = torch.bincount(train.targets, minlength=self.num_classes).tolist()
        if realized != self.class_counts:
            raise ValueError(
                f"{type(self).__name__}: the data on disk gives training counts {realized}, "
                f"but the configuration announced {self.class_counts}; check max_count / the data files"
            )
        self.train_dataset, self.train_eval_dataset, self.val_dataset, self.test_dataset = (
            train,
            train_eval,
            val,
            test,
        )

    def train_dataset_or_setup(self) -> LabelledDataset:
        if self.train_dataset is None:
            self.setup("fit")
        assert self.train_dataset is not None
        return self.train_dataset

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.world_size, trainer.global_rank
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def _loader(
        self,
        dataset: LabelledDataset,
        batch_size: int,
        sampler: Any,
        drop_last: bool = False,
        loader_cls: type[_Loader] = DataLoader,  # type: ignore[assignment]
    ) -> _Loader:
        return loader_cls(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory or torch.cuda.is_available(),  # page-locked: async copies to a GPU
            persistent_workers=self.num_workers > 0,  # workers live across epochs: no re-spawn per epoch
            drop_last=drop_last,
        )

    def build_train_sampler(self) -> LongTailSampler:
        """The training sampler of ``self.sampler`` over the training labels, for this rank."""
        train = self.train_dataset_or_setup()
        num_replicas, rank = self._world()
        options = SAMPLERS[self.sampler].build_options  # "stratified" takes the global batch size
        epochs = self.sampler_epochs
        if epochs is None and self.sampler == "progressive":
            trainer = getattr(self, "trainer", None)
            epochs = trainer.max_epochs if trainer is not None and trainer.max_epochs else None
            if epochs is None or epochs < 1:
                raise ValueError(
                    "the 'progressive' sampler needs sampler_epochs or a trainer with max_epochs"
                )
        return build_sampler(
            self.sampler,
            train.targets,
            seed=self.seed,
            q=self.sampler_q,
            num_epochs=epochs,
            samples_per_class=self.samples_per_class,
            num_replicas=num_replicas,
            rank=rank,
            num_classes=self.num_classes,
            batch_size=self.train_batch_size() * num_replicas if "batch_size" in options else None,
        )

    def _eval_loader(self, dataset: LabelledDataset | None, device: bool = True) -> DataLoader | DeviceLoader:
        """This rank's unpadded share of ``dataset``, in order; with ``pipeline="device"`` (and
        ``device``) batched on the device like the training split, so an evaluation epoch costs no
        per-image transforms and no worker start-up."""
        self.train_dataset_or_setup()
        assert dataset is not None
        num_replicas, rank = self._world()
        sampler = DistributedEvalSampler(dataset, num_replicas=num_replicas, rank=rank)
        if device and self.pipeline == "device":
            return self._device_loader(dataset, sampler, self.eval_batch_size, drop_last=False)
        return self._loader(dataset, self.eval_batch_size, sampler)

    def train_batch_size(self) -> int:
        """Per-process training batch size (``global_batch_size / world_size`` when that is set)."""
        if self.global_batch_size is None:
            return int(self.batch_size or DEFAULT_BATCH_SIZE)  # set whenever global_batch_size is not
        world, _ = self._world()
        if self.global_batch_size % world:
            raise ValueError(
                f"global_batch_size={self.global_batch_size} is not divisible by the {world} processes"
            )
        return self.global_batch_size // world

    def train_dataloader(self) -> ResumableDataLoader | DeviceLoader:
        """The training loader of ``pipeline``; its position within the epoch is saved in checkpoints
        (:mod:`lt_lightning.data.loading`)."""
        dataset = self.train_dataset_or_setup()
        sampler = self.build_train_sampler()
        batch_size = self.train_batch_size()
        drop_last = train_drop_last(len(sampler), batch_size, self.drop_last)
        loader: ResumableDataLoader | DeviceLoader
        if self.pipeline == "device":
            loader = self._device_loader(dataset, sampler, batch_size, drop_last)
        else:
            loader = self._loader(dataset, batch_size, sampler, drop_last, loader_cls=ResumableDataLoader)
        track_position(loader, getattr(self, "trainer", None))
        return loader

    def _device_loader(
        self, dataset: LabelledDataset, sampler: Any, batch_size: int, drop_last: bool
    ) -> DeviceLoader:
        data = getattr(dataset, "images", getattr(dataset, "inputs", None))
        if data is None:
            raise ValueError(f"pipeline='device' needs an in-memory dataset, got {type(dataset).__name__}")
        trainer = getattr(self, "trainer", None)
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        return DeviceLoader(
            data,
            dataset.targets,
            sampler,
            batch_size,
            spec_from_transform(dataset.transform),
            device,
            drop_last=drop_last,
            seed=self.seed,
        )

    def train_eval_dataloader(self) -> DataLoader | DeviceLoader:
        """The training set, un-augmented and in order (this rank's unpadded share under DDP)."""
        self.train_dataset_or_setup()
        return self._eval_loader(self.train_eval_dataset)

    def val_dataloader(self) -> DataLoader | DeviceLoader:
        self.train_dataset_or_setup()
        return self._eval_loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader | DeviceLoader:
        self.train_dataset_or_setup()
        return self._eval_loader(self.test_dataset)

    def predict_dataloader(self) -> DataLoader:
        """The test split through a DataLoader (prediction writers read the dataset's order and files)."""
        self.train_dataset_or_setup()
        return self._eval_loader(self.test_dataset, device=False)


def train_drop_last(samples_per_epoch: int, batch_size: int, drop_last: bool) -> bool:
    """The ``drop_last`` a training loader needs for ``samples_per_epoch`` samples per process.

    A last batch of a single sample is dropped (BatchNorm cannot train on one sample, and it would
    crash after the first epoch with a bare error); a batch larger than the epoch with ``drop_last``
    would train nothing and exit 0, so it is an error.

    Raises:
        ValueError: ``drop_last`` and ``batch_size > samples_per_epoch``.
    """
    if drop_last and batch_size > samples_per_epoch:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {samples_per_epoch} training samples per process "
            "and drop_last=True: no training batch would be left; lower batch_size or set drop_last false"
        )
    return drop_last or (samples_per_epoch > 1 and samples_per_epoch % batch_size == 1)


def resolve_dir(data_dir: str | os.PathLike) -> Path:
    """``data_dir`` as a path, ``~`` expanded."""
    return Path(os.path.expanduser(str(data_dir)))
