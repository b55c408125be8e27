"""The masked autoencoder: patches round-trip, masks keep exactly their share, bad input is named."""
import math

import pytest
import torch

from minigen.models.mae import (MAE, MAE_PRESETS, MAEConfig, evaluate_masked_mse, masked_mse, mean_patch_baseline,
                                num_kept, patchify, random_masking, unpatchify)

TINY = MAEConfig(dim=32, depth=1, heads=2, decoder_dim=16, decoder_depth=1, decoder_heads=2)


@pytest.mark.parametrize("B, C, H, W, p", [(3, 1, 28, 28, 4), (2, 3, 21, 35, 7), (1, 2, 15, 9, 3), (5, 1, 28, 28, 7)])
def test_patchify_round_trip_on_odd_sizes(B, C, H, W, p):
    x = torch.randn(B, C, H, W)
    patches = patchify(x, p)
    assert patches.shape == (B, (H // p) * (W // p), p * p * C)
    assert torch.equal(unpatchify(patches, p, H // p, W // p), x)


def test_patchify_order_is_row_major():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    patches = patchify(x, 2)
    assert patches[0, 0].tolist() == [0, 1, 4, 5]      # top-left patch, pixels row by row
    assert patches[0, 1].tolist() == [2, 3, 6, 7]      # its right neighbour comes next
    with pytest.raises(ValueError, match="image height H = 10 is not divisible by patch size p = 3"):
        patchify(torch.zeros(1, 1, 10, 10), 3)
    with pytest.raises(ValueError, match="do not fit"):
        unpatchify(torch.zeros(1, 5, 4), 2, 2, 2)


@pytest.mark.parametrize("N, ratio", [(49, 0.75), (16, 0.75), (64, 0.5), (10, 0.9), (7, 0.0)])
def test_masking_keeps_exactly_the_requested_fraction(N, ratio):
    B = 64
    ids_keep, mask, ids_restore = random_masking(B, N, ratio, torch.Generator().manual_seed(0))
    keep = num_kept(N, ratio)
    assert keep == round(N * (1 - ratio))
    assert ids_keep.shape == (B, keep)
    assert torch.equal(mask.sum(1), torch.full((B,), float(N - keep)))           # same count in every row
    assert torch.equal(mask.gather(1, ids_keep), torch.zeros(B, keep))           # the kept ones are unmasked
    assert torch.equal(ids_restore.sort(1).values, torch.arange(N).expand(B, N))  # a permutation per row
    distinct = len({tuple(row.tolist()) for row in mask})                       # samples get different masks
    assert distinct >= min(B // 2, math.comb(N, keep) // 2)


def test_mask_ratio_075_on_16_patches_keeps_a_quarter():
    _, mask, _ = random_masking(8, 16, 0.75)
    assert torch.equal(1 - mask.mean(1), torch.full((8,), 0.25))


def test_forward_shapes_reconstruct_and_compression():
    model = MAE(TINY)
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    pred, mask = model(x)
    assert pred.shape == (4, 49, 16) and mask.shape == (4, 49)
    masked, filled, mask = model.reconstruct(x)
    assert masked.shape == filled.shape == x.shape
    visible = ~mask.bool()[..., None]
    assert torch.equal(model.patchify(filled) * visible, model.patchify(x) * visible)  # visible pixels copied
    assert model.compression() == pytest.approx(784 / (12 * 32))
    for config in MAE_PRESETS.values():
        assert MAE(config)(x)[0].shape == (4, config.num_patches, config.patch_size ** 2)


@pytest.mark.parametrize("shape", [(4, 28, 28), (4, 1, 32, 32), (4, 3, 28, 28)])
def test_rejects_wrong_input_shape(shape):
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        MAE(TINY)(torch.zeros(shape))


def test_rejects_bad_config():
    with pytest.raises(ValueError, match="divide"):
        MAEConfig(patch_size=5)
    with pytest.raises(ValueError, match="mask_ratio"):
        MAEConfig(mask_ratio=1.0)
    with pytest.raises(ValueError, match="heads"):
        MAEConfig(dim=30, heads=4)


def test_loss_only_counts_hidden_patches():
    target = torch.zeros(2, 4, 3)
    pred = torch.tensor([[1.0, 2.0, 0.0, 0.0]]).T.expand(4, 3).unsqueeze(0).expand(2, 4, 3)
    mask = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0]])
    assert masked_mse(pred, target, mask).tolist() == [1.0, 4.0]


def test_loss_decreases_and_is_deterministic():
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = MAE(TINY)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(1)
        history = []
        for _ in range(15):
            loss = model.loss(x, generator=g)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(loss.item())
        losses.append(history)
    assert losses[0] == losses[1]
    assert sum(losses[0][-5:]) / 5 < 0.7 * losses[0][0]


def test_mean_patch_baseline_and_evaluation():
    images = torch.rand(20, 1, 28, 28) * 2 - 1
    mean = mean_patch_baseline(images, 4)
    assert mean.shape == (49, 16)
    assert torch.allclose(mean, patchify(images.mean(0, keepdim=True), 4)[0], atol=1e-6)
    model = MAE(TINY)
    a = evaluate_masked_mse(model, images, mean, seed=3, batch_size=7)
    b = evaluate_masked_mse(model, images, mean, seed=3, batch_size=7)
    assert a == b and a["kept patches"] == 12 and a["mean patch"] > 0
