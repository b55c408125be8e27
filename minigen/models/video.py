"""A tiny video generator: a DiT on spacetime patches with factorized (or full) attention, conditioned on the first
frame and on the actions that move the object (notebook 09).

Peebles & Xie's DiT (arXiv 2212.09748) extended to frames the way video diffusion transformers do it: tokens are
spacetime patches (ViViT's tubelets, arXiv 2103.15691; Sora's "spacetime patches"), the blocks alternate attention
across frames and within a frame (TimeSformer's divided space-time attention, arXiv 2102.05095; Latte, arXiv
2401.03048), and the clip is generated all at once by flow matching (notebook 06).

    x_t (B, T, C, h, w) ++ first frame on every frame (B, T, C, h, w)   -> (B, T, 2C, h, w)   image-to-video by
                                                                          channel concat, as Stable Video Diffusion
        --tubeletify pt, p-->  (B, N, pt*p*p*2C)     N = (T/pt)(h/p)(w/p), ordered (frame, row, col)
        --Linear-->            (B, T', S, dim)       T' = T/pt token frames, S = (h/p)(w/p) tokens a frame
        + fixed positions: 2-D sine-cosine in the frame, 1-D sine-cosine in time
    c = TimestepEmbedder(1000 t) + actions           (B, T', dim): each frame's adaLN-Zero vector, the timestep plus
                                                     the summed embeddings of every action before the frame, plus
                                                     sine-cosine features of the displacement they command
    depth x SpaceTimeBlock: attention across frames, then within each frame (factorized); or one attention over all
        T'*S tokens (full)
    final layer (LN modulated by c, Linear to pt*p*p*C) -> untubeletify -> the output (B, T, C, h, w): the change
        from the first frame (x-prediction, VideoFlowMatching's default) or the velocity (v-prediction)

Actions: `minigen.data.video` moves the object by actions[:, t] between frame t and t + 1, so the object's place in
frame t is the start plus the steps of actions 0 .. t - 1 (clamped at the walls). Each frame gets the sum of the
embeddings of those actions, a running total (frame 0 gets the zero vector: nothing has happened yet), and, with
`action_deltas`, sine-cosine features of the displacement they command, through that frame's adaLN (or, with
action_input="tokens", added to its tokens). Where a wall stops the object the commanded displacement is wrong:
that the network must learn from the pixels.

    model = VideoDiT(VIDEO_PRESETS["VideoDiT-S"])
    out = model(x_t, 1000 * t, (first_frame, actions))  # (B, T, C, h, w); first_frame (B, C, h, w), actions (B, T)
    flow = VideoFlowMatching(model)                   # minigen.train's loss on (videos, actions) batches
    clips = generate(flow, first_frame, actions, steps=10)
"""
from dataclasses import dataclass

import torch
from torch import nn

from ..diffusion import fm_interpolate, fm_sample_t
from ..nn import (FinalLayer, SpaceTimeBlock, TimestepEmbedder, check_videos, init_transformer, num_parameters,
                  sincos_positions, timestep_embedding)
from ..patches import tubeletify, untubeletify

ATTENTIONS = ("factorized", "full")
PREDICTIONS = ("x", "v")  # what the network outputs: the clean clip, or the velocity
FM_TIME_SCALE = 1000.0  # flow matching's t in [0, 1] reaches the timestep embedder scaled, as in minigen.diffusion


