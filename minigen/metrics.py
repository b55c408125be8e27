"""How we know a generative model works: numbers a student can compare against a floor and a ceiling.

- Frechet distance (FD) between Gaussians fitted to the penultimate features of a small MNIST classifier,
  the MNIST-scale analogue of FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule
  Converge to a Local Nash Equilibrium", arXiv 1706.08500). It is printed beside real-vs-real at the same
  sample count (the floor: FD is biased upward at small n) and real-vs-noise (the ceiling).
- The classifier score, the Inception-score analogue (Salimans et al. 2016, arXiv 1606.03498), max 10.
- k-NN precision and recall (Kynkaanniemi et al. 2019, arXiv 1904.06991): fidelity and coverage apart.
- Bits per dimension for flows (Theis et al. 2016, arXiv 1511.01844) and the importance-weighted bound
  for VAEs (Burda et al. 2016, arXiv 1509.00519).

The classifier's weights live in data/mnist_classifier.pt, made by data/train_classifier.py and checked
against CLASSIFIER_SHA256 on load. Real digits are the test split; the floor compares test with val.
This module imports no model file (DESIGN section 1): torch and numpy only.
"""
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minigen import threads
from minigen.data.mnist import data_dir, load_mnist, verify_file

CLASSIFIER_FILE = "mnist_classifier.pt"
CLASSIFIER_SHA256 = "acd40cd9c3a2c08abe5f302b6001b6c9162a01766edf5deaf3f0e1fc56158665"
REBUILD = "rebuild it with:  python data/train_classifier.py   (or: git checkout -- data/mnist_classifier.pt)"

__all__ = ["MnistClassifier", "load_classifier", "classifier_features", "classifier_probs",
           "gaussian_frechet_distance", "frechet_distance", "fd", "fd_floor", "fd_noise",
           "classifier_score", "classifier_score_from_probs", "precision_recall", "bits_per_dim",
           "iwae_bound", "clip_score", "evaluate_samples", "format_table"]


# ----------------------------------------------------------------------------------------------------
# The feature extractor: a small CNN trained once on MNIST (>= 99 % test accuracy).
# ----------------------------------------------------------------------------------------------------

class MnistClassifier(nn.Module):
    """Two conv blocks (32 and 64 channels, BN, ReLU, 2x2 max-pool), a 128-d layer, dropout, 10 logits.

    Unpadded 3x3 convs keep the weights under 1 MB: 28 -> 26 -> 13 -> 11 -> 5, so the 128-d layer reads
    64 * 5 * 5 = 1600 numbers. `features` is that 128-d layer after its ReLU, the analogue of Inception's
    pool3 features in FID.
    """

    def __init__(self, width: int = 32, feature_dim: int = 128, dropout: float = 0.3):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),              # (B, 32, 13, 13)
            nn.Conv2d(width, 2 * width, 3), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 5, 5)
            nn.Flatten(),                                                                           # (B, 1600)
            nn.Linear(2 * width * 5 * 5, feature_dim), nn.ReLU(),                                   # (B, 128)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) images in [-1, 1] -> (B, 128) penultimate features."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"MnistClassifier expects images of shape (N, 1, 28, 28), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"MnistClassifier expects float images in [-1, 1], got dtype {x.dtype}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) images in [-1, 1] -> (B, 10) logits."""
        return self.head(self.dropout(self.features(x)))


def _read_checkpoint(path: Path) -> dict:
    verify_file(path, CLASSIFIER_SHA256, "classifier weights", REBUILD)
    return torch.load(path, map_location="cpu", weights_only=True)


@lru_cache(maxsize=4)
def _load_cached(device: str, path: str) -> MnistClassifier:
    model = MnistClassifier()
    model.load_state_dict(_read_checkpoint(Path(path)))
    return model.to(device).eval().requires_grad_(False)


def load_classifier(device="cpu", path=None) -> MnistClassifier:
    """The course's MNIST classifier in eval mode, frozen, checked against CLASSIFIER_SHA256; cached per device.

    `path` defaults to data/mnist_classifier.pt; a missing or corrupt file raises DataFileError naming it.
    """
    path = Path(path) if path is not None else data_dir() / CLASSIFIER_FILE
    return _load_cached(str(torch.device(device)), str(path.resolve()))


