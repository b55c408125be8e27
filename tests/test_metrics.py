"""minigen.metrics: closed forms for the Frechet distance, likelihood bounds, precision/recall and the
classifier score, plus the shipped classifier's checksum and accuracy."""
import math
import shutil

import pytest
import torch

from minigen import metrics
from minigen.data import DataFileError, load_mnist


def _gaussian(n, d, mean=0.0, std=1.0, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * std + mean


# ---------------------------------------------------------------- Frechet distance

def test_fd_of_a_set_with_itself_is_zero():
    x = _gaussian(500, 16)
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fd_grows_with_a_mean_shift_as_its_square():
    x = _gaussian(400, 8)
    shifts = [0.0, 0.5, 1.0, 2.0, 4.0]
    values = [metrics.frechet_distance(x, x + s) for s in shifts]  # same covariance: FD = ||dmu||^2 = 8 s^2
    assert all(a < b for a, b in zip(values, values[1:]))
    assert values == pytest.approx([8 * s**2 for s in shifts], abs=1e-8)


def test_gaussian_fd_closed_forms():
    one = torch.ones(1)
    # 1-D: (m_a - m_b)^2 + (s_a - s_b)^2
    assert metrics.gaussian_frechet_distance(1 * one, 4 * one[None], -2 * one, 9 * one[None]) == pytest.approx(9 + 1)
    # diagonal: sum over dims of (dm)^2 + (s_a - s_b)^2
    var_a, var_b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    mu_a, mu_b = torch.zeros(3), torch.tensor([1.0, 0.0, 2.0])
    expected = 5.0 + ((var_a.sqrt() - var_b.sqrt()) ** 2).sum().item()
    value = metrics.gaussian_frechet_distance(mu_a, torch.diag(var_a), mu_b, torch.diag(var_b))
    assert value == pytest.approx(expected)
    # equal covariances: ||dmu||^2
    cov = torch.cov(_gaussian(50, 6).T)
    assert metrics.gaussian_frechet_distance(torch.zeros(6), cov, torch.full((6,), 0.5), cov) == pytest.approx(1.5)


def test_gaussian_fd_is_symmetric_and_matches_a_non_symmetric_reference():
    a, b = _gaussian(40, 5, seed=1), _gaussian(40, 5, mean=0.3, std=2.0, seed=2)
    mu_a, cov_a, mu_b, cov_b = a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T)
    ab = metrics.gaussian_frechet_distance(mu_a, cov_a, mu_b, cov_b)
    assert ab == pytest.approx(metrics.gaussian_frechet_distance(mu_b, cov_b, mu_a, cov_a), rel=1e-9)
    # tr sqrt(Sa Sb) from the eigenvalues of the (non-symmetric) product, as scipy-based FID code does
    tr_cross = torch.linalg.eigvals(cov_a @ cov_b).real.clamp(min=0).sqrt().sum()
    reference = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * tr_cross
    assert ab == pytest.approx(reference.item(), rel=1e-8)


def test_fd_rejects_bad_inputs():
    with pytest.raises(ValueError, match="N >= 2"):
        metrics.frechet_distance(torch.zeros(1, 4), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="dims differ"):
        metrics.frechet_distance(torch.randn(5, 4), torch.randn(5, 3))


# ---------------------------------------------------------------- precision / recall, classifier score

def test_precision_recall_identical_and_disjoint_sets():
    x = _gaussian(300, 4).float()
    assert metrics.precision_recall(x, x) == (1.0, 1.0)
    precision, recall = metrics.precision_recall(x, x + 100.0)
    assert precision == 0.0 and recall == 0.0
    collapsed = x[x[:, 0] > 1.0]  # a mode-collapsed model: faithful samples from one tail, poor coverage
    precision, recall = metrics.precision_recall(x, collapsed)
    assert precision == 1.0 and recall < 0.5


def test_classifier_score_from_probs():
    constant = torch.zeros(100, 10)
    constant[:, 3] = 1.0
    assert metrics.classifier_score_from_probs(constant) == pytest.approx(1.0)
    confident = torch.eye(10).repeat(20, 1) * 0.999 + 0.0001  # each class once per block, 99.9 % sure
    assert metrics.classifier_score_from_probs(confident) == pytest.approx(10.0, rel=0.02)
    uncertain = torch.full((100, 10), 0.1)
    assert metrics.classifier_score_from_probs(uncertain) == pytest.approx(1.0)


# ---------------------------------------------------------------- likelihoods