@dataclass
class VideoDiTConfig:
    frames: int = 8                 # T: 8 frames of minigen.data.video's moving shapes (an action lasts ~4 frames)
    channels: int = 3               # coloured shapes: colour is one of the things a clip must keep
    size: int = 32                  # h = w: the moving-shapes frame
    patch_size: int = 8             # p: 4 x 4 = 16 tokens a frame, 128 a clip: minutes on a laptop CPU (p = 4
                                    # gives 512 a clip, 4x the cost); x-prediction copes with the big patches
    tubelet: int = 1                # pt: frames per token; 1 keeps a token frame per frame, so each frame's actions
                                    # reach its own tokens (pt = 2 halves the tokens: compression in time, and a
                                    # token frame gets the action total of its first frame only)
    dim: int = 96                   # token width
    depth: int = 4                  # blocks
    heads: int = 4                  # 24-d heads
    mlp_ratio: float = 4.0          # the usual transformer MLP width
    attention: str = "factorized"   # "factorized": SpaceTimeBlock (time, then space); "full": one attention over
                                    # all T'*S tokens per block (the baseline factorization is measured against)
    num_actions: int | None = 5     # minigen.data.video.ACTIONS; None: no action input (first frame only)
    first_frame: bool = True        # True: the clean first frame rides along every frame's channels
    action_deltas: tuple | None = None  # the pixels each action moves the object, ((drow, dcol), ...): each frame
                                    # also gets sine-cosine features of the displacement commanded so far (what the
                                    # actions mean, as a camera path is given to a camera-controlled model). In a
                                    # trial (1400 steps, cpu recipe) it raised the judge's shape-kept from 0.54 to
                                    # 0.63 and cut the velocity error from 1.15 to 1.01 px
    action_input: str = "adaln"     # "adaln": each frame's action total joins the timestep in that frame's adaLN
                                    # (a multiplicative path: scale and gate depend on the motion); "tokens": added
                                    # to the frame's tokens, like a position. In a trial (800 steps, cpu recipe, no
                                    # action_deltas) adaln brought the last frame's mean squared error to 0.084
                                    # against 0.104 for tokens

    def __post_init__(self):
        if self.attention not in ATTENTIONS:
            raise ValueError(f"VideoDiTConfig.attention {self.attention!r}: choose one of {ATTENTIONS}")
        if self.size % self.patch_size:
            raise ValueError(f"VideoDiTConfig: patch_size {self.patch_size} must divide size {self.size}")
        if self.frames % self.tubelet:
            raise ValueError(f"VideoDiTConfig: tubelet {self.tubelet} must divide frames {self.frames}")
        if self.action_input not in ("adaln", "tokens"):
            raise ValueError(f"VideoDiTConfig.action_input {self.action_input!r}: choose 'adaln' or 'tokens'")
        if self.dim % self.heads or self.dim % 4:
            raise ValueError(f"VideoDiTConfig: dim {self.dim} must be divisible by heads ({self.heads}) and by 4 "
                             f"(the 2-D sine-cosine positions take a quarter of the channels per sin/cos and axis)")
        if self.action_deltas is not None:
            if not self.num_actions or len(self.action_deltas) != self.num_actions or any(
                    len(d) != 2 for d in self.action_deltas):
                raise ValueError(f"VideoDiTConfig.action_deltas must give (drow, dcol) for each of the num_actions = "
                                 f"{self.num_actions} actions, got {self.action_deltas!r}")

    @property
    def grid(self) -> tuple[int, int]:
        """(T', S): token frames and tokens per frame."""
        return self.frames // self.tubelet, (self.size // self.patch_size) ** 2


# Presets: T proves the ci cells run in seconds; S is the cpu profile's (minutes on 2 cores); B the gpu profile's
# (16 frames of 64 tokens: 1024 tokens a clip, where factorizing starts to pay). "-full": the same with full attention.
MOVES = ((0, 0), (-2, 0), (2, 0), (0, -2), (0, 2))  # minigen.data.video's ACTION_DELTAS at its default step, 2 px
VIDEO_PRESETS = {
    "VideoDiT-T": VideoDiTConfig(dim=32, depth=2, heads=2, action_deltas=MOVES),
    "VideoDiT-T-full": VideoDiTConfig(dim=32, depth=2, heads=2, attention="full", action_deltas=MOVES),
    "VideoDiT-S": VideoDiTConfig(action_deltas=MOVES),
    "VideoDiT-S-full": VideoDiTConfig(attention="full", action_deltas=MOVES),
    "VideoDiT-B": VideoDiTConfig(frames=16, patch_size=4, dim=256, depth=8, heads=4, action_deltas=MOVES),
    "VideoDiT-B-full": VideoDiTConfig(frames=16, patch_size=4, dim=256, depth=8, heads=4, attention="full",
                                      action_deltas=MOVES),
}


