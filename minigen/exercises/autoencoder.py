"""Checkers for notebook 01 (autoencoders and masked autoencoders).

    check_unpatchify(my_unpatchify)      my_unpatchify(patches (B, N, P), p, h, w) -> images (B, C, h*p, w*p)
    check_random_mask(my_random_mask)    my_random_mask(B, N, mask_ratio, generator) -> mask (B, N), 1 = hidden
"""
import torch

from minigen.models.mae import num_kept, patchify, unpatchify

from ._check import assert_close, checker, solution_for


@checker("autoencoder.unpatchify")
def check_unpatchify(fn) -> None:
    """Compare with minigen.models.mae.unpatchify on odd sizes, several channels and non-square grids."""
    g = torch.Generator().manual_seed(0)
    for B, C, H, W, p in [(2, 1, 28, 28, 4), (3, 1, 28, 28, 7), (1, 3, 15, 21, 3), (2, 2, 10, 6, 2)]:
        x = torch.randn(B, C, H, W, generator=g)
        patches = patchify(x, p)
        got = fn(patches.clone(), p, H // p, W // p)
        assert_close(f"unpatchify on a {C}x{H}x{W} image, {p}x{p} patches", got, unpatchify(patches, p, H // p, W // p),
                     atol=0, rtol=0, hint="patches are (B, N, P) in row-major order with P = p*p*C; undo "
                     "patchify's reshape (B, C, h, p, w, p) -> permute (0, 2, 4, 3, 5, 1) step by step")
        assert torch.equal(got, x), "unpatchify(patchify(x)) must give x back exactly"
    print("check_unpatchify: all cases pass")


@checker("autoencoder.random_mask")
def check_random_mask(fn) -> None:
    """Exact count per row, a fresh mask per sample, every position equally likely, generator respected."""
    for B, N, ratio in [(512, 49, 0.75), (256, 16, 0.75), (256, 64, 0.5), (128, 10, 0.3)]:
        mask = fn(B, N, ratio, torch.Generator().manual_seed(1))
        if not torch.is_tensor(mask) or tuple(mask.shape) != (B, N):
            raise AssertionError(f"expected a (B, N) = ({B}, {N}) tensor, got "
                                 f"{tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__}")
        mask = mask.float()
        hidden = N - num_kept(N, ratio)
        counts = mask.sum(dim=1)
        if not torch.equal(counts, torch.full((B,), float(hidden))):
            raise AssertionError(f"N={N}, mask_ratio={ratio}: every row must hide exactly {hidden} patches "
                                 f"(keep round(N * (1 - ratio)) = {N - hidden}); rows hide {counts.min():.0f} to "
                                 f"{counts.max():.0f}. Hint: sort random noise and hide the last ones, not "
                                 f"`rand < ratio` (that only hides {ratio:.0%} on average)")
        if len({tuple(row.tolist()) for row in mask}) < B // 2:
            raise AssertionError("most samples got the same mask; draw fresh noise for each row (B, N)")
        rate = mask.mean(dim=0)                                   # (N,) how often each position is hidden
        if (rate - hidden / N).abs().max() > 0.15:
            raise AssertionError(f"positions are not hidden equally often (rates {rate.min():.2f} to "
                                 f"{rate.max():.2f}, expected about {hidden / N:.2f}): shuffle all N positions")
        again = fn(B, N, ratio, torch.Generator().manual_seed(1)).float()
        if not torch.equal(mask, again):
            raise AssertionError("the same generator seed gave a different mask; pass `generator=` to torch.rand")
    print("check_random_mask: exact counts, fresh masks per sample, uniform positions: correct")


# ----------------------------------------------------------------------------------------------------
# Solutions: printed by minigen.exercises.solution("autoencoder.<name>"); tests/test_exercises.py checks them
# ----------------------------------------------------------------------------------------------------

@solution_for("autoencoder.unpatchify")
def my_unpatchify(patches, p, h, w):
    B, N, P = patches.shape
    C = P // (p * p)
    x = patches.reshape(B, h, w, p, p, C)        # (B, h, w, p, p, C)
    x = x.permute(0, 5, 1, 3, 2, 4)              # (B, C, h, p, w, p)
    return x.reshape(B, C, h * p, w * p)         # (B, C, h*p, w*p)


@solution_for("autoencoder.random_mask")
def my_random_mask(B, N, mask_ratio, generator):
    keep = round(N * (1 - mask_ratio))
    order = torch.rand(B, N, generator=generator).argsort(dim=1)    # (B, N) a random permutation per row
    mask = torch.ones(B, N)
    mask.scatter_(1, order[:, :keep], 0.0)                          # the first `keep` of each permutation stay visible
    return mask
