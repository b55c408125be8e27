"""Figures: grids tile images in order, animations render, bad shapes are named."""
import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from minigen import viz  # noqa: E402


def test_image_grid_places_images_in_order():
    x = torch.stack([torch.full((1, 2, 2), v) for v in (-1.0, 0.0, 1.0)])  # 3 images, values -1, 0, 1
    grid = viz.image_grid(x, nrow=3, pad=1)
    assert grid.shape == (4, 10, 1)
    assert grid[1, 1, 0] == 0.0 and grid[1, 4, 0] == 0.5 and grid[1, 7, 0] == 1.0


def test_bad_shape_is_named():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        viz.image_grid(torch.zeros(2, 5, 4, 4))


def test_animation_of_videos_is_html():
    html = viz.animate(torch.rand(2, 3, 1, 8, 8) * 2 - 1, fps=4)
    assert "<script" in html.data


def test_plot_history_names_missing_key():
    with pytest.raises(KeyError, match="kl"):
        viz.plot_history({"step": [1], "loss": [1.0]}, keys=["kl"])
