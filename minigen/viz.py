"""Pictures for the notebooks: image grids, videos as animations, training curves.

Everything takes tensors in the course's convention (images (N, C, H, W) in [-1, 1], videos (N, T, C, H, W))
and draws with matplotlib, so figures render on GitHub and in nbval runs without a display. Animations
become self-contained HTML (JavaScript frames, no ffmpeg needed).
"""
import matplotlib

matplotlib.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "animation.embed_limit": 8.0})

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib import animation  # noqa: E402


def _check_images(x: torch.Tensor, name: str = "images") -> torch.Tensor:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{name} must be (N, C, H, W) with C in (1, 3), got shape {tuple(x.shape)}")
    return x.detach().float().cpu()


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into one (rows*H, cols*W, C) array in [0, 1]."""
    x = _check_images(images)
    n, c, h, w = x.shape
    ncol = nrow or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncol))
    x = ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()             # (N, H, W, C) in [0, 1]
    grid = np.ones((nrows * (h + pad) + pad, ncol * (w + pad) + pad, c), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = x[i]
    return grid


def show_images(images: torch.Tensor, nrow: int | None = None, title: str | None = None, ax=None,
                size: float = 4.0):
    """Draw an image grid; returns the axes. `nrow` is the number of images per row."""
    grid = image_grid(images, nrow)
    if ax is None:
        _, ax = plt.subplots(figsize=(size * grid.shape[1] / grid.shape[0], size))
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def show_rows(rows: dict, nrow: int | None = None, size: float = 1.6):
    """Several labelled grids stacked vertically, e.g. {"input": x, "reconstruction": x_hat}."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(size * (nrow or 8), size * 1.2 * len(rows)), squeeze=False)
    for ax, (label, images) in zip(axes[:, 0], rows.items()):
        show_images(images, nrow=nrow or len(images), ax=ax)
        ax.set_title(label, loc="left", fontsize=10)
    fig.tight_layout()
    return fig


def animate(frames, fps: int = 12, titles: list[str] | None = None, nrow: int | None = None,
            size: float = 3.0, interval_ms: int | None = None):
    """An HTML animation of a sequence of frames.

    frames: a video (T, C, H, W), a batch of videos (N, T, C, H, W) shown side by side, or a list of
    (N, C, H, W) grids (one per frame). Returns an IPython HTML object for the notebook to display.
    """
    from IPython.display import HTML

    grids = [image_grid(f, nrow) for f in _frame_batches(frames)]
    fig, ax = plt.subplots(figsize=(size * grids[0].shape[1] / grids[0].shape[0], size))
    ax.set_axis_off()
    shown = ax.imshow(_squeeze(grids[0]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")

    def draw(t):
        shown.set_data(_squeeze(grids[t]))
        if titles:
            ax.set_title(titles[t])
        return (shown,)

    anim = animation.FuncAnimation(fig, draw, frames=len(grids), interval=interval_ms or 1000 // fps, blit=False)
    html = HTML(anim.to_jshtml(default_mode="loop"))
    plt.close(fig)
    return html


def _frame_batches(frames) -> list:
    if isinstance(frames, (list, tuple)):
        return [_check_images(f, "frame") for f in frames]
    if frames.dim() == 4:                       # (T, C, H, W): one video
        return [frames[t:t + 1] for t in range(frames.shape[0])]
    if frames.dim() == 5:                       # (N, T, C, H, W): videos side by side
        return [frames[:, t] for t in range(frames.shape[1])]
    raise ValueError(f"frames must be (T, C, H, W), (N, T, C, H, W) or a list of grids, got {tuple(frames.shape)}")


def _squeeze(grid: np.ndarray) -> np.ndarray:
    return grid.squeeze(-1) if grid.shape[-1] == 1 else grid


def plot_history(history: dict, keys: list[str] | None = None, smooth: int = 1, logy: bool = False,
                 ax=None, title: str | None = None):
    """Training curves from `Trainer.history` (a dict of lists with a "step" entry)."""
    keys = keys or [k for k in history if k not in ("step", "grad_norm")]
    missing = [k for k in keys if k not in history]
    if missing:
        raise KeyError(f"history has no {missing}; it has {sorted(history)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    for key in keys:
        values = np.asarray(history[key], dtype=np.float64)
        if smooth > 1 and len(values) >= smooth:
            values = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
        ax.plot(history["step"][len(history["step"]) - len(values):], values, label=key)
    ax.set_xlabel("step")
    if logy:
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return ax


def scatter2d(points: torch.Tensor, ax=None, title: str | None = None, lim: float = 4.0, **kwargs):
    """A 2-D point cloud (N, 2), for the toy densities."""
    if points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (N, 2), got {tuple(points.shape)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(3.5, 3.5))
    p = points.detach().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=kwargs.pop("s", 2), alpha=kwargs.pop("alpha", 0.5), **kwargs)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax
