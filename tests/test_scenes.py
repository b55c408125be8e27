"""Scenes (minigen.data.scenes): deterministic and nested, captions exactly true of the pixels, the held-out
colour-shape pairs kept out of training, short captions true but incomplete, and the scenes' tokenizer."""
import re

import pytest
import torch

from minigen.data import scenes as S
from minigen.data.shapes import CENTERS, RGB

N = 600
SCENES = S.make_scenes(N, seed=3)
OBJECT = re.compile(r"a (small|large) (\w+) (\w+) in the (top left|top right|bottom left|bottom right|center)")


def test_deterministic_nested_and_in_range():
    again = S.make_scenes(N, seed=3)
    first = S.make_scenes(50, seed=3)
    assert torch.equal(again.images, SCENES.images) and again.captions == SCENES.captions
    assert torch.equal(first.images, SCENES.images[:50]) and first.short == SCENES.short[:50]
    assert not torch.equal(S.make_scenes(50, seed=4).images, first.images)
    assert SCENES.images.shape == (N, 3, 32, 32) and SCENES.images.min() >= -1 and SCENES.images.max() <= 1


def test_every_attribute_value_and_count_appears_in_the_captions():
    words = set(" ".join(SCENES.captions).split())
    for values in (S.SHAPES, S.COLORS, S.SIZES, ("top", "bottom", "left", "right", "center")):
        assert set(" ".join(values).split()) <= words
    assert set(SCENES.count.tolist()) == {1, 2, 3}
    assert {s.split()[-1] for s in SCENES.short} >= set(S.SHAPES)


def test_the_full_caption_parsed_back_is_the_scene():
    for i in range(N):
        parsed = OBJECT.findall(SCENES.captions[i])
        assert " and ".join(f"a {a} {b} {c} in the {d}" for a, b, c, d in parsed) == SCENES.captions[i]
        assert parsed == SCENES.objects(i)
        positions = [p for *_, p in parsed]
        assert len(set(positions)) == len(positions) == int(SCENES.count[i])


def _centre_pixel(images, slot):
    """The brightest pixel of the 4 x 4 block around a slot's centre: one a shape there covers fully."""
    x, y = CENTERS[slot]
    col, row = int((x + 1) / 2 * 32), int((y + 1) / 2 * 32)
    block = (images[:, :, row - 2:row + 2, col - 2:col + 2] + 1) / 2        # (N, 3, 4, 4) in [0, 1]
    best = block.sum(1).flatten(1).argmax(1)                                 # (N,)
    return block.flatten(2)[torch.arange(len(images)), :, best]              # (N, 3)


def test_the_pixels_show_what_the_caption_says():
    """Each named object's colour at its slot's centre, black at every slot the caption leaves empty, and its
    size readable from its area within 5 px of the slot (every small shape smaller than every large one of the same
    kind; a neighbour never reaches that disc)."""
    rgb = torch.tensor(RGB)
    areas = {}
    for slot in range(len(S.POSITIONS)):
        pixel = _centre_pixel(SCENES.images, slot)
        here = SCENES.position == slot                                       # (N, 3)
        has = here.any(1)
        assert pixel[~has].abs().max() < 0.05                                # empty slots are black
        j = here.float().argmax(1)[has]
        rows = has.nonzero().squeeze(1)
        color = SCENES.color[rows, j]
        nearest = torch.cdist(pixel[rows], rgb).argmin(1)                    # the palette colour it shows
        assert torch.equal(nearest, color) and (pixel[rows] - rgb[color]).abs().max() < 0.1
        x, y = CENTERS[slot]
        ticks = torch.arange(32) + 0.5 - 16                                   # pixel centres, in pixels from the middle
        near = (ticks[None, :] - x * 16) ** 2 + (ticks[:, None] - y * 16) ** 2 <= 25   # (H, W): within 5 px
        area = ((SCENES.images[rows] + 1) / 2).amax(1)[:, near].sum(1)       # coverage-weighted pixels there
        for k, a in zip(zip(SCENES.shape[rows, j].tolist(), SCENES.scale[rows, j].tolist()), area.tolist()):
            areas.setdefault(k, []).append(a)
    for shape in range(len(S.SHAPES)):
        assert max(areas[(shape, 0)]) < min(areas[(shape, 1)]), S.SHAPES[shape]


def test_held_out_pairs_stay_out_of_training_and_fill_the_heldout_split():
    pairs = {(c, s) for c, s in S.HELD_OUT}
    train = S.make_scenes(2000, seed=0)
    seen = {(S.COLORS[c], S.SHAPES[s]) for c, s in zip(train.color.flatten().tolist(), train.shape.flatten().tolist())
            if c >= 0}
    assert not seen & pairs and len(seen) == len(S.COLORS) * len(S.SHAPES) - len(pairs)
    held = S.make_scenes(200, seed=0, split="heldout")
    firsts = {(S.COLORS[c], S.SHAPES[s]) for c, s in zip(held.color[:, 0].tolist(), held.shape[:, 0].tolist())}
    assert firsts == pairs
    with pytest.raises(ValueError, match="split 'test'"):
        S.make_scenes(5, split="test")