class VideoDiT(nn.Module):
    """out = VideoDiT(x_t, 1000 t, (first_frame, actions)) for clips x_t (B, T, C, h, w); `VideoFlowMatching` reads
    out as the change from the first frame (x-prediction) or as the velocity (v-prediction)."""

    def __init__(self, config: VideoDiTConfig = VideoDiTConfig()):
        super().__init__()
        self.config = c = config
        Tp, S = c.grid
        side = c.size // c.patch_size
        in_channels = c.channels * (2 if c.first_frame else 1)
        self.embed = nn.Linear(c.tubelet * c.patch_size ** 2 * in_channels, c.dim)      # a tubelet -> a token
        space = sincos_positions(c.dim, side, side)                                       # (S, dim)
        time = timestep_embedding(torch.arange(Tp), c.dim)                                # (T', dim)
        self.register_buffer("pos", (space[None] + time[:, None])[None], persistent=False)  # (1, T', S, dim)
        self.t_embed = TimestepEmbedder(c.dim)
        self.action_embed = nn.Embedding(c.num_actions, c.dim) if c.num_actions else None
        self.motion = None
        if c.action_deltas is not None:
            self.register_buffer("deltas", torch.tensor(c.action_deltas, dtype=torch.float32), persistent=False)
            self.motion = nn.Sequential(nn.Linear(c.dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.blocks = nn.ModuleList(SpaceTimeBlock(c.dim, c.heads, c.mlp_ratio, cond_dim=c.dim, attention=c.attention)
                                    for _ in range(c.depth))
        self.final = FinalLayer(c.dim, c.tubelet * c.patch_size ** 2 * c.channels)
        init_weights(self)

    @property
    def video_shape(self) -> tuple:
        c = self.config
        return (c.frames, c.channels, c.size, c.size)

    def _condition(self, x: torch.Tensor, y) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Split y into (first frame (B, C, h, w) or None, actions (B, T) or None) and check both."""
        c = self.config
        if y is None:
            first, actions = None, None
        elif isinstance(y, (tuple, list)) and len(y) == 2:
            first, actions = y
        else:
            raise ValueError("VideoDiT's condition y is a pair (first_frame (B, C, h, w), actions (B, T))")
        B = x.shape[0]
        if c.first_frame:
            if not torch.is_tensor(first) or tuple(first.shape) != (B, *self.video_shape[1:]):
                got = tuple(first.shape) if torch.is_tensor(first) else type(first).__name__
                raise ValueError(f"VideoDiT was built with first_frame=True: y[0] must be the first frames "
                                 f"(B, C, h, w) = ({B}, {', '.join(map(str, self.video_shape[1:]))}), got {got}")
        if c.num_actions:
            if not torch.is_tensor(actions) or tuple(actions.shape) != (B, c.frames) or actions.dtype != torch.long:
                got = (f"{tuple(actions.shape)} {actions.dtype}" if torch.is_tensor(actions)
                       else type(actions).__name__)
                raise ValueError(f"VideoDiT takes actions: y[1] must be int64 of shape (B, T) = ({B}, {c.frames}), "
                                 f"got {got}")
            if actions.numel() and actions.device.type == "cpu" and (actions.min() < 0 or
                                                                     actions.max() >= c.num_actions):
                raise ValueError(f"VideoDiT: actions must be in 0..{c.num_actions - 1}, got values in "
                                 f"[{actions.min().item()}, {actions.max().item()}]")
        return (first if c.first_frame else None), (actions if c.num_actions else None)

    def action_tokens(self, actions: torch.Tensor) -> torch.Tensor:
        """actions (B, T) -> (B, T', dim): for each token frame, the summed embeddings of every action before its
        first frame (frame 0: zero; frame t: actions 0 .. t-1), the running total of what has moved the object;
        with `action_deltas`, plus an MLP of sine-cosine features of the displacement those actions command.
        With tubelets of pt > 1 frames a token frame gets its first frame's total: the actions inside the tubelet
        do not reach it (notebook 09's exercise 3 asks what that costs)."""
        c = self.config
        e = self.action_embed(actions)                                                    # (B, T, dim)
        before = torch.cumsum(e, dim=1) - e                                               # (B, T, dim) exclusive
        if self.motion is not None:                   # + the commanded displacement so far, as sine-cosine features
            d = self.deltas[actions]                                                      # (B, T, 2) pixels
            d = torch.cumsum(d, dim=1) - d                                                # (B, T, 2) before frame t
            half = c.dim // 2
            # x 8: at the fastest of timestep_embedding's frequencies (1 rad per unit) a pixel turns 8 rad, at the
            # slowest a whole frame's width barely moves, so both one step and the full span have a readable code
            code = torch.cat([timestep_embedding(d[..., i].flatten() * 8, half).view(*d.shape[:2], half)
                              for i in range(2)], dim=-1)                                 # (B, T, dim): rows, cols
            before = before + self.motion(code)
        return before[:, ::c.tubelet]                                                     # (B, T', dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        c = self.config
        check_videos(x, "VideoDiT", self.video_shape)
        if not torch.is_tensor(t) or t.shape != (x.shape[0],):
            shape = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
            raise ValueError(f"VideoDiT expects timesteps of shape (B,) = ({x.shape[0]},), got {shape}")
        first, actions = self._condition(x, y)
        B, T, C, H, W = x.shape
        Tp, S = c.grid
        if first is not None:
            x = torch.cat([x, first[:, None].expand(B, T, C, H, W)], dim=2)              # (B, T, 2C, h, w)
        h = self.embed(tubeletify(x, c.tubelet, c.patch_size)).view(B, Tp, S, c.dim)      # (B, T', S, dim)
        h = h + self.pos
        cond = self.t_embed(t)                                                            # (B, dim)
        if actions is not None and c.action_input == "tokens":
            h = h + self.action_tokens(actions)[:, :, None]                               # (B, T', 1, dim)
        elif actions is not None:
            cond = cond[:, None] + self.action_tokens(actions)                            # (B, T', dim) per frame
        for block in self.blocks:
            h = block(h, cond)                                                            # (B, T', S, dim)
        if cond.ndim == 3:                                                                # per-frame final layer
            out = self.final(h.reshape(B * Tp, S, c.dim), cond.reshape(B * Tp, c.dim))   # (B*T', S, pt*p*p*C)
        else:
            out = self.final(h.reshape(B, Tp * S, c.dim), cond)                           # (B, N, pt*p*p*C)
        return untubeletify(out.reshape(B, Tp * S, -1), c.tubelet, c.patch_size, C, T, H, W)  # (B, T, C, h, w)


def init_weights(model: VideoDiT) -> None:
    """DiT's init (minigen.models.dit.init_weights): Xavier linear layers, every block's adaLN at zero, timestep MLP
    N(0, 0.02^2), and the final layer at zero so the untrained model predicts exactly 0. Action embeddings N(0,
    0.02^2), small beside the tokens, like DiT's label table; the motion MLP is a linear stack like the blocks'."""
    init_transformer(model)
    if model.action_embed is not None:
        nn.init.normal_(model.action_embed.weight, std=0.02)
    for layer in (model.t_embed.mlp[0], model.t_embed.mlp[2]):
        nn.init.normal_(layer.weight, std=0.02)
    for layer in (model.final.linear, model.final.adaln[-1]):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)


class VideoFlowMatching(nn.Module):
    """Flow matching (notebook 06) for clips, on straight paths x_t = (1 - t) x0 + t noise with t logit-normal (SD3).
    batch = (videos (B, T, C, h, w), actions (B, T)); the condition is the clean first frame of the very clip being
    denoised, and its actions.

    prediction "v": the network predicts the velocity noise - x0 (notebook 06), loss mean ||v_hat - v||^2.
    prediction "x": the network predicts the clean clip x0 (Li & He, "Back to Basics: Let Denoising Generative Models
    Denoise", arXiv 2511.13720), loss mean ||x0_hat - x0||^2, and the sampler's velocity is (x_t - x0_hat) / t. A
    token of 8 x 8 x 3 pixels carries 192 numbers (384 with the first frame) through a 96-wide transformer: noise
    cannot pass that bottleneck, clean frames (one shape at one place) can, so x-prediction is the one that learns.
    With x-prediction and a first-frame model, the network predicts the change from the first frame: x0_hat = first
    frame + output, so the untrained model (output 0) is exactly the copy-the-first-frame baseline, and training
    only has to learn the motion.

    t_loc shifts the logit-normal training times towards noise (median t = sigmoid(t_loc) = 0.73 at 1.0): given the
    first frame and the actions the clip is determined, and the hard, useful lesson is drawing it from (nearly) pure
    noise, which is what the first sampling steps ask; near t = 0, x_t already shows the answer. In a trial (800 steps,
    the cpu recipe otherwise, no action_deltas) the last frame's mean squared error fell from 0.084 at t_loc 0 to
    0.070 at 1.0."""

    def __init__(self, model: VideoDiT, prediction: str = "x", t_loc: float = 1.0):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"VideoFlowMatching: prediction {prediction!r}: choose one of {PREDICTIONS}")
        self.model, self.prediction, self.t_loc = model, prediction, t_loc
        self.config = model.config

    def clean(self, x_t, t, y):
        """The network's output at (x_t, t (B,) in [0, 1], y): the clean clip x0_hat for x-prediction (the first
        frame plus the predicted change), the velocity for v-prediction."""
        out = self.model(x_t, FM_TIME_SCALE * t, y)
        if self.prediction == "x" and self.config.first_frame:
            out = out + y[0][:, None]                                                     # (B, T, C, h, w)
        return out

    def loss(self, batch) -> dict:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError("VideoFlowMatching trains on (videos (B, T, C, h, w), actions (B, T)) batches")
        videos, actions = batch
        check_videos(videos, "VideoFlowMatching", self.model.video_shape)
        t = fm_sample_t(videos.shape[0], "logit-normal", loc=self.t_loc, device=videos.device)
        noise = torch.randn_like(videos)
        out = self.clean(fm_interpolate(videos, noise, t), t, (videos[:, 0], actions))
        target = videos if self.prediction == "x" else noise - videos
        return {"loss": (out - target).square().mean()}

    def forward(self, x_t, t, y=None):
        """The velocity at (x_t, t), t (B,) in [0, 1], whatever the network predicts."""
        out = self.clean(x_t, t, y)
        if self.prediction == "v":
            return out
        return (x_t - out) / t.clamp(min=1e-3).view(-1, 1, 1, 1, 1)                      # v = (x_t - x0_hat) / t


@torch.no_grad()
def generate(flow: VideoFlowMatching, first_frame: torch.Tensor, actions: torch.Tensor, *, steps: int = 10,
             batch_size: int = 256, seed: int = 0) -> torch.Tensor:
    """Clips (N, T, C, h, w) from first frames (N, C, h, w) and actions (N, T): `steps` Euler steps of dx/dt = v
    from noise at t = 1 to t = 0 (minigen.diffusion.fm_sample's loop; the condition here is a pair, not labels),
    in eval mode, the noise drawn once from `seed` (the same clips however they are batched). Frame 0 of the result
    is the model's own frame 0: it is shown the true one, and notebook 09 measures how well it copies it."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    shape = (len(first_frame), *flow.model.video_shape)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(first_frame.device)
    ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
    was = flow.training
    flow.eval()
    try:
        out = []
        for i in range(0, len(noise), batch_size):
            x, y = noise[i:i + batch_size], (first_frame[i:i + batch_size], actions[i:i + batch_size])
            for t, t_next in zip(ts[:-1], ts[1:]):
                x = x + (t_next - t) * flow(x, torch.full((len(x),), t, device=x.device), y)   # dt < 0
            out.append(x)
    finally:
        flow.train(was)
    return torch.cat(out).clamp(-1, 1)


def clip_attention_flops(T: int, S: int, dim: int, *, factorized: bool) -> float:
    """FLOPs of the attention products (QK^T and PV, 2 per multiply-add) of one clip of T frames of S tokens at
    width dim: full 3-D attention 4 (T S)^2 dim; factorized (time + space) 4 (T S^2 + S T^2) dim."""
    if factorized:
        return 4.0 * (T * S * S + S * T * T) * dim
    return 4.0 * (T * S) ** 2 * dim


def block_flops(T: int, S: int, dim: int, mlp_ratio: float = 4.0, *, factorized: bool) -> float:
    """FLOPs of one block on one clip: its linear layers (qkv + output projection 4 dim^2 per token per attention,
    the MLP 2 ratio dim^2 per token; 2 FLOPs per multiply-add) plus `clip_attention_flops`. The factorized block has two
    attentions, so it pays 4 dim^2 per token more in projections to save the (T S)^2 products (the 9 or 6 adaLN
    vectors per frame and the norms are not counted)."""
    n = T * S
    attentions = 2 if factorized else 1
    return (2.0 * n * (4 * attentions + 2 * mlp_ratio) * dim ** 2
            + clip_attention_flops(T, S, dim, factorized=factorized))


__all__ = ["VideoDiT", "VideoDiTConfig", "VIDEO_PRESETS", "MOVES", "ATTENTIONS", "PREDICTIONS", "VideoFlowMatching",
           "generate", "clip_attention_flops", "block_flops", "init_weights", "num_parameters"]
