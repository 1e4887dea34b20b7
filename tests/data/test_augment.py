"""Mixup (lt_lightning.data.augment): the pure function, the per-batch generator and the injected part."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import stats

from lt_lightning.data.augment import Mixup, mixup_batch, mixup_generator

#: the significance of the distribution checks: a correct sampler fails with this probability (fixed seeds:
#: never), and each check also shows that a wrong alpha is rejected at the same level
KS_ALPHA = 1e-4


# ---- mixup_batch ------------------------------------------------------------------------------------


def test_mixup_batch_formula_and_determinism() -> None:
    x = torch.randn(16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(16) % 5
    xm, ya, yb, lam = mixup_batch(x, y, 0.4, generator=torch.Generator().manual_seed(11))
    xm2, _, yb2, lam2 = mixup_batch(x, y, 0.4, generator=torch.Generator().manual_seed(11))
    assert isinstance(lam, float) and 0.0 <= lam <= 1.0
    assert lam == lam2 and torch.equal(xm, xm2) and torch.equal(yb, yb2)
    assert torch.equal(ya, y)
    # recover the permutation from y_b: x_mixed[i] = lam x[i] + (1 - lam) x[j] with y[j] = y_b[i]
    matches = [
        any(
            torch.allclose(xm[i], lam * x[i] + (1 - lam) * x[j], atol=1e-6) and y[j] == yb[i]
            for j in range(16)
        )
        for i in range(16)
    ]
    assert all(matches)
    assert sorted(yb.tolist()) == sorted(y.tolist())


def test_mixup_batch_alpha_zero_is_identity() -> None:
    x, y = torch.randn(5, 2), torch.arange(5)
    xm, ya, yb, lam = mixup_batch(x, y, 0.0, generator=torch.Generator().manual_seed(0))
    assert lam == 1.0 and torch.equal(xm, x) and torch.equal(ya, y)


@pytest.mark.parametrize("alpha", [-0.5, float("nan"), "1", True])
def test_mixup_batch_bad_alpha(alpha) -> None:
    with pytest.raises(ValueError, match="alpha"):
        mixup_batch(torch.randn(3, 2), torch.arange(3), alpha)


def test_mixup_batch_size_mismatch() -> None:
    with pytest.raises(ValueError, match="batch size"):
        mixup_batch(torch.randn(3, 2), torch.arange(4), 1.0)


# ---- mixup_generator and Mixup ------------------------------------------------------------------------

X = torch.randn(12, 3, generator=torch.Generator().manual_seed(1))
Y = torch.arange(12) % 4
KEY = {"seed": 3, "epoch": 2, "rank": 1, "batch_idx": 5}


def test_the_same_four_integers_give_the_same_mix() -> None:
    mixup = Mixup(1.0)
    a, b = mixup(X, Y, **KEY), Mixup(1.0)(X.clone(), Y.clone(), **KEY)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]) and a[3] == b[3]
    # and it is mixup_batch driven by mixup_generator: lam from rank 0's stream, the permutation the rank's
    ref = mixup_batch(
        X, Y, 1.0, generator=mixup_generator(**KEY), lam_generator=mixup_generator(**{**KEY, "rank": 0})
    )
    assert torch.equal(a[0], ref[0]) and torch.equal(a[2], ref[2]) and a[3] == ref[3]
    # on rank 0 (every single-process run) it is mixup_batch over the one generator, as it always was
    rank0 = {**KEY, "rank": 0}
    ref0 = mixup_batch(X, Y, 1.0, generator=mixup_generator(**rank0))
    got0 = Mixup(1.0)(X, Y, **rank0)
    assert torch.equal(got0[0], ref0[0]) and torch.equal(got0[2], ref0[2]) and got0[3] == ref0[3]


@pytest.mark.parametrize("changed", list(KEY))
def test_changing_any_one_integer_changes_the_mix(changed: str) -> None:
    base = Mixup(1.0)(X, Y, **KEY)
    for delta in (1, 7):
        other = Mixup(1.0)(X, Y, **{**KEY, changed: KEY[changed] + delta})
        assert not torch.equal(other[0], base[0]) and not torch.equal(other[2], base[2])
        # lam is one per global batch: another rank shares it, another batch, epoch or seed does not
        assert (other[3] == base[3]) == (changed == "rank")


def _mix_on_rank(rank: int, batch_idx: int, alpha: float = 1.0):
    g = torch.Generator().manual_seed(100 + rank)  # every rank holds different images
    x, y = torch.randn(6, 3, generator=g), torch.randint(0, 4, (6,), generator=g)
    return x, y, Mixup(alpha)(x, y, seed=0, epoch=2, rank=rank, batch_idx=batch_idx)


def test_one_lam_per_global_batch_on_every_rank() -> None:
    # Yang's DataParallel: one mixup_data call (one lam) per global batch; under DDP every rank draws
    # that same lam from its own generator (no broadcast); each rank permutes its own batch
    for batch_idx in range(20):
        lams = {r: _mix_on_rank(r, batch_idx)[2][3] for r in range(4)}
        assert len(set(lams.values())) == 1, lams
        # the reference: Beta(1, 1) seeded by the first draw of rank 0's generator, as documented
        seed = int(torch.randint(0, 2**62, (1,), generator=mixup_generator(0, 2, 0, batch_idx)))
        assert lams[0] == float(np.random.default_rng(seed).beta(1.0, 1.0))
        perms = set()
        for r in range(4):
            x, y, (xm, ya, yb, lam) = _mix_on_rank(r, batch_idx)
            gen = mixup_generator(0, 2, r, batch_idx)
            if r == 0:
                torch.randint(0, 2**62, (1,), generator=gen)  # rank 0's own stream drew lam first
            perm = torch.randperm(6, generator=gen)
            torch.testing.assert_close(xm, lam * x + (1 - lam) * x[perm])
            assert torch.equal(yb, y[perm]) and torch.equal(ya, y)
            perms.add(tuple(perm.tolist()))
        assert len(perms) > 1  # the permutations are the ranks' own
    assert len({_mix_on_rank(0, b)[2][3] for b in range(10)}) == 10  # batches differ


def test_swapped_integers_do_not_collide() -> None:
    draw = lambda *key: torch.rand(4, generator=mixup_generator(*key))  # noqa: E731
    assert not torch.equal(draw(0, 1, 0, 0), draw(1, 0, 0, 0))
    assert not torch.equal(draw(0, 0, 1, 0), draw(0, 0, 0, 1))


def test_alpha_zero_is_the_identity() -> None:
    x_mixed, y_a, y_b, lam = Mixup()(X, Y, **KEY)
    assert lam == 1.0 and x_mixed is X and y_a is Y and y_b is Y
    with pytest.raises(ValueError, match="batch size"):
        Mixup()(X, Y[:3], **KEY)


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_lam_is_beta_alpha_alpha_over_batches(alpha: float) -> None:
    lams = np.array(
        [Mixup(alpha)(X[:2], Y[:2], seed=0, epoch=0, rank=0, batch_idx=i)[3] for i in range(3000)]
    )
    assert stats.kstest(lams, stats.beta(alpha, alpha).cdf).pvalue > KS_ALPHA
    for wrong in (alpha / 2, alpha * 2):  # the check has power against a wrong alpha
        assert stats.kstest(lams, stats.beta(wrong, wrong).cdf).pvalue < KS_ALPHA
    assert np.mean(lams) == pytest.approx(0.5, abs=0.03)  # symmetric


def test_mixup_is_a_frozen_validated_part() -> None:
    assert Mixup().alpha == 0.0 and Mixup(0.4) == Mixup(0.4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Mixup(1.0).alpha = 2.0  # type: ignore[misc]
    for bad in (-0.1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
            Mixup(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [{"seed": -1}, {"epoch": 1.5}, {"rank": True}, {"batch_idx": None}])
def test_mixup_generator_needs_non_negative_integers(bad: dict) -> None:
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"{name} must be a non-negative integer"):
        mixup_generator(**{**KEY, **bad})