def test_bits_per_dim_of_a_standard_gaussian_on_gaussian_data():
    d, z = 64, _gaussian(20_000, 64, seed=3)
    nll = 0.5 * (z.square().sum(dim=1) + d * math.log(2 * math.pi))  # (N,) nats of N(0, I)
    entropy_bits = 0.5 * math.log2(2 * math.pi * math.e)            # differential entropy per dim
    assert metrics.bits_per_dim(nll.mean().item(), d) == pytest.approx(entropy_bits, rel=2e-3)
    # rescaling the data by s and the density with it (y = s z, p_y = N(0, s^2 I)) leaves bits/dim unchanged
    s = 1 / 256
    nll_y = nll + d * math.log(s)
    assert metrics.bits_per_dim(nll_y.mean().item(), d, pixel_scale=s) == pytest.approx(entropy_bits, rel=2e-3)


def test_bits_per_dim_worked_example_and_tensors():
    assert metrics.bits_per_dim(0.0, 784, pixel_scale=1 / 256) == pytest.approx(8.0)  # uniform on [0, 1)^D
    assert metrics.bits_per_dim(784 * math.log(2), 784, pixel_scale=1 / 128) == pytest.approx(8.0)  # on [-1, 1)^D
    out = metrics.bits_per_dim(torch.full((3,), 784 * math.log(2)), 784)
    assert torch.allclose(out, torch.ones(3, dtype=out.dtype))


def test_iwae_bound_jensen_and_k1():
    log_w = _gaussian(100, 7, std=3.0)
    assert (metrics.iwae_bound(log_w) >= log_w.mean(dim=0) - 1e-12).all()
    assert torch.equal(metrics.iwae_bound(log_w[:1]), log_w[0])
    assert metrics.iwae_bound(torch.full((50, 2), -3.0)).tolist() == pytest.approx([-3.0, -3.0])  # equal weights: exact


# ---------------------------------------------------------------- the shipped classifier

def test_load_classifier_names_a_corrupt_file(tmp_path):
    copy = tmp_path / "mnist_classifier.pt"
    shutil.copy(metrics.data_dir() / metrics.CLASSIFIER_FILE, copy)
    with open(copy, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00corrupt")
    with pytest.raises(DataFileError, match=r"(?s)mnist_classifier\.pt.*corrupt.*train_classifier\.py"):
        metrics.load_classifier(path=copy)
    with pytest.raises(DataFileError, match=r"(?s)missing.*train_classifier\.py"):
        metrics.load_classifier(path=tmp_path / "absent.pt")


def test_classifier_checks_its_input():
    model = metrics.load_classifier()
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        model(torch.zeros(2, 28, 28))
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


def test_classifier_accuracy_and_real_digit_metrics():
    test = load_mnist("test", 1000)
    probs = metrics.classifier_probs(test.images)
    accuracy = (probs.argmax(dim=1) == test.labels).float().mean().item()
    print(f"accuracy on the first 1000 test digits: {accuracy:.2%}")
    assert accuracy >= 0.985
    assert metrics.classifier_score_from_probs(probs) > 9.0
    assert metrics.classifier_features(test.images[:10]).shape == (10, 128)


def test_fd_floor_is_far_below_the_noise_ceiling():
    floor, ceiling = metrics.fd_floor(500), metrics.fd_noise(500)
    print(f"FD floor {floor:.3f}, noise ceiling {ceiling:.1f} (n = 500)")
    assert 0 < floor < 0.01 * ceiling


def test_evaluate_samples_ranks_real_above_noise():
    real = load_mnist("train", 300).images
    table = metrics.evaluate_samples(real)
    assert table["n"] == 300 and table["samples"]["FD"] < 3 * table["real (floor)"]["FD"] + 1
    noise = metrics.evaluate_samples(torch.rand(300, 1, 28, 28) * 2 - 1)
    assert noise["samples"]["FD"] > 100 * table["samples"]["FD"] and noise["samples"]["precision"] < 0.05
    assert "classifier score" in metrics.format_table(table)


def test_precision_recall_drop_for_a_shifted_set():
    x = _gaussian(500, 4).float()
    fresh = _gaussian(500, 4, seed=1).float()            # a second draw of the same distribution
    same = metrics.precision_recall(x, fresh)
    shifted = metrics.precision_recall(x, fresh + 1.5)   # 1.5 standard deviations along every axis
    print(f"(precision, recall): same distribution {same}, shifted {shifted}")
    assert min(same) > 0.85 and max(shifted) < min(same) - 0.2
