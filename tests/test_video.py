"""Notebook 09's video pieces: the video DiT's tubelet round trip, the factorized block at T = 1, the FLOPs formulas
against PyTorch's counter, clear errors for wrong shapes, the frame judge on real clips, and a short training run."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from minigen.data.video import make_moving_shapes
from minigen.models.frame_judge import FRAME_JUDGE_PRESETS, FrameJudge
from minigen.models.video import (MOVES, VIDEO_PRESETS, VideoDiT, VideoDiTConfig, VideoFlowMatching, block_flops,
                                  clip_attention_flops, generate)
from minigen.nn import SpaceTimeBlock, modulate, timestep_embedding
from minigen.recipes import recipe
from minigen.patches import tubeletify, untubeletify
from minigen.train import TrainConfig, Trainer

ODD = VideoDiTConfig(frames=6, channels=3, size=12, patch_size=3, tubelet=2, dim=24, depth=2, heads=3)


def moved(model: VideoDiT) -> VideoDiT:
    """The model with its zero-initialised layers moved off zero, so every part shows in the output."""
    with torch.no_grad():
        for layer in [model.final.linear, model.final.adaln[-1]] + [b.adaln[-1] for b in model.blocks]:
            layer.weight.normal_(std=0.05)
            layer.bias.normal_(std=0.05)
    return model


def condition(config, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    first = torch.rand(B, config.channels, config.size, config.size, generator=g) * 2 - 1
    return first, torch.randint(0, config.num_actions, (B, config.frames), generator=g)


@pytest.mark.parametrize("config", [ODD, VIDEO_PRESETS["VideoDiT-T"], VIDEO_PRESETS["VideoDiT-T-full"],
                                    VideoDiTConfig(dim=32, depth=1, heads=2, action_input="tokens")],
                         ids=["odd", "T", "T-full", "tokens"])
def test_shapes_and_zero_prediction_at_init(config):
    model = VideoDiT(config)
    x = torch.randn(2, *model.video_shape)
    out = model(x, torch.tensor([0.0, 999.0]), condition(config, 2))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))        # the final layer starts at zero
    moved(model)
    assert model(x, torch.tensor([0.0, 999.0]), condition(config, 2)).abs().sum() > 0


def test_tubelet_embed_unembed_round_trip():
    """Tokens in the model's layout (B, T', S, pt*p*p*C) come back to the same clip, pixel for pixel, and a token
    holds exactly its tubelet: frames 2..3, rows 3..5, cols 6..8 of an ODD clip are token (1, 1*4 + 2)."""
    c = ODD
    x = torch.randn(2, c.frames, c.channels, c.size, c.size)
    Tp, S = c.grid
    tokens = tubeletify(x, c.tubelet, c.patch_size).view(2, Tp, S, -1)            # (B, T', S, pt*p*p*C)
    back = untubeletify(tokens.reshape(2, Tp * S, -1), c.tubelet, c.patch_size, c.channels, c.frames, c.size, c.size)
    assert torch.equal(back, x)
    block = x[:, 2:4, :, 3:6, 6:9].permute(0, 1, 3, 4, 2).reshape(2, -1)           # (dt, dy, dx, C) order
    assert torch.equal(tokens[:, 1, 1 * (c.size // c.patch_size) + 2], block)


def test_factorized_block_with_one_frame_is_spatial_attention():
    """At T = 1 the temporal softmax has one key: that branch is proj(v(LN x)), and the rest of the block is a
    spatial transformer block (attention over the frame's S tokens, then the MLP) with the same weights."""
    torch.manual_seed(0)
    dim, heads, B, S = 24, 3, 2, 7
    block = SpaceTimeBlock(dim, heads, cond_dim=dim)
    with torch.no_grad():
        block.adaln[-1].weight.normal_(std=0.1)
        block.adaln[-1].bias.normal_(std=0.1)
    x, c = torch.randn(B, 1, S, dim), torch.randn(B, dim)
    got = block(x, c)
    # by hand: the same three branches, the temporal one as its value path
    sh_t, sc_t, g_t, sh_s, sc_s, g_s, sh_m, sc_m, g_m = block.adaln(c).chunk(9, dim=1)
    norm = torch.nn.functional.layer_norm
    h = x[:, 0]                                                                     # (B, S, dim)
    v = block.qkv_t(modulate(norm(h, (dim,), eps=1e-6), sh_t, sc_t))[..., 2 * dim:]  # the value third
    h = h + g_t[:, None] * block.proj_t(v)
    h = h + g_s[:, None] * block.attn_s(modulate(norm(h, (dim,), eps=1e-6), sh_s, sc_s))   # plain attention on S
    h = h + g_m[:, None] * block.mlp(modulate(norm(h, (dim,), eps=1e-6), sh_m, sc_m))
    assert torch.allclose(got[:, 0], h, atol=1e-5), (got[:, 0] - h).abs().max()


@pytest.mark.parametrize("T,S", [(4, 9), (1, 16), (8, 3)])
def test_flops_formulas_match_counted_einsums(T, S):
    dim, B = 16, 1
    q = k = v = torch.randn(B, T * S, dim)
    with FlopCounterMode(display=False) as counter:                                # full: every pair of T*S tokens
        torch.einsum("bnd,bmd->bnm", q, k).softmax(-1).matmul(v)
    assert counter.get_total_flops() == clip_attention_flops(T, S, dim, factorized=False)
    x = q.view(B, T, S, dim)
    with FlopCounterMode(display=False) as counter:                                # space within a frame, time across
        torch.einsum("btsd,btud->btsu", x, x).softmax(-1).matmul(x)
        xt = x.transpose(1, 2)                                                     # (B, S, T, dim)
        torch.einsum("bstd,bsud->bstu", xt, xt).softmax(-1).matmul(xt)
    assert counter.get_total_flops() == clip_attention_flops(T, S, dim, factorized=True)
    # the blocks: counted on the real modules on the readable attention (PyTorch's counter does not see into the
    # CPU's fused SDPA); no conditioning; norms and activations are not FLOPs here
    blocks = {False: SpaceTimeBlock(dim, 2, backend="reference", attention="full"),
              True: SpaceTimeBlock(dim, 2, backend="reference")}
    for factorized, block in blocks.items():
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            block(x)
        assert counter.get_total_flops() == block_flops(T, S, dim, factorized=factorized), factorized


def test_wrong_inputs_are_named():
    model = VideoDiT(VIDEO_PRESETS["VideoDiT-T"])
    c = model.config
    x, t = torch.randn(2, *model.video_shape), torch.zeros(2)
    with pytest.raises(ValueError, match=r"videos of shape \(B, T, C, h, w\)"):
        model(torch.randn(2, 3, 32, 32), t, condition(c, 2))                         # an image, not a clip
    with pytest.raises(ValueError, match="videos of shape"):
        model(torch.randn(2, 4, 3, 32, 32), t, condition(c, 2))                      # 4 frames, not 8
    with pytest.raises(ValueError, match="first frames"):
        model(x, t, (torch.randn(2, 1, 32, 32), condition(c, 2)[1]))
    with pytest.raises(ValueError, match=r"int64 of shape \(B, T\)"):
        model(x, t, (condition(c, 2)[0], torch.zeros(2, 5, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"actions must be in 0\.\.4"):
        model(x, t, (condition(c, 2)[0], torch.full((2, 8), 7)))
    with pytest.raises(ValueError, match="pair"):
        model(x, t, torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="timesteps"):
        model(x, torch.zeros(3), condition(c, 2))
    with pytest.raises(ValueError, match="float videos"):
        model(x.long(), t, condition(c, 2))
    with pytest.raises(ValueError, match="tubelet"):
        VideoDiTConfig(frames=8, tubelet=3)
    with pytest.raises(ValueError, match=r"\(B, T, S, 24\)"):
        SpaceTimeBlock(24, 3)(torch.randn(2, 7, 24))


def test_space_time_block_takes_one_condition_per_frame():
    """c (B, T, C) modulates each frame with its own vector: the same c on every frame equals c (B, C), and a
    different c on the last frame changes the last frame most (temporal attention carries a little to the others)."""
    torch.manual_seed(0)
    block = SpaceTimeBlock(16, 2, cond_dim=16)
    with torch.no_grad():
        block.adaln[-1].weight.normal_(std=0.2)
    x, c = torch.randn(2, 4, 5, 16), torch.randn(2, 16)
    assert torch.allclose(block(x, c), block(x, c[:, None].expand(2, 4, 16)), atol=1e-6)
    per_frame = c[:, None].repeat(1, 4, 1)
    per_frame[:, -1] += 1.0
    change = (block(x, per_frame) - block(x, c)).abs().mean(dim=(0, 2, 3))           # (T,)
    assert change[-1] > 3 * change[0]
    with pytest.raises(ValueError, match="per frame"):
        block(x, torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="'factorized' or 'full'"):
        SpaceTimeBlock(16, 2, attention="divided")


def test_actions_reach_each_frame_as_a_running_total():
    """Frame 0 sees no action; frame t sees the sum of the embeddings of actions 0 .. t-1 (tubelets: their first)."""
    model = VideoDiT(VideoDiTConfig(dim=16, depth=1, heads=2, tubelet=2))
    actions = torch.tensor([[1, 2, 3, 4, 0, 1, 1, 2]])
    e = model.action_embed.weight
    got = model.action_tokens(actions)                                             # (1, 4, 16)
    want = torch.stack([torch.zeros(16), e[1] + e[2], e[1] + e[2] + e[3] + e[4], e[[1, 2, 3, 4, 0, 1]].sum(0)])
    assert torch.allclose(got[0], want, atol=1e-6)


def test_actions_reach_each_frame_with_the_displacement_they_command():
    """With action_deltas (every preset), frame t also gets the MLP of sine-cosine features of the displacement that
    actions 0 .. t-1 command: here checked against displacements added up by hand."""
    model = VideoDiT(VideoDiTConfig(dim=16, depth=1, heads=2, action_deltas=MOVES))
    codes = []
    model.motion = torch.nn.Identity()
    model.motion.register_forward_hook(lambda module, args, out: codes.append(out))
    actions = torch.tensor([[1, 1, 4, 0, 2, 3, 3, 4]])                             # up, up, right, stay, down, ...
    model.action_tokens(actions)
    by_hand = [(0, 0), (-2, 0), (-4, 0), (-4, 2), (-4, 2), (-2, 2), (-2, 0), (-2, -2)]   # before frames 0 .. 7
    d = torch.tensor(by_hand, dtype=torch.float32)
    want = torch.cat([timestep_embedding(d[:, i] * 8, 8) for i in range(2)], dim=-1)   # (T, 16)
    assert torch.allclose(codes[0][0], want, atol=1e-6)
    with pytest.raises(ValueError, match="action_deltas"):
        VideoDiTConfig(action_deltas=MOVES[:3])


def test_untrained_flow_copies_the_first_frame():
    """x-prediction as the first frame plus a change: at init (the change is 0) the clean clip is the first frame
    repeated, and the sampler's velocity is (x_t - first frame) / t."""
    flow = VideoFlowMatching(VideoDiT(VIDEO_PRESETS["VideoDiT-T"]))
    data = make_moving_shapes(3, seed=5, frames=8, channels=3)
    first, x_t, t = data.videos[:, 0], torch.randn(3, 8, 3, 32, 32), torch.tensor([0.2, 0.5, 0.9])
    y = (first, data.actions)
    repeated = first[:, None].expand_as(x_t)
    assert torch.equal(flow.clean(x_t, t, y), repeated)
    assert torch.allclose(flow(x_t, t, y), (x_t - repeated) / t.view(-1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"\(videos"):
        flow.loss(data.videos)


def test_recipes_build_the_video_models():
    flow, full = recipe("video", "ci").build(), recipe("video-full", "ci").build()
    assert isinstance(flow, VideoFlowMatching) and flow.config.attention == "factorized"
    assert isinstance(full, VideoFlowMatching) and full.config.attention == "full"
    assert isinstance(recipe("frame-judge", "ci").build(), FrameJudge)
    assert recipe("video", "cpu").preset == "VideoDiT-S" and recipe("video-full", "cpu").preset == "VideoDiT-S-full"


def test_presets_know_what_the_actions_mean():
    """The presets' action_deltas are minigen.data.video's ACTION_DELTAS at the default step of 2 pixels (a model
    file may not import the data module, so the table is written there twice; this keeps the copies equal)."""
    from minigen.data.video import ACTION_DELTAS
    step = make_moving_shapes(1).step
    want = tuple((step * dr, step * dc) for dr, dc in ACTION_DELTAS)
    for name, config in VIDEO_PRESETS.items():
        assert config.action_deltas == want, name


def test_frame_judge_learns_to_read_real_frames_and_scores_real_clips():
    torch.manual_seed(0)
    data = make_moving_shapes(400, seed=1, frames=4, channels=3)
    frames = data.videos.flatten(0, 1)
    shape, color = data.shape.repeat_interleave(4), data.color.repeat_interleave(4)
    judge = FrameJudge(FRAME_JUDGE_PRESETS["FrameJudge-B"])
    Trainer(judge, (frames, shape, color, data.positions.flatten(0, 1).float()),
            TrainConfig(steps=150, batch_size=64, lr=3e-3, warmup=15, cosine=True, log_every=50)).fit()
    test = make_moving_shapes(100, seed=2, frames=4, channels=3)
    real = judge.score(test.videos, test.shape, test.color, test.positions)
    print(real)
    assert real["shape_kept"] > 0.8 and real["color_kept"] > 0.9 and real["centre_error"] < 3.0
    # shuffling each clip's frames keeps shape and colour but breaks the motion: a larger velocity error
    order = torch.stack([torch.randperm(4, generator=torch.Generator().manual_seed(i)) for i in range(100)])
    shuffled = test.videos[torch.arange(100)[:, None], order]
    assert judge.score(shuffled, test.shape, test.color, test.positions)["velocity_error"] > \
        real["velocity_error"] + 1.0
    with pytest.raises(ValueError, match="positions"):
        judge.score(test.videos, test.shape, test.color, test.positions[:, :3])


def test_a_short_run_learns_and_generates():
    """A few dozen steps of VideoDiT-T on moving shapes lower the flow-matching loss measured on fixed noise and
    times (at step 0 it is the copy-the-first-frame error); generation is seeded and batch-independent."""
    torch.manual_seed(0)
    data = make_moving_shapes(64, seed=3, frames=8, channels=3)
    flow = VideoFlowMatching(VideoDiT(VIDEO_PRESETS["VideoDiT-T"]))

    def fixed_loss():
        with torch.random.fork_rng():
            torch.manual_seed(7)
            with torch.no_grad():
                return flow.loss((data.videos, data.actions))["loss"].item()

    before = fixed_loss()
    Trainer(flow, (data.videos, data.actions), TrainConfig(steps=40, batch_size=16, lr=3e-3, warmup=3,
                                                            log_every=10)).fit()
    after = fixed_loss()
    print(f"fixed-noise loss {before:.4f} -> {after:.4f}")
    assert after < 0.9 * before
    a = generate(flow, data.videos[:6, 0], data.actions[:6], steps=3, batch_size=6, seed=1)
    b = generate(flow, data.videos[:6, 0], data.actions[:6], steps=3, batch_size=4, seed=1)
    assert a.shape == (6, 8, 3, 32, 32) and torch.allclose(a, b, atol=1e-5)
