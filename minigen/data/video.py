"""Moving-shape videos with per-frame actions, for the video and world-model notebooks.

One shape moves on a black frame. At every frame t an action from ACTIONS moves the shape's centre
between frame t and frame t + 1; a sticky random policy picks them (an action persists a few frames, so
motion reads as motion, and is redrawn when it would push into a wall):

    positions[t + 1] = clamp(positions[t] + step * ACTION_DELTAS[actions[t]], low, high)

`low` and `high` keep the whole anti-aliased shape inside the frame, so at a wall the shape slides as
far as the wall and stops (an action into the wall moves it less than `step`, or not at all); it never
wraps or leaves. The last frame's action is drawn like the others but has no frame after it.

Positions are whole pixels and a frame is rendered from integer offsets only, so moving the shape by
(dy, dx) shifts the frame by exactly (dy, dx) pixels, bit for bit: the next frame is a function of the
frame and the action alone, which is what a playable world model (next frame from frame + action) needs
to be learnable exactly. `apply_action` and `render_frames` expose the true dynamics to a notebook.
"""
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .shapes import EXTENT, RGB, SHAPES, check_int, chunked, pick, shape_alpha, uniform_table

ACTIONS = ("stay", "up", "down", "left", "right")
ACTION_DELTAS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))  # (drow, dcol) per action; rows point down
KEEP = 0.75  # chance that an action persists to the next frame: runs of 4 frames on average


@dataclass
class MovingShapes:
    videos: torch.Tensor     # (N, T, C, H, W) float in [-1, 1]
    actions: torch.Tensor    # (N, T) int64 index into ACTIONS; actions[:, t] moves frame t to t + 1
    positions: torch.Tensor  # (N, T, 2) int64 (row, col) pixel of the shape's centre in each frame
    shape: torch.Tensor      # (N,) int64 index into SHAPES (shapes.py)
    color: torch.Tensor      # (N,) int64 index into COLORS (shapes.py); drawn but unused (white) when C == 1
    step: int                # pixels moved per action
    low: int                 # smallest row/col a centre can take
    high: int                # largest row/col a centre can take

    ACTIONS: ClassVar[tuple[str, ...]] = ACTIONS

    def __len__(self) -> int:
        return len(self.videos)

    def to(self, device) -> "MovingShapes":
        return MovingShapes(self.videos.to(device), self.actions.to(device), self.positions.to(device),
                            self.shape.to(device), self.color.to(device), self.step, self.low, self.high)


def radius_and_limits(size: int) -> tuple[float, int, int]:
    """Shape radius in pixels and the [low, high] range of centres that keeps the whole shape inside."""
    radius = size / 7
    margin = math.ceil(EXTENT * radius + 0.5)  # farthest covered pixel: shape extent + half a pixel
    return radius, margin, size - 1 - margin


def apply_action(position: torch.Tensor, action: torch.Tensor, step: int, low: int, high: int) -> torch.Tensor:
    """The true dynamics: position (..., 2) int64 after action (...) int64, clamped to [low, high]."""
    delta = torch.tensor(ACTION_DELTAS, device=position.device)[action]    # (..., 2)
    return (position + step * delta).clamp(low, high)


def _rollout(start, u_keep, u_new, step: int, low: int, high: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Actions (n, T) and positions (n, T, 2) from start (n, 2) under a sticky random policy.

    The policy keeps its last action with chance KEEP and otherwise takes a fresh uniform draw; it also
    redraws when the last action would now push into a wall, so shapes do not sit pinned for long.
    """
    fresh = pick(u_new, len(ACTIONS))                                        # (n, T)
    actions, positions = [fresh[:, 0]], [start]
    for t in range(1, fresh.shape[1]):                                       # a loop over frames only
        positions.append(apply_action(positions[-1], actions[-1], step, low, high))
        pinned = (apply_action(positions[-1], actions[-1], step, low, high) == positions[-1]).all(-1)
        keep = (u_keep[:, t] < KEEP) & (~pinned | (actions[-1] == 0))       # "stay" may persist
        actions.append(torch.where(keep, actions[-1], fresh[:, t]))
    return torch.stack(actions, 1), torch.stack(positions, 1)


def render_frames(positions: torch.Tensor, shape: torch.Tensor, rgb: torch.Tensor, size: int) -> torch.Tensor:
    """Frames (n, T, C, size, size) in [-1, 1] of shape (n,) in colour rgb (n, C) at positions (n, T, 2).

    Each video's shape is drawn once, centred on a sprite of side 2 * size - 1, and every frame is cut
    out of that sprite by integer indexing: frames at different positions are exact pixel shifts of
    each other, for any position inside the frame.
    """
    n, frames = positions.shape[:2]
    radius, _, _ = radius_and_limits(size)
    span = 2 * size - 1                                                          # sprite side S
    offsets = torch.arange(1 - size, size, dtype=torch.float32)                  # (S,) from the centre
    x, y = offsets[None, None, :].expand(n, span, span), offsets[None, :, None].expand(n, span, span)
    sprite = shape_alpha(shape, x, y, torch.full((n, 1, 1), radius), 1.0)         # (n, S, S)
    pixels = torch.arange(size)                                                  # (H,)
    rows = pixels - positions[..., 0, None] + size - 1                           # (n, T, H) sprite row
    cols = pixels - positions[..., 1, None] + size - 1                           # (n, T, W) sprite col
    index = rows[..., :, None] * span + cols[..., None, :]                       # (n, T, H, W)
    alpha = sprite.flatten(1).gather(1, index.flatten(1))                        # (n, T * H * W)
    alpha = alpha.view(n, frames, 1, size, size)                                 # (n, T, 1, H, W)
    return torch.addcmul(torch.tensor(-1.0), alpha, 2 * rgb[:, None, :, None, None])  # (n, T, C, H, W)


def make_moving_shapes(n: int, seed: int = 0, frames: int = 16, size: int = 32, channels: int = 1,
                       step: int = 2) -> MovingShapes:
    """n videos (n, frames, channels, size, size) of one shape moved by sticky-random actions."""
    check_int("n", n, 1)
    check_int("frames", frames, 2)
    check_int("size", size, 16)
    check_int("step", step, 1)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (white shapes) or 3 (coloured shapes), got {channels!r}")
    _, low, high = radius_and_limits(size)
    u = uniform_table(n, 4 + 2 * frames, seed)                               # (n, 4 + 2T)
    shape, color = pick(u[:, 0], len(SHAPES)), pick(u[:, 1], len(RGB))      # (n,) each
    start = low + pick(u[:, 2:4], high - low + 1)                            # (n, 2) anywhere inside
    actions, positions = _rollout(start, u[:, 4:4 + frames], u[:, 4 + frames:], step, low, high)
    rgb = torch.tensor(RGB)[color] if channels == 3 else torch.ones(n, 1)    # (n, C)
    videos = chunked(lambda *rows: render_frames(*rows, size), positions, shape, rgb, chunk=32)
    return MovingShapes(videos, actions, positions, shape, color, step, low, high)
