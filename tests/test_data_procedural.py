"""The procedural sets: shapes, ranges, determinism, captions that tell the truth, fair independent
attributes, and video dynamics that follow the documented rule exactly."""
import math

import pytest
import torch

from minigen.data.faces import ATTRIBUTES, Faces, make_faces
from minigen.data.shapes import (COLORS, POSITIONS, SHAPES, SIZES, VOCAB, CaptionedShapes, caption_for,
                                 make_shapes, tokenize)
from minigen.data.toy2d import TOY2D, sample_toy2d, toy2d_log_prob
from minigen.data.video import ACTION_DELTAS, ACTIONS, MovingShapes, apply_action, make_moving_shapes

IMAGE_SETS = {"shapes": lambda n, seed=0: make_shapes(n, seed).images,
              "faces": lambda n, seed=0: make_faces(n, seed).images,
              "video": lambda n, seed=0: make_moving_shapes(n, seed, frames=4, channels=3).videos}


# ----------------------------------------------------------------------------- toy 2-D

@pytest.mark.parametrize("name", TOY2D)
def test_toy2d_shape_range_and_determinism(name):
    x = sample_toy2d(name, 2000, seed=1)
    assert x.shape == (2000, 2) and x.dtype == torch.float32
    assert x.abs().max() < 4.5, "toy sets live roughly in [-4, 4]"
    assert x.mean(0).abs().max() < 0.25, "toy sets are roughly centred"
    assert torch.equal(x, sample_toy2d(name, 2000, seed=1))
    assert not torch.equal(x, sample_toy2d(name, 2000, seed=2))
    assert torch.equal(x[:100], sample_toy2d(name, 100, seed=1)), "smaller sets are prefixes of larger ones"


@pytest.mark.parametrize("name", ["eight_gaussians", "checkerboard"])
def test_toy2d_log_prob_is_a_normalised_density_that_covers_the_samples(name):
    grid = torch.linspace(-6, 6, 401, dtype=torch.float64)
    points = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1)      # (401, 401, 2)
    mass = toy2d_log_prob(name, points).exp().sum() * (12 / 400) ** 2         # Riemann sum
    assert abs(mass.item() - 1) < 0.02
    assert torch.isfinite(toy2d_log_prob(name, sample_toy2d(name, 1000))).all()


def test_toy2d_checkerboard_density_values():
    x = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [4.5, 0.0]])
    assert toy2d_log_prob("checkerboard", x).tolist() == pytest.approx([-math.log(32), -math.inf, -math.inf])


@pytest.mark.parametrize("name", ["two_moons", "swiss_roll"])
def test_toy2d_log_prob_says_when_there_is_no_closed_form(name):
    with pytest.raises(NotImplementedError, match=name):
        toy2d_log_prob(name, torch.zeros(3, 2))


# ----------------------------------------------------------------------------- images and videos

@pytest.mark.parametrize("name", IMAGE_SETS)
def test_images_in_range_and_deterministic(name):
    make = IMAGE_SETS[name]
    x = make(64, seed=3)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert x.min() == -1 or name == "faces", "shapes and videos have a black background"
    assert torch.equal(x, make(64, seed=3))
    assert not torch.equal(x, make(64, seed=4))
    assert torch.equal(x[:10], make(10, seed=3)), "smaller sets are prefixes of larger ones"


def test_generators_leave_the_global_rng_alone():
    state = torch.get_rng_state()
    sample_toy2d("two_moons", 10), make_shapes(4), make_faces(4), make_moving_shapes(2)
    assert torch.equal(state, torch.get_rng_state())


def test_shapes_layout_and_captions_match_attributes():
    data = make_shapes(500, seed=0, size=24)
    assert isinstance(data, CaptionedShapes) and len(data) == 500
    assert data.images.shape == (500, 3, 24, 24)
    for attr, vocab in [(data.shape, SHAPES), (data.color, COLORS), (data.scale, SIZES), (data.position, POSITIONS)]:
        assert attr.shape == (500,) and attr.dtype == torch.int64
        assert set(attr.tolist()) == set(range(len(vocab))), "every value occurs in 500 samples"
    for i in range(500):
        words = (data.shape[i], data.color[i], data.scale[i], data.position[i])
        assert data.captions[i] == caption_for(*words)
        caption = data.captions[i]
        assert SHAPES[words[0]] in caption and COLORS[words[1]] in caption and caption.endswith(POSITIONS[words[3]])
    assert caption_for(1, 2, 1, 4) == "a large blue square in the center"
    assert CaptionedShapes.SHAPES == SHAPES and CaptionedShapes.POSITIONS == POSITIONS


def test_shapes_images_show_their_attributes():
    data = make_shapes(400, seed=5)
    lit = (data.images > -0.9).any(1).float()                                 # (N, H, W) shape pixels
    area = lit.mean((1, 2))
    for kind in range(len(SHAPES)):
        large, small = area[(data.shape == kind) & (data.scale == 1)], area[(data.shape == kind) & (data.scale == 0)]
        assert large.min() > small.max(), f"a large {SHAPES[kind]} covers more than a small one"
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cy = (lit * ys).sum((1, 2)) / lit.sum((1, 2))
    cx = (lit * xs).sum((1, 2)) / lit.sum((1, 2))
    top_left = data.position == POSITIONS.index("top left")
    assert (cx[top_left] < 14).all() and (cy[top_left] < 14).all()
    border = torch.cat([data.images[..., 0, :], data.images[..., -1, :], data.images[..., 0], data.images[..., -1]], -1)
    assert (border == -1).all(), "every shape lies wholly inside its image"
    brightest = data.images.amax((2, 3)).argmax(1)                            # (N,) channel 0, 1, 2
    red, blue = data.color == COLORS.index("red"), data.color == COLORS.index("blue")
    assert (brightest[red] == 0).all() and (brightest[blue] == 2).all()


