"""ClassMeanTracker against a numpy loop written from the REFERENCE.md rules, on one and two processes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lt_lightning.nn.class_means import (
    ClassMeanTracker,
    batch_class_sums,
    centred_class_means,
    class_mean_momentum,
    update_class_mean_average,
)

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference_class_means(batches, num_classes, dim, momentum=None, floor=1e-4):
    """Loop over samples and classes; returns the F after every step and its Frobenius-normalised copy."""
    f = np.zeros((num_classes, dim))
    seen = np.zeros(num_classes, dtype=bool)
    history = []
    for t, (x, y) in enumerate(batches, start=1):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
        total = np.zeros(dim)
        for i in range(len(y)):
            total += x[i]
        mu = total / len(y)
        alpha = momentum if momentum is not None else max(2.0 / (t + 1), floor)
        new = f.copy()
        present = np.zeros(num_classes, dtype=bool)
        for c in range(num_classes):
            rows = [x[i] for i in range(len(y)) if y[i] == c]
            if rows:
                present[c] = True
                new[c] = alpha * (np.mean(rows, axis=0) - mu) + (1 - alpha) * f[c]
            elif not seen[c]:
                new[c] = mu
        f = new
        seen |= present
        history.append((f.copy(), f / np.linalg.norm(f)))
    return history


def _batches(num_classes, dim, label_sets, batch_size=8, seed=0):
    """Batches whose labels are drawn from given class subsets (missing and late-appearing classes)."""
    rng = np.random.default_rng(seed)
    out = []
    for classes in label_sets:
        labels = rng.choice(classes, size=batch_size)
        labels[: len(classes)] = classes  # every listed class present
        feats = rng.normal(size=(batch_size, dim)) + 0.5 * labels[:, None]
        out.append((torch.tensor(feats, dtype=F64), torch.tensor(labels, dtype=torch.long)))
    return out


LABEL_SETS = [[0, 1, 2], [0, 1, 2, 3], [1, 4], [0, 5], [2, 3, 4], [0], [0, 1, 2, 3, 4, 5], [5, 5, 5]]


# --- pure functions -------------------------------------------------------------------------------


def test_batch_class_sums_match_a_loop():
    x = torch.randn(11, 4, dtype=F64)
    y = torch.tensor([0, 2, 2, 5, 0, 0, 2, 5, 5, 5, 1])
    sums, counts = batch_class_sums(x, y, 7)
    for c in range(7):
        rows = [x[i] for i in range(11) if y[i] == c]
        expected = torch.stack(rows).sum(0) if rows else torch.zeros(4, dtype=F64)
        assert torch.allclose(sums[c], expected, atol=1e-12)
        assert counts[c] == len(rows)


def test_centred_class_means_are_sample_weighted():
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 0.0], [0.0, 8.0]], dtype=F64)
    y = torch.tensor([0, 0, 0, 1])
    means, mu, present = centred_class_means(*batch_class_sums(x, y, 3))
    assert torch.allclose(mu, torch.tensor([2.25, 2.0], dtype=F64))  # not the mean of class means
    assert torch.allclose(means[0], torch.tensor([3.0, 0.0], dtype=F64) - mu)
    assert torch.allclose(means[1], torch.tensor([0.0, 8.0], dtype=F64) - mu)
    assert present.tolist() == [True, True, False]


def test_momentum_schedule_and_floor():
    steps = torch.arange(1, 8)
    assert torch.allclose(class_mean_momentum(steps), 2.0 / (steps + 1))
    assert class_mean_momentum(torch.tensor(1)) == 1.0
    assert torch.allclose(class_mean_momentum(torch.tensor(10**6)), torch.tensor(1e-4))
    assert torch.allclose(class_mean_momentum(steps, floor=0.3)[-2:], torch.tensor([0.3, 0.3]))


def test_update_rules_per_row():
    prev = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], dtype=F64)
    seen = torch.tensor([True, True, False])
    means = torch.tensor([[10.0, 0.0], [20.0, 0.0], [30.0, 0.0]], dtype=F64)
    mu = torch.tensor([7.0, 9.0], dtype=F64)
    present = torch.tensor([True, False, False])
    new, seen_new = update_class_mean_average(prev, seen, means, mu, present, 0.25)
    assert torch.allclose(new[0], 0.25 * means[0] + 0.75 * prev[0])  # present: blended
    assert torch.equal(new[1], prev[1])  # missing, seen before: kept
    assert torch.equal(new[2], mu)  # missing, never seen: filled with the batch mean
    assert seen_new.tolist() == [True, True, False]


# --- the module against the reference -------------------------------------------------------------


@pytest.mark.parametrize(("momentum", "floor"), [(None, 1e-4), (None, 0.3), (0.1, 1e-4), (1.0, 1e-4)])
def test_tracker_matches_numpy_loop(momentum, floor):
    k, d = 6, 5
    batches = _batches(k, d, LABEL_SETS)
    tracker = ClassMeanTracker(k, d, momentum=momentum, min_momentum=floor, dtype=F64)
    reference = reference_class_means([(x.numpy(), y.numpy()) for x, y in batches], k, d, momentum, floor)
    for (x, y), (f_ref, y_ref) in zip(batches, reference):
        out = tracker(x, y)
        assert torch.allclose(tracker.average, torch.tensor(f_ref), atol=1e-12)
        assert torch.allclose(out.normalized, torch.tensor(y_ref), atol=1e-12)
        assert torch.allclose(torch.linalg.vector_norm(out.normalized), torch.tensor(1.0, dtype=F64))
        assert torch.allclose(out.global_mean, x.mean(0), atol=1e-12)
    assert int(tracker.step) == len(batches)
    assert tracker.seen.all()


def test_more_classes_than_samples():
    k, d = 12, 3
    batches = _batches(k, d, [[0, 1], [2, 3, 4], [11]], batch_size=5, seed=1)
    tracker = ClassMeanTracker(k, d, dtype=F64)
    reference = reference_class_means([(x.numpy(), y.numpy()) for x, y in batches], k, d)
    for (x, y), (f_ref, _) in zip(batches, reference):
        tracker(x, y)
        assert torch.allclose(tracker.average, torch.tensor(f_ref), atol=1e-12)
    assert tracker.seen.sum() == 6


def test_all_features_equal_gives_zero_not_nan():
    tracker = ClassMeanTracker(3, 2, dtype=F64)
    out = tracker(torch.ones(6, 2, dtype=F64), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert torch.equal(out.normalized, torch.zeros(3, 2, dtype=F64))


def test_float32_buffers_float64_features():
    tracker = ClassMeanTracker(3, 2)
    x = torch.randn(6, 2, dtype=F64)
    out = tracker(x, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert out.normalized.dtype == F64 and tracker.average.dtype == torch.float32
    exact = ClassMeanTracker(3, 2, dtype=F64)
    exact(x, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert torch.allclose(tracker.average.double(), exact.average, atol=1e-6)


# --- gradients --------------------------------------------------------------------------------------


def test_output_carries_gradient_to_this_batch_only():
    k, d = 4, 3
    batches = _batches(k, d, [[0, 1, 2], [1, 2, 3], [0, 3]], seed=2)
    tracker = ClassMeanTracker(k, d, dtype=F64)
    x0 = batches[0][0].clone().requires_grad_()
    tracker(x0, batches[0][1])
    assert not tracker.average.requires_grad
    x1 = batches[1][0].clone().requires_grad_()
    out = tracker(x1, batches[1][1])
    out.normalized.pow(3).sum().backward()
    assert x0.grad is None  # the graph never spans two steps
    assert x1.grad is not None and x1.grad.abs().sum() > 0

    # gradcheck of features -> (Y, mu_G) from a fixed state, present, seen-missing and unseen rows.
    state = copy.deepcopy(tracker)
    x2, y2 = batches[2]

    def step(feats):
        out = copy.deepcopy(state)(feats, y2)
        return out.normalized, out.global_mean

    assert torch.autograd.gradcheck(step, (x2.clone().requires_grad_(),))


# --- state ------------------------------------------------------------------------------------------


def test_state_dict_round_trip():
    k, d = 5, 4
    batches = _batches(k, d, [[0, 1], [2, 3], [0, 4], [1, 2, 3]], seed=3)
    a = ClassMeanTracker(k, d, dtype=F64)
    for x, y in batches[:3]:
        a(x, y)
    state = a.state_dict()
    assert set(state) == {"average", "step", "seen", "global_mean"}
    b = ClassMeanTracker(k, d, dtype=F64)
    b.load_state_dict(state)
    out_a, out_b = a(*batches[3]), b(*batches[3])
    assert torch.equal(out_a.normalized, out_b.normalized)
    assert torch.equal(a.average, b.average) and int(b.step) == 4
    b.reset()
    assert int(b.step) == 0 and not b.seen.any() and not b.average.any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"dim": -1}, "dim"),
        ({"momentum": 0.0}, "momentum"),
        ({"momentum": 1.5}, "momentum"),
        ({"min_momentum": -0.1}, "min_momentum"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassMeanTracker(**{"num_classes": 3, "dim": 2, **kwargs})


@pytest.mark.parametrize(
    ("features", "labels", "error", "match"),
    [
        (torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), ValueError, r"features must be \[B, 2\]"),
        (torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), ValueError, "labels must be"),
        (torch.zeros(4, 2), torch.zeros(4), TypeError, "integer"),
        (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), ValueError, "empty batch"),
    ],
)
def test_bad_batches(features, labels, error, match):
    with pytest.raises(error, match=match):
        ClassMeanTracker(3, 2)(features, labels)


# --- two processes (gloo) ---------------------------------------------------------------------------


def _ddp_worker(rank, world, out_dir, batches, splits, weight, k, d):
    torch.set_num_threads(1)
    # a file rendezvous in the test's folder: no TCP port that a parallel test could take first
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world)
    try:
        tracker = ClassMeanTracker(k, d, dtype=F64)
        records = []
        for (x, y), split in zip(batches, splits):
            lo, hi = (0, split) if rank == 0 else (split, x.shape[0])
            xs = x[lo:hi].clone().requires_grad_()
            out = tracker(xs, y[lo:hi])
            ((out.normalized * weight).sum() + out.global_mean.sum()).backward()
            records.append((tracker.average.clone(), xs.grad.clone()))
        torch.save(records, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.slow
def test_two_process_gloo_matches_single_process(tmp_path):
    k, d, world = 5, 4, 2
    batches = _batches(k, d, [[0, 1, 2], [3, 4], [0, 2, 4], [1, 3]], batch_size=10, seed=4)
    # Unequal halves, and classes present on one rank only: mu_G must be sample-weighted globally.
    splits = [3, 7, 5, 2]
    weight = torch.randn(k, d, dtype=F64, generator=torch.Generator().manual_seed(5))
    mp.spawn(
        _ddp_worker,
        args=(world, str(tmp_path), batches, splits, weight, k, d),
        nprocs=world,
        join=True,
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]

    single = ClassMeanTracker(k, d, dtype=F64)
    for step, (x, y) in enumerate(batches):
        xs = x.clone().requires_grad_()
        out = single(xs, y)
        ((out.normalized * weight).sum() + out.global_mean.sum()).backward()
        f0, g0 = ranks[0][step]
        f1, g1 = ranks[1][step]
        assert torch.equal(f0, f1)  # bit-identical across ranks
        assert torch.allclose(f0, single.average, atol=1e-12, rtol=0)
        # Every rank's loss depends on the global sums: the summed backward gives world x the gradient
        # of one loss; DDP's average over ranks then equals the single-process gradient.
        assert torch.allclose(torch.cat([g0, g1]) / world, xs.grad, atol=1e-12, rtol=0)