def test_short_captions_are_true_but_leave_things_out():
    for i in range(N):
        objects, short = SCENES.objects(i), SCENES.short[i]
        full = [f"a {a} {b} {c} in the {d}" for a, b, c, d in objects]
        assert short in (f"a {objects[0][1]} {objects[0][2]}", " and ".join(f"a {o[2]}" for o in objects), full[0])
    assert sum(s != c for s, c in zip(SCENES.short, SCENES.captions)) > N // 2


def test_tokenizer_round_trip_and_clear_errors():
    tokens = S.tokenize_scenes(SCENES.captions + SCENES.short)
    assert tokens.shape == (2 * N, S.SCENE_CONTEXT) and tokens.dtype == torch.long
    assert S.detokenize_scenes(tokens) == SCENES.captions + SCENES.short
    assert max(len(c.split()) for c in SCENES.captions) <= S.SCENE_CONTEXT
    with pytest.raises(ValueError, match="unknown word 'purple'.*vocabulary is a in the"):
        S.tokenize_scenes("a small purple circle in the center")
    with pytest.raises(ValueError, match="at most 3 fit"):
        S.tokenize_scenes("a red circle and", length=3)


def test_parse_caption_reads_full_and_short_captions_and_quotes_a_bad_phrase():
    for i in range(50):
        objects = S.parse_caption(SCENES.captions[i])
        assert [(o["size"], o["color"], o["shape"], o["position"]) for o in objects] == SCENES.objects(i)
    assert S.parse_caption("a circle and a red square") == [
        {"shape": "circle", "color": None, "size": None, "position": None},
        {"shape": "square", "color": "red", "size": None, "position": None}]
    with pytest.raises(ValueError, match="cannot read 'a small red in the center'"):
        S.parse_caption("a large blue cross in the top left and a small red in the center")


def test_score_captions_counts_true_and_complete_statements():
    scenes = S.make_scenes(200, seed=4)
    perfect = S.score_captions(scenes.captions, scenes)
    assert perfect["exact"] == perfect["precision"] == perfect["all_four"] == perfect["count"] == 1.0
    short = S.score_captions(scenes.short, scenes)
    assert short["precision"] == 1.0 and short["recall"]["shape"] < 1.0 and short["all_four"] < 0.5
    # one scene by hand: two objects; the caption gets one colour wrong and invents a third object
    one = next(i for i in range(len(scenes)) if scenes.count[i] == 2)
    (s0, c0, h0, p0), (s1, c1, h1, p1) = scenes.objects(one)
    wrong = "red" if c1 != "red" else "blue"
    free = next(p for p in ("top left", "top right", "bottom left", "bottom right", "center") if p not in (p0, p1))
    caption = (f"a {s0} {c0} {h0} in the {p0} and a {s1} {wrong} {h1} in the {p1} and a small red cross in the "
               f"{free}")
    sub = S.Scenes(scenes.images[[one]], [scenes.captions[one]], [scenes.short[one]], scenes.count[[one]],
                   scenes.shape[[one]], scenes.color[[one]], scenes.scale[[one]], scenes.position[[one]])
    got = S.score_captions([caption], sub)
    assert got["recall"] == {"shape": 1.0, "color": 0.5, "size": 1.0, "position": 1.0} and got["all_four"] == 0.5
    assert got["precision"] == 7 / 12 and got["count"] == 0.0 and got["exact"] == 0.0  # 7 of 12 stated values true
    assert S.score_captions(["a small red in the"], sub)["readable"] == 0.0
    with pytest.raises(ValueError, match="2 captions for 1 scenes"):
        S.score_captions([caption, caption], sub)


def test_subset_and_one_word_changed():
    scenes = S.make_scenes(40, seed=6)
    keep = (scenes.count == 2).nonzero().squeeze(1)
    part = scenes.subset(keep)
    assert len(part) == len(keep) and (part.count == 2).all()
    assert part.captions == [scenes.captions[i] for i in keep.tolist()]
    assert torch.equal(part.images, scenes.images[keep])
    assert scenes.subset(scenes.count == 2).captions == part.captions          # a bool mask picks the same scenes
    changed, which = S.one_word_changed(scenes, seed=1)
    assert changed == S.one_word_changed(scenes, seed=1)[0]                       # seeded
    for i, (c, a) in enumerate(zip(changed, which)):
        s = S.score_captions([c], scenes.subset([i]))
        assert c != scenes.captions[i] and s["count"] == 1 and s["precision"] < 1, (c, scenes.captions[i])
        # exactly one stated value is wrong, and it is of the attribute named
        objects = int(scenes.count[i])
        assert s["recall"][a] == (objects - 1) / objects and all(s["recall"][b] == 1 for b in s["recall"] if b != a)