@torch.no_grad()
def _classify(images: torch.Tensor, batch_size: int, logits: bool) -> torch.Tensor:
    model = load_classifier(images.device)
    images = images.float().clamp(-1.0, 1.0)  # as an image would be when saved
    out = []
    for b in images.split(batch_size):
        if b.device.type == "cpu":
            threads.adapt()  # a clock read; every few seconds a look at the machine (minigen/threads.py)
        out.append(model(b) if logits else model.features(b))
    return torch.cat(out).float().cpu()


def classifier_features(images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """(N, 1, 28, 28) images in [-1, 1] (clamped to it) -> (N, 128) float32 CPU features, eval mode, no grad."""
    return _classify(images, batch_size, logits=False)


def classifier_probs(images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """(N, 1, 28, 28) images in [-1, 1] (clamped to it) -> (N, 10) class probabilities p(y|x)."""
    return _classify(images, batch_size, logits=True).softmax(dim=-1)


# ----------------------------------------------------------------------------------------------------
# Frechet distance (Heusel et al. 2017; the closed form is Dowson & Landau 1982).
# ----------------------------------------------------------------------------------------------------

def _as_f64(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x.detach().cpu(), dtype=torch.float64)


def _sqrtm_psd(cov: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric PSD matrix by eigendecomposition; tiny negative eigenvalues -> 0."""
    w, v = torch.linalg.eigh((cov + cov.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def gaussian_frechet_distance(mu_a, cov_a, mu_b, cov_b) -> float:
    """Squared 2-Wasserstein distance between N(mu_a, cov_a) and N(mu_b, cov_b), in float64:

        ||mu_a - mu_b||^2 + tr(cov_a + cov_b - 2 (cov_a^1/2 cov_b cov_a^1/2)^1/2)

    (Dowson & Landau 1982). Symmetric eigendecompositions keep every matrix symmetric, so no complex
    parts appear as with scipy.linalg.sqrtm on the non-symmetric product. Clipped at 0 against round-off.
    """
    mu_a, cov_a, mu_b, cov_b = map(_as_f64, (mu_a, cov_a, mu_b, cov_b))
    d = mu_a.shape[0]
    if mu_b.shape != (d,) or cov_a.shape != (d, d) or cov_b.shape != (d, d):
        raise ValueError(f"shapes do not match: mu_a {tuple(mu_a.shape)}, cov_a {tuple(cov_a.shape)}, "
                         f"mu_b {tuple(mu_b.shape)}, cov_b {tuple(cov_b.shape)}")
    root_a = _sqrtm_psd(cov_a)
    middle = root_a @ cov_b @ root_a                                   # (D, D) symmetric PSD
    tr_cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * tr_cross
    return max(float(value), 0.0)


def _mean_cov(feats) -> tuple[torch.Tensor, torch.Tensor]:
    feats = _as_f64(feats)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2 samples, got shape {tuple(feats.shape)}")
    return feats.mean(dim=0), torch.cov(feats.T)  # unbiased (N - 1), as np.cov in FID code


def frechet_distance(feats_a, feats_b) -> float:
    """FD between Gaussians fitted (mean, unbiased covariance) to two (N, D) feature sets, in float64."""
    (mu_a, cov_a), (mu_b, cov_b) = _mean_cov(feats_a), _mean_cov(feats_b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature dims differ: {mu_a.shape[0]} vs {mu_b.shape[0]}")
    return gaussian_frechet_distance(mu_a, cov_a, mu_b, cov_b)


def fd(images_a: torch.Tensor, images_b: torch.Tensor) -> float:
    """Frechet distance between two image sets on the classifier's 128-d features (the MNIST 'FID')."""
    return frechet_distance(classifier_features(images_a), classifier_features(images_b))


@lru_cache(maxsize=8)
def _real_features(split: str, n: int, seed: int) -> torch.Tensor:
    """Features of n real digits of a split: the first n for seed 0 (nested, like the profiles' subsets),
    a random n drawn with torch.Generator(seed) otherwise."""
    images = load_mnist(split).images
    if seed != 0:
        images = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))]
    if not 2 <= n <= len(images):
        raise ValueError(f"n must be in 2..{len(images)} for the {split} split, got {n}")
    return classifier_features(images[:n])