def test_tokenize():
    tokens = tokenize(["a small red circle in the top left", "A large blue square in the center"])
    assert tokens.shape == (2, 8) and tokens.dtype == torch.long
    assert [VOCAB[i] for i in tokens[1]] == ["a", "large", "blue", "square", "in", "the", "center", "<pad>"]
    assert torch.equal(tokenize("a small red circle in the top left"), tokens[:1])
    assert tokenize(make_shapes(50).captions).shape == (50, 8)
    with pytest.raises(ValueError, match="purple"):
        tokenize(["a purple circle"])
    with pytest.raises(ValueError, match="words"):
        tokenize(["a small red circle in the top left"], length=4)


def test_face_attributes_are_fair_independent_coins():
    data = make_faces(2000, seed=0, size=24)
    assert isinstance(data, Faces) and data.images.shape == (2000, 3, 24, 24)
    a = data.attributes
    assert a.shape == (2000, len(ATTRIBUTES)) and a.dtype == torch.float32
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert ((a.mean(0) - 0.5).abs() < 0.04).all()
    corr = torch.corrcoef(a.T) - torch.eye(len(ATTRIBUTES))
    assert corr.abs().max() < 0.08
    assert torch.equal(data.attribute("hat"), a[:, ATTRIBUTES.index("hat")])


@pytest.mark.parametrize("name", ATTRIBUTES)
def test_each_face_attribute_changes_the_picture(name):
    """Flip one attribute with everything else fixed: the image must change where the feature is."""
    data = make_faces(200, seed=0)
    column = ATTRIBUTES.index(name)
    on, off = data.attributes[:, column] == 1, data.attributes[:, column] == 0
    mean_on, mean_off = data.images[on].mean(0), data.images[off].mean(0)
    assert (mean_on - mean_off).abs().amax() > 0.3, f"{name} should be plainly visible"


def test_video_layout_and_sticky_actions():
    data = make_moving_shapes(300, seed=0, frames=12, size=24, channels=1)
    assert isinstance(data, MovingShapes) and data.videos.shape == (300, 12, 1, 24, 24)
    assert data.actions.shape == (300, 12) and data.actions.dtype == torch.int64
    assert data.positions.shape == (300, 12, 2) and data.positions.dtype == torch.int64
    assert set(data.actions.unique().tolist()) == set(range(len(ACTIONS)))
    repeats = (data.actions[:, 1:] == data.actions[:, :-1]).float().mean()
    assert 0.6 < repeats < 0.9, "actions persist a few frames"
    assert make_moving_shapes(2, channels=3).videos.shape == (2, 16, 3, 32, 32)


@pytest.mark.parametrize("size,step", [(32, 2), (19, 3)])
def test_video_positions_follow_the_documented_rule(size, step):
    data = make_moving_shapes(200, seed=1, size=size, step=step)
    p, a = data.positions, data.actions
    delta = torch.tensor(ACTION_DELTAS)[a[:, :-1]]                            # (N, T-1, 2)
    assert torch.equal(p[:, 1:], (p[:, :-1] + step * delta).clamp(data.low, data.high))
    assert torch.equal(p[:, 1:], apply_action(p[:, :-1], a[:, :-1], step, data.low, data.high))
    assert (p >= data.low).all() and (p <= data.high).all()
    assert ((p[:, 1:] - p[:, :-1]).abs().sum(-1) > 0).float().mean() > 0.5, "shapes mostly move"


def test_video_next_frame_is_the_frame_shifted_by_the_move():
    """The world-model property: frame t + 1 is frame t moved by the action's (clamped) offset, exactly."""
    data = make_moving_shapes(40, seed=2, channels=3)
    v, p = data.videos, data.positions
    move = p[:, 1:] - p[:, :-1]                                               # (N, T-1, 2)
    for i in range(len(v)):
        for t in range(v.shape[1] - 1):
            shifted = torch.roll(v[i, t], tuple(move[i, t].tolist()), dims=(1, 2))
            assert torch.equal(shifted, v[i, t + 1])
    border = torch.cat([v[..., 0, :], v[..., -1, :], v[..., :, 0], v[..., :, -1]], -1)
    assert (border == -1).all(), "the whole shape stays inside the frame"


# ----------------------------------------------------------------------------- argument checks

@pytest.mark.parametrize("call,argument", [
    (lambda: sample_toy2d("spiral", 10), "name"),
    (lambda: sample_toy2d("two_moons", 0), "n"),
    (lambda: sample_toy2d("two_moons", 10, seed=-1), "seed"),
    (lambda: toy2d_log_prob("nope", torch.zeros(1, 2)), "name"),
    (lambda: toy2d_log_prob("checkerboard", torch.zeros(1, 3)), "x"),
    (lambda: make_shapes(-1), "n"),
    (lambda: make_shapes(4, size=20), "size"),
    (lambda: make_shapes(2.5), "n"),
    (lambda: make_faces(0), "n"),
    (lambda: make_faces(4, size=16), "size"),
    (lambda: make_moving_shapes(0), "n"),
    (lambda: make_moving_shapes(2, frames=1), "frames"),
    (lambda: make_moving_shapes(2, size=8), "size"),
    (lambda: make_moving_shapes(2, channels=2), "channels"),
    (lambda: make_moving_shapes(2, step=0), "step"),
    (lambda: make_faces(2).attribute("beard"), "name"),
])
def test_bad_arguments_are_named(call, argument):
    with pytest.raises(ValueError, match=rf"^{argument} "):
        call()
