"""The nearest simplex ETF layer against references written from the definition.

References: a brute-force grid over O(2); random feasible perturbations (Q expm(A), expm(B) Q, polar
retractions, random Stiefel points); the Riemannian first-order condition; autograd through
``torch.linalg.svd``; pymanopt solves with central finite differences; ``torch.autograd.gradcheck``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lt_lightning.nn.nearest_etf import (
    SOLVERS,
    canonical_stiefel_point,
    nearest_etf_objective,
    nearest_etf_target,
    nearest_simplex_etf,
    solve_nearest_etf,
)

F64 = torch.float64
SHAPES = [(3, 3), (4, 7), (5, 20)]
# pymanopt run to convergence, for comparisons at the 1e-8 level.
TIGHT = {"solver": "pymanopt", "max_iterations": 200, "min_gradient_norm": 1e-13}


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny matrices: threads only add latency (and stalls on a shared CPU).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _means(k: int, d: int, seed: int = 0) -> torch.Tensor:
    y = torch.randn(k, d, dtype=F64, generator=_gen(seed))
    return y / y.norm()


def _stiefel(k: int, d: int, seed: int) -> torch.Tensor:
    """A random point with orthonormal rows [K, d] (QR of a Gaussian)."""
    q, _ = torch.linalg.qr(torch.randn(d, k, dtype=F64, generator=_gen(seed)))
    return q.T.contiguous()


def _centering(k: int) -> torch.Tensor:
    return torch.eye(k, dtype=F64) - torch.full((k, k), 1.0 / k, dtype=F64)


def _skew(n: int, seed: int, scale: float) -> torch.Tensor:
    a = torch.randn(n, n, dtype=F64, generator=_gen(seed)) * scale
    return a - a.T


def _orthonormality_error(q: torch.Tensor) -> float:
    return (q @ q.T - torch.eye(q.shape[0], dtype=q.dtype)).abs().max().item()


# --- the forward solution -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [*SHAPES, (10, 64)])
@pytest.mark.parametrize("with_prox", [False, True])
def test_rows_orthonormal_float64(shape, with_prox):
    k, d = shape
    prox = _stiefel(k, d, 1) if with_prox else None
    q = nearest_simplex_etf(_means(k, d), prox)
    assert q.shape == (k, d) and q.dtype == F64
    assert _orthonormality_error(q) < 1e-10


def test_brute_force_grid_over_o2():
    # K = d = 2: every feasible Q is a rotation or a reflection by an angle; scan them all.
    y = _means(2, 2, seed=3)
    prox = _stiefel(2, 2, 4)
    theta = torch.linspace(0, 2 * math.pi, 20001, dtype=F64)
    c, s = torch.cos(theta), torch.sin(theta)
    rotations = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    reflections = torch.stack([torch.stack([c, s], -1), torch.stack([s, -c], -1)], -2)
    candidates = torch.cat([rotations, reflections])
    # f from its definition, batched over the grid: ||Y - C Q / sqrt(K-1)||^2 + delta/2 ||Q - P||^2.
    c = _centering(2)
    grid = (y - c @ candidates).pow(2).sum((1, 2)) + 0.025 * (candidates - prox).pow(2).sum((1, 2))
    q = nearest_simplex_etf(y, prox, delta=0.05)
    best = nearest_etf_objective(q, y, prox, delta=0.05)
    assert best <= grid.min() + 1e-12
    assert best >= grid.min() - 1e-6  # the grid's resolution


@pytest.mark.parametrize("shape", [*SHAPES, (6, 12)])
@pytest.mark.parametrize("with_prox", [False, True])
def test_not_beaten_by_feasible_perturbations(shape, with_prox):
    k, d = shape
    y = _means(k, d, seed=5)
    prox = _stiefel(k, d, 6) if with_prox else None
    delta = 0.2
    q = nearest_simplex_etf(y, prox, delta=delta)
    best = nearest_etf_objective(q, y, prox, delta=delta)
    candidates = []
    for i, scale in enumerate([1e-4, 1e-2, 0.3, 3.0]):
        candidates.append(q @ torch.linalg.matrix_exp(_skew(d, 10 + i, scale)))  # right rotations
        candidates.append(torch.linalg.matrix_exp(_skew(k, 20 + i, scale)) @ q)  # left rotations
        xi = torch.randn(k, d, dtype=F64, generator=_gen(30 + i)) * scale
        u, _, vh = torch.linalg.svd(q + xi, full_matrices=False)  # polar retraction
        candidates.append(u @ vh)
    candidates += [_stiefel(k, d, 40 + i) for i in range(20)]
    for cand in candidates:
        assert _orthonormality_error(cand) < 1e-10
        assert nearest_etf_objective(cand, y, prox, delta=delta) >= best - 1e-12


@pytest.mark.parametrize("with_prox", [False, True])
def test_riemannian_gradient_vanishes(with_prox):
    # First-order condition on {Q Q^T = I}: egrad - sym(egrad Q^T) Q = 0.
    k, d = 5, 9
    y = _means(k, d, seed=7)
    prox = _stiefel(k, d, 8) if with_prox else None
    q = nearest_simplex_etf(y, prox, delta=0.1).requires_grad_()
    (egrad,) = torch.autograd.grad(nearest_etf_objective(q, y, prox, delta=0.1), q)
    sym = 0.5 * (egrad @ q.T + q @ egrad.T)
    rgrad = egrad - sym @ q.detach()
    assert rgrad.abs().max() < 1e-12


def test_polar_factor_of_target_and_classifier_geometry():
    k, d = 6, 10
    y = _means(k, d, seed=9)
    q = nearest_simplex_etf(y)
    g = nearest_etf_target(y)
    # Q G^T is symmetric positive semi-definite at the maximiser of <G, Q> (polar factor).
    h = q @ g.T
    assert torch.allclose(h, h.T, atol=1e-12)
    assert torch.linalg.eigvalsh(0.5 * (h + h.T)).min() > -1e-12
    # W = sqrt(K/(K-1)) C Q: unit rows, pairwise cosine -1/(K-1).
    w = math.sqrt(k / (k - 1)) * _centering(k) @ q
    gram = w @ w.T
    expected = torch.full((k, k), -1.0 / (k - 1), dtype=F64).fill_diagonal_(1.0)
    assert torch.allclose(gram, expected, atol=1e-12)


def test_float32_keeps_dtype():
    y = _means(8, 16).float()
    q = nearest_simplex_etf(y, solver="procrustes")
    assert q.dtype == torch.float32
    assert _orthonormality_error(q) < 1e-5
    q_p = nearest_simplex_etf(y, q, solver="pymanopt")
    assert q_p.dtype == torch.float32
    assert _orthonormality_error(q_p) < 1e-5


# --- the backward pass ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_gradcheck_procrustes_with_prox(shape):
    k, d = shape
    y = _means(k, d, seed=11).requires_grad_()
    prox = _stiefel(k, d, 12)
    if k * d <= 30:  # the prox gradient (delta * Gbar) too, where it is cheap
        prox.requires_grad_()
        assert torch.autograd.gradcheck(lambda a, b: nearest_simplex_etf(a, b, delta=0.3), (y, prox))
    else:
        assert torch.autograd.gradcheck(lambda a: nearest_simplex_etf(a, prox, delta=0.3), (y,))


@pytest.mark.parametrize("shape", SHAPES)
def test_gradcheck_procrustes_without_prox(shape):
    # Without a prox only C Q is unique (u_K = 1/sqrt(K) has s_K = 0): check through C Q.
    k, d = shape
    y = _means(k, d, seed=13).requires_grad_()
    c = _centering(k)
    assert torch.autograd.gradcheck(lambda a: c @ nearest_simplex_etf(a), (y,))


def test_gradcheck_at_an_exact_etf_all_singular_values_equal():
    # Class means already a simplex ETF: the K-1 nonzero singular values of G coincide (a
    # denominator s_i - s_j would blow up; s_i + s_j does not).
    k, d = 5, 8
    etf = _centering(k) @ _stiefel(k, d, 14) / math.sqrt(k - 1)
    s = torch.linalg.svdvals(nearest_etf_target(etf))
    assert (s[:-1] - s[0]).abs().max() < 1e-12 and s[-1] < 1e-12
    c = _centering(k)
    assert torch.autograd.gradcheck(lambda a: c @ nearest_simplex_etf(a), (etf.clone().requires_grad_(),))


def test_backward_matches_autograd_through_svd():
    # An independent derivative: autograd through torch.linalg.svd (valid for distinct singular values).
    k, d = 6, 10
    y = _means(k, d, seed=15).requires_grad_()
    prox = _stiefel(k, d, 16)
    weight = torch.randn(k, d, dtype=F64, generator=_gen(17))
    (ours,) = torch.autograd.grad((nearest_simplex_etf(y, prox, delta=0.2) * weight).sum(), y)
    u, _, vh = torch.linalg.svd(nearest_etf_target(y, prox, delta=0.2), full_matrices=False)
    (ref,) = torch.autograd.grad(((u @ vh) * weight).sum(), y)
    assert torch.allclose(ours, ref, atol=1e-10, rtol=1e-8)


def test_backward_reaches_prox_only_when_asked():
    y = _means(4, 6, seed=18).requires_grad_()
    prox = _stiefel(4, 6, 19)
    nearest_simplex_etf(y, prox).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and prox.grad is None


def test_gradcheck_pymanopt():
    k, d = 3, 3
    y = _means(k, d, seed=20).requires_grad_()
    prox = _stiefel(k, d, 21)
    c = _centering(k)
    assert torch.autograd.gradcheck(
        lambda a: nearest_simplex_etf(a, prox, delta=0.3, **TIGHT), (y,), atol=1e-6
    )
    assert torch.autograd.gradcheck(lambda a: c @ nearest_simplex_etf(a, **TIGHT), (y,), atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_prox", [False, True])
def test_solvers_agree(shape, with_prox):
    k, d = shape
    y = _means(k, d, seed=22).requires_grad_()
    prox = None
    if with_prox:  # a previous solution: the ETF of nearby means (same component of O(K) when d = K)
        prox = nearest_simplex_etf(
            y.detach() + 0.05 * torch.randn(k, d, dtype=F64, generator=_gen(23)), _stiefel(k, d, 0)
        )
    c = _centering(k)
    weight = torch.randn(k, d, dtype=F64, generator=_gen(24))
    outs, grads = [], []
    for kwargs in ({"solver": "procrustes"}, TIGHT):
        q = nearest_simplex_etf(y, prox, delta=0.2, **kwargs)
        q = q if with_prox else c @ q  # only C Q is unique without a prox
        outs.append(q)
        grads.append(torch.autograd.grad((q * weight).sum(), y)[0])
    assert torch.allclose(outs[0], outs[1], atol=1e-9)
    assert torch.allclose(grads[0], grads[1], atol=1e-8)


def test_slow_reference_pymanopt_finite_differences():
    # The derivative from the definition: central differences of pymanopt's solution.
    k, d = 3, 5
    y = _means(k, d, seed=25)
    prox = _stiefel(k, d, 26)
    h = 1e-5
    fd = torch.zeros(k, d, k, d, dtype=F64)
    for i in range(k):
        for j in range(d):
            e = torch.zeros_like(y)
            e[i, j] = h
            q_plus = nearest_simplex_etf(y + e, prox, delta=0.3, **TIGHT)
            q_minus = nearest_simplex_etf(y - e, prox, delta=0.3, **TIGHT)
            fd[:, :, i, j] = (q_plus - q_minus) / (2 * h)
    for kwargs in ({"solver": "procrustes"}, TIGHT):
        jac = torch.autograd.functional.jacobian(
            lambda a, kw=kwargs: nearest_simplex_etf(a, prox, delta=0.3, **kw), y
        )
        assert torch.allclose(jac, fd, atol=1e-7)


# --- pymanopt specifics ---------------------------------------------------------------------------


def test_pymanopt_stays_in_the_component_of_its_start_when_d_equals_k():
    # d = K: the manifold is O(K), two components (det +1, -1); the global solution U V^T has
    # det = sign(det G). From a start in the other component the Riemannian solver can only reach a
    # worse critical point, which the closed form never does.
    k = 3
    y = _means(k, k, seed=40)
    prox = _stiefel(k, k, 41)
    exact = nearest_simplex_etf(y, prox, delta=0.2)
    flip = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=F64))
    wrong_start = flip @ exact
    assert torch.linalg.det(wrong_start) * torch.linalg.det(exact) < 0
    q = nearest_simplex_etf(y, prox, delta=0.2, init=wrong_start, **TIGHT)
    assert torch.linalg.det(q) * torch.linalg.det(exact) < 0
    assert (
        nearest_etf_objective(q, y, prox, delta=0.2) > nearest_etf_objective(exact, y, prox, delta=0.2) + 1e-3
    )


def test_pymanopt_reports_and_warm_start():
    k, d = 4, 7
    y = _means(k, d, seed=27)
    cold = solve_nearest_etf(y, solver="pymanopt", max_iterations=30)
    assert 1 <= cold.iterations <= 30 and cold.time_s >= 0 and cold.gradient_norm is not None
    assert isinstance(cold.stopping_criterion, str)
    exact = nearest_simplex_etf(y, cold.q)
    warm = solve_nearest_etf(y, cold.q, solver="pymanopt", init=exact, min_gradient_norm=1e-10)
    assert warm.iterations <= 1
    assert torch.allclose(warm.q, exact, atol=1e-10)
    info: dict = {}
    nearest_simplex_etf(y, solver="pymanopt", max_iterations=3, info=info)
    assert info["solver"] == "pymanopt" and info["iterations"] <= 3
    assert set(info) == {"solver", "iterations", "time_s", "stopping_criterion", "gradient_norm"}


def test_pymanopt_leaves_global_rng_alone_and_runs_under_no_grad():
    y = _means(4, 6, seed=28)
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    with torch.no_grad():
        q = nearest_simplex_etf(y, solver="pymanopt")
    with torch.inference_mode():
        q2 = nearest_simplex_etf(y, solver="pymanopt")
    assert np.array_equal(np.random.get_state()[1], state)
    assert torch.equal(q, q2)
    assert _orthonormality_error(q) < 1e-10


def test_pymanopt_projects_an_infeasible_init():
    y = _means(4, 6, seed=29)
    init = torch.randn(4, 6, dtype=F64, generator=_gen(30))
    q = nearest_simplex_etf(y, _stiefel(4, 6, 31), solver="pymanopt", init=init, **{"max_iterations": 100})
    assert _orthonormality_error(q) < 1e-10
    assert torch.allclose(q, nearest_simplex_etf(y, _stiefel(4, 6, 31)), atol=1e-6)


# --- degenerate and bad input ---------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_all_means_equal_without_prox_raises(solver):
    y = torch.ones(4, 6, dtype=F64) * 0.3
    with pytest.raises(ValueError, match="all class means are equal"):
        nearest_simplex_etf(y, solver=solver)
    with pytest.raises(ValueError, match="all class means are equal"):
        nearest_simplex_etf(torch.zeros(4, 6, dtype=F64), solver=solver)


@pytest.mark.parametrize("solver", SOLVERS)
def test_all_means_equal_with_prox_returns_the_prox(solver):
    prox = _stiefel(4, 6, 32)
    y = torch.ones(4, 6, dtype=F64).requires_grad_()
    q = nearest_simplex_etf(y, prox, solver=solver)
    assert torch.allclose(q, prox, atol=1e-9)
    q.sum().backward()
    assert torch.isfinite(y.grad).all()


def test_zero_class_row_is_an_ordinary_input():
    y = _means(5, 8, seed=33)
    y[2] = 0.0
    y.requires_grad_()
    q = nearest_simplex_etf(y)
    assert torch.isfinite(q).all() and _orthonormality_error(q) < 1e-10
    c = _centering(5)
    assert torch.autograd.gradcheck(lambda a: c @ nearest_simplex_etf(a), (y,))


def test_two_equal_class_means_give_finite_output_and_gradient():
    # rank(C Y) = K - 2 without a prox: two zero singular values; denominators are clamped.
    y = _means(5, 8, seed=34)
    y[1] = y[0]
    y.requires_grad_()
    q = nearest_simplex_etf(y)
    assert torch.isfinite(q).all() and _orthonormality_error(q) < 1e-10
    (q * torch.randn(5, 8, dtype=F64, generator=_gen(35))).sum().backward()
    assert torch.isfinite(y.grad).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("solver", SOLVERS)
def test_non_finite_means_raise(bad, solver):
    y = _means(4, 6)
    y[1, 2] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        nearest_simplex_etf(y, solver=solver)


def test_non_finite_prox_raises():
    prox = _stiefel(4, 6, 36)
    prox[0, 0] = float("nan")
    with pytest.raises(ValueError, match="prox contains NaN"):
        nearest_simplex_etf(_means(4, 6), prox)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"means": torch.zeros(1, 4, dtype=F64)}, "K >= 2"),
        ({"means": torch.zeros(5, 4, dtype=F64)}, "widen the feature"),
        ({"means": torch.zeros(5, dtype=F64)}, r"\[K, d\]"),
        ({"solver": "newton"}, "procrustes, pymanopt"),
        ({"prox": "previous"}, "prox must be a torch.Tensor"),
        ({"prox": torch.zeros(4, 5, dtype=F64)}, "prox must have the shape"),
        ({"prox": canonical_stiefel_point(4, 6, dtype=F64), "delta": 0.0}, "delta must be a positive"),
        ({"prox": canonical_stiefel_point(4, 6, dtype=F64), "delta": -1e-3}, "delta must be a positive"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"init": torch.zeros(3, 6, dtype=F64)}, "init must have the shape"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    kwargs = {"means": _means(4, 6), **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        nearest_simplex_etf(**kwargs)


def test_integer_means_raise_type_error():
    with pytest.raises(TypeError, match="floating-point"):
        nearest_simplex_etf(torch.ones(3, 4, dtype=torch.long))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("solver", SOLVERS)
def test_cuda_matches_cpu(solver):
    y = _means(6, 10, seed=37)
    prox = _stiefel(6, 10, 38)
    cpu = nearest_simplex_etf(y, prox, solver=solver)
    y_gpu = y.cuda().requires_grad_()
    gpu = nearest_simplex_etf(y_gpu, prox.cuda(), solver=solver)
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-8)
    gpu.sum().backward()
    assert y_gpu.grad.device.type == "cuda" and torch.isfinite(y_gpu.grad).all()


def test_the_solve_under_autocast_is_float32_and_differentiable() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(5, 12, generator=g, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = nearest_simplex_etf(means.bfloat16())
        loss = (q @ torch.randn(12, 3, generator=g)).square().sum()
    assert q.dtype == torch.float32
    torch.testing.assert_close(q @ q.T, torch.eye(5), atol=1e-5, rtol=0)
    loss.backward()  # the bf16 crash was here (float32 U, bfloat16 V in the adjoint)
    assert means.grad is not None and torch.isfinite(means.grad).all()
    # same Q as a float32 solve of the same (bfloat16-rounded) means
    torch.testing.assert_close(q, nearest_simplex_etf(means.detach().bfloat16().float()), atol=1e-6, rtol=0)
    half = torch.randn(4, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.float16):  # what 16-mixed needs, checked on the CPU
        q16 = nearest_simplex_etf(half.half())
    assert q16.dtype == torch.float32
    q16.sum().backward()
    assert torch.isfinite(half.grad).all()