def fd_floor(n: int, seed: int = 0) -> float:
    """The FD between two disjoint sets of n real digits: the first n of `test` vs the first n of `val`
    (seed != 0 draws random subsets instead). What a perfect model would score at this sample count."""
    return frechet_distance(_real_features("test", n, seed), _real_features("val", n, seed))


def fd_noise(n: int, seed: int = 0) -> float:
    """The FD between the first n test digits and n images of N(0, 1) noise clipped to [-1, 1]: the ceiling."""
    noise = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)).clamp(-1.0, 1.0)
    return frechet_distance(_real_features("test", n, 0), classifier_features(noise))


# ----------------------------------------------------------------------------------------------------
# Classifier score (the Inception score's analogue) and k-NN precision/recall.
# ----------------------------------------------------------------------------------------------------

def classifier_score_from_probs(probs: torch.Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))) from (N, K) class probabilities (Salimans et al. 2016).

    1 when every image gets the same prediction; K when each is confidently one class and the classes
    are equally used. Computed on the whole set at once (no 10-split average), in float64.
    """
    p = _as_f64(probs)
    if p.ndim != 2 or p.shape[0] < 1:
        raise ValueError(f"probs must be (N, K), got shape {tuple(p.shape)}")
    p_y = p.mean(dim=0, keepdim=True)                                   # (1, K) marginal
    kl = (torch.xlogy(p, p) - torch.xlogy(p, p_y)).sum(dim=1)          # (N,) KL(p(y|x) || p(y))
    return math.exp(kl.mean().item())


def classifier_score(images: torch.Tensor) -> float:
    """The Inception-score analogue on the MNIST classifier: max 10, real test digits score about 9.74."""
    return classifier_score_from_probs(classifier_probs(images))


def _kth_neighbour_radius(feats: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """(N,) distance from each point to its k-th nearest neighbour in the same set (self excluded)."""
    return torch.cat([torch.cdist(b, feats).kthvalue(k + 1, dim=1).values for b in feats.split(batch_size)])


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch_size: int) -> float:
    """Fraction of points inside at least one ball (centre, radius)."""
    inside = [(torch.cdist(b, centres) <= radii).any(dim=1) for b in points.split(batch_size)]
    return torch.cat(inside).double().mean().item()


def precision_recall(real_feats, fake_feats, k: int = 3, batch_size: int = 1000) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019, arXiv 1904.06991).

    Each set's manifold is the union of balls reaching each point's k-th nearest neighbour. Precision: the
    share of fakes inside the real manifold (fidelity). Recall: the share of reals inside the fake one
    (coverage). Distances are computed in float32 batches of `batch_size` rows.
    """
    real, fake = (torch.as_tensor(np.asarray(f) if not torch.is_tensor(f) else f).float().cpu()
                  for f in (real_feats, fake_feats))
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be (N, D) with equal D, got {tuple(real.shape)} and {tuple(fake.shape)}")
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"need more than k={k} samples per set, got {len(real)} and {len(fake)}")
    precision = _coverage(fake, real, _kth_neighbour_radius(real, k, batch_size), batch_size)
    recall = _coverage(real, fake, _kth_neighbour_radius(fake, k, batch_size), batch_size)
    return precision, recall


# ----------------------------------------------------------------------------------------------------
# Likelihoods: bits per dimension (flows) and the importance-weighted bound (VAEs).
# ----------------------------------------------------------------------------------------------------

def bits_per_dim(nll_nats, num_dims: int, pixel_scale: float = 1.0):
    """Bits per dimension of discrete 8-bit images, from the NLL in nats of a continuous density over
    dequantized, rescaled data y = (x_uint8 + u) * pixel_scale + offset, u ~ U[0, 1)^D.

    Change of variables to z = x + u (one unit per intensity level): p_z(z) = p_y(y) * pixel_scale^D, so
        nll_z = nll_y - D * log(pixel_scale)        and        bits/dim = nll_z / (D * ln 2).
    nll_z upper-bounds -log P(x) of the discrete image (Theis et al. 2016), so bits/dim is an upper bound.

    Worked example, y = (x + u) / 256 in [0, 1)^D, so pixel_scale = 1/256: the uniform density on [0, 1)^D
    has nll_y = 0 and gets 0 - D * log(1/256) = D * log(256) nats = 8 bits/dim, exactly the raw bytes.
    For y = (x + u) / 128 - 1 in [-1, 1) use pixel_scale = 1/128 (the offset changes nothing).

    nll_nats: the NLL of one image summed over its num_dims dimensions (a float, or a tensor of per-image
    values); the result has the same form. `Flow.bits_per_dim` writes the same formula out (model files import
    no metrics); tests/test_flow.py checks the two agree bit for bit.
    """
    if num_dims < 1 or pixel_scale <= 0:
        raise ValueError(f"need num_dims >= 1 and pixel_scale > 0, got {num_dims} and {pixel_scale}")
    nll_z = nll_nats - num_dims * math.log(pixel_scale)
    return nll_z / (num_dims * math.log(2.0))


def iwae_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """Importance-weighted lower bound on log p(x) (Burda et al. 2016, arXiv 1509.00519).

    log_weights: (K, N) values of log p(x, z_k) - log q(z_k | x) for K samples z_k ~ q(z | x) per image.
    Returns (N,) logsumexp_k(log w) - log K. K = 1 gives the ELBO; the bound tightens as K grows.
    `VAE.iwae` writes the same line out (model files import no metrics); tests/test_vae.py checks they agree.
    """
    if log_weights.ndim != 2:
        raise ValueError(f"log_weights must be (K, N), got shape {tuple(log_weights.shape)}")
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


def clip_score(image_emb: torch.Tensor, text_emb: torch.Tensor, weight: float = 2.5) -> torch.Tensor:
    """CLIPScore of N image-text pairs (Hessel et al. 2021, arXiv 2104.08718): weight * max(cos(image, text), 0)
    per pair, (N,). The weight 2.5 stretches CLIP's usual cosines (about 0-0.4 for ViT-B/32) over 0-1; with the
    course's tiny CLIP read it beside the band of real, one-word-changed and shuffled pairs (notebook 10), not
    on its own. Embeddings need not be unit vectors: they are normalized here."""
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(f"clip_score expects two (N, E) embeddings of one shape, got {tuple(image_emb.shape)} "
                         f"and {tuple(text_emb.shape)}")
    cos = torch.nn.functional.cosine_similarity(image_emb.float(), text_emb.float(), dim=-1)   # (N,)
    return weight * cos.clamp(min=0)


# ----------------------------------------------------------------------------------------------------
# One call for a notebook's "Measure" cell.
# ----------------------------------------------------------------------------------------------------

def _row(real_feats: torch.Tensor, feats: torch.Tensor, probs: torch.Tensor) -> dict:
    precision, recall = precision_recall(real_feats, feats)
    return {"FD": frechet_distance(real_feats, feats), "classifier score": classifier_score_from_probs(probs),
            "precision": precision, "recall": recall}


def evaluate_samples(samples: torch.Tensor, n_ref: int | None = None) -> dict:
    """FD, classifier score, precision and recall of `samples` against the first n_ref test digits (default:
    as many as samples), beside the same numbers for the first n_ref val digits (the floor).

    Returns {"samples": {...}, "real (floor)": {...}, "n": n_ref}; print it with format_table.
    """
    n = n_ref or len(samples)
    reference = _real_features("test", n, 0)
    real = load_mnist("val", n).images
    return {"samples": _row(reference, classifier_features(samples), classifier_probs(samples)),
            "real (floor)": _row(reference, _real_features("val", n, 0), classifier_probs(real)), "n": n}


def format_table(results: dict) -> str:
    """A fixed-width text table of evaluate_samples' result."""
    rows = [k for k in results if k != "n"]
    cols = list(results[rows[0]])
    lines = [f"{'n = ' + str(results['n']):<14}" + "".join(f"{c:>18}" for c in cols)]
    lines += [f"{r:<14}" + "".join(f"{results[r][c]:>18.4f}" for c in cols) for r in rows]
    return "\n".join(lines)
