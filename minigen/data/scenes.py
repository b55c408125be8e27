"""Scenes: one to three captioned shapes in an image, each described twice, carefully and carelessly.

Notebook 10 (a tiny CLIP, the CLIP score, a captioner, recaptioning) and notebook 11 (text-to-image) learn from
this set. Every object is a shape of captioned shapes (minigen/data/shapes.py): a shape, a colour, a size and one
of the five positions, no two objects at one position. Each scene has two captions:

    full    names every object, in the order of POSITIONS:
            "a small red circle in the top left and a large blue square in the center"
    short   what a careless annotator writes (DALL-E 3's motivation, Betker et al. 2023): one object without its
            size and position ("a red circle"), the shapes without their colours ("a circle and a square"), or
            one object in full ("a small red circle in the top left")

Both are true of the image; only the full one pins it down. For compositional tests, four colour-shape pairs
(HELD_OUT) never appear in the "train" split; in the "heldout" split the first object is always one of them and
the others are not. Deterministic and nested, like every procedural set: the first m scenes of
`make_scenes(n, seed, split=s)` are `make_scenes(m, seed, split=s)`.

    scenes = make_scenes(10_000, seed=0)          # Scenes: images (N, 3, 32, 32) in [-1, 1], captions, short
    scenes.shape[:, 0], scenes.count              # attribute indices per object slot (-1: no object), 1..3
    score_captions(captions, scenes)              # how true and how complete any captions are of these scenes
    scene_cells(scenes), caption_cells(cells)     # the scene judge's per-position layout, and back to captions
"""
import itertools
import re
from dataclasses import dataclass
from typing import Sequence

import torch

from .shapes import (CENTERS, COLORS, POSITIONS, RGB, SHAPES, SIZES, VOCAB, AttributeNames, check_int, chunked,
                     paint, pick, pixel_grid, shape_alpha, tokenize, uniform_table)

MAX_OBJECTS = 3
SCENE_RADII = (0.17, 0.25)  # small, large: two large squares at a corner and the centre, jittered towards each other,
                            # still do not touch (corners reach 1.16 r along a diagonal; centres >= 0.65 apart)
HELD_OUT = (("red", "cross"), ("green", "triangle"), ("blue", "circle"), ("yellow", "square"))  # (colour, shape)
SPLITS = ("train", "heldout", "any")
SCENE_VOCAB = (*VOCAB, "and")
SCENE_CONTEXT = MAX_OBJECTS * 8 + (MAX_OBJECTS - 1)  # three 8-word objects joined by "and": 26 words
SHORT_STYLES = ("colour and shape", "shapes only", "one object")

_HELD = tuple((COLORS.index(c), SHAPES.index(s)) for c, s in HELD_OUT)
_TRAIN_PAIRS = tuple((c, s) for c in range(len(COLORS)) for s in range(len(SHAPES)) if (c, s) not in _HELD)
_ALL_PAIRS = tuple((c, s) for c in range(len(COLORS)) for s in range(len(SHAPES)))
K = 2 + MAX_OBJECTS * 5 + len(POSITIONS)  # uniforms per scene: count, short style, per object 5, slot order


@dataclass
class Scenes(AttributeNames):
    images: torch.Tensor    # (N, 3, H, W) float in [-1, 1]
    captions: list[str]     # N full captions: every object, in the order of POSITIONS
    short: list[str]        # N short captions: true, but leave things out
    count: torch.Tensor     # (N,) int64 objects in the scene, 1..MAX_OBJECTS
    shape: torch.Tensor     # (N, MAX_OBJECTS) int64 index into SHAPES; -1 where a slot has no object
    color: torch.Tensor     # (N, MAX_OBJECTS) int64 index into COLORS, -1 likewise
    scale: torch.Tensor     # (N, MAX_OBJECTS) int64 index into SIZES, -1 likewise
    position: torch.Tensor  # (N, MAX_OBJECTS) int64 index into POSITIONS, increasing along a row; -1 likewise

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device) -> "Scenes":
        return Scenes(self.images.to(device), self.captions, self.short, self.count.to(device),
                      self.shape.to(device), self.color.to(device), self.scale.to(device), self.position.to(device))

    def subset(self, keep) -> "Scenes":
        """The scenes at the indices `keep` (a 1-D index tensor or list, or a bool mask), as a Scenes of their own."""
        keep = torch.as_tensor(keep)
        keep = keep.nonzero().squeeze(1) if keep.dtype == torch.bool else keep.long()
        idx = keep.tolist()
        return Scenes(self.images[keep], [self.captions[i] for i in idx], [self.short[i] for i in idx],
                      *(t[keep] for t in (self.count, self.shape, self.color, self.scale, self.position)))

    def objects(self, i: int) -> list[tuple[str, str, str, str]]:
        """Scene i's objects as (size, colour, shape, position) words, in caption order."""
        return [(SIZES[self.scale[i, j]], COLORS[self.color[i, j]], SHAPES[self.shape[i, j]],
                 POSITIONS[self.position[i, j]]) for j in range(int(self.count[i]))]


def describe_object(shape: int, color: int, scale: int, position: int) -> str:
    """One object in full: "a small red circle in the top left" (the caption of captioned shapes)."""
    return f"a {SIZES[int(scale)]} {COLORS[int(color)]} {SHAPES[int(shape)]} in the {POSITIONS[int(position)]}"


def full_caption(objects: Sequence[tuple[int, int, int, int]]) -> str:
    """Every object, (shape, colour, size, position) indices each, joined by "and"."""
    return " and ".join(describe_object(*o) for o in objects)


def short_caption(objects: Sequence[tuple[int, int, int, int]], style: int) -> str:
    """A careless annotator's caption in one of SHORT_STYLES: true of the scene, but incomplete."""
    if style == 0:
        shape, color = objects[0][:2]
        return f"a {COLORS[color]} {SHAPES[shape]}"
    if style == 1:
        return " and ".join(f"a {SHAPES[o[0]]}" for o in objects)
    return describe_object(*objects[0])


def make_scenes(n: int, seed: int = 0, size: int = 32, split: str = "train") -> Scenes:
    """n scenes of 1..MAX_OBJECTS objects, (n, 3, size, size) in [-1, 1]: a pure function of its arguments."""
    check_int("n", n, 1)
    check_int("size", size, 24)
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: choose one of {SPLITS}")
    u = uniform_table(n, K, seed)                                              # (n, K)
    count = pick(u[:, 0], MAX_OBJECTS) + 1                                     # (n,) 1..3
    style = pick(u[:, 1], len(SHORT_STYLES))                                   # (n,)
    per = u[:, 2:2 + 5 * MAX_OBJECTS].view(n, MAX_OBJECTS, 5)                  # (n, 3, 5): pair, size, jitter x3
    slots = u[:, 2 + 5 * MAX_OBJECTS:].argsort(dim=1)[:, :MAX_OBJECTS]         # (n, 3) distinct random positions
    present = torch.arange(MAX_OBJECTS) < count[:, None]                       # (n, 3)
    slots = torch.where(present, slots, len(POSITIONS)).sort(dim=1).values     # present slots first, in order
    train, every, held = (torch.tensor(p) for p in (_TRAIN_PAIRS, _ALL_PAIRS, _HELD))  # (P, 2) (colour, shape)
    pool = every if split == "any" else train
    pairs = pool[pick(per[..., 0], len(pool))]                                 # (n, 3, 2)
    if split == "heldout":
        pairs[:, 0] = held[pick(per[:, 0, 0], len(held))]                      # the first object: a held-out pair
    color, shape = pairs[..., 0], pairs[..., 1]
    scale = pick(per[..., 1], len(SIZES))
    absent = ~present
    position = slots.masked_fill(absent, -1)
    shape, color, scale = (t.masked_fill(absent, -1) for t in (shape, color, scale))

    images = chunked(lambda *rows: _render(*rows, size), shape, color, scale, position, per[..., 2:])
    rows = torch.stack([shape, color, scale, position], dim=-1).tolist()       # (n, 3, 4) as lists
    objects = [[tuple(o) for o in row[:c]] for row, c in zip(rows, count.tolist())]
    return Scenes(images, [full_caption(o) for o in objects],
                  [short_caption(o, s) for o, s in zip(objects, style.tolist())],
                  count, shape, color, scale, position)


def one_word_changed(scenes: Scenes, seed: int = 0) -> tuple[list[str], list[str]]:
    """Each scene's full caption with one attribute of one object changed to a wrong value (a position only to a free
    cell), and which attribute changed: the near misses of notebook 10's CLIP-score band."""
    g = torch.Generator().manual_seed(seed)
    fields = ("shape", "color", "scale", "position")
    n_values = (len(SHAPES), len(COLORS), len(SIZES), len(POSITIONS))
    out, which = [], []
    for i in range(len(scenes)):
        objs = [list(o) for o in zip(*(getattr(scenes, f)[i, :scenes.count[i]].tolist() for f in fields))]
        j = int(torch.randint(len(objs), (1,), generator=g))
        a = int(torch.randint(4, (1,), generator=g))
        taken = {o[3] for o in objs}
        wrong = [v for v in range(n_values[a]) if v != objs[j][a] and not (a == 3 and v in taken)]
        objs[j][a] = wrong[int(torch.randint(len(wrong), (1,), generator=g))]
        out.append(full_caption(sorted(objs, key=lambda o: o[3])))             # captions list objects by position
        which.append(ATTRIBUTES[a])                                            # defined below, with the parser
    return out, which


def _render(shape, color, scale, position, jitter, size: int) -> torch.Tensor:
    """Objects painted in slot order on black: (n, 3, size, size) in [-1, 1]."""
    n = len(shape)
    x, y = pixel_grid(size)                                                    # (1, H, W) each
    canvas = torch.zeros(n, 3, size, size)
    centers, rgb = torch.tensor(CENTERS), torch.tensor(RGB)
    for j in range(MAX_OBJECTS):
        rows = position[:, j] >= 0
        if not rows.any():
            continue
        k = rows.nonzero().squeeze(1)                                          # (m,) scenes with a j-th object
        centre = centers[position[k, j]] + 0.04 * (jitter[k, j, :2] - 0.5)     # (m, 2) jitter +-0.02
        radius = torch.tensor(SCENE_RADII)[scale[k, j]] * (0.95 + 0.1 * jitter[k, j, 2])  # (m,) +-5 %
        alpha = shape_alpha(shape[k, j], x - centre[:, 0, None, None], y - centre[:, 1, None, None],
                            radius[:, None, None], 2 / size)                   # (m, H, W)
        canvas[k] = paint(canvas[k], alpha, rgb[color[k, j]])
    return canvas * 2 - 1


def tokenize_scenes(captions: str | Sequence[str], length: int = SCENE_CONTEXT) -> torch.Tensor:
    """Scene captions -> (N, length) int64 indices into SCENE_VOCAB, padded with 0 on the right (shapes' tokenizer
    with the scenes' vocabulary: an unknown word or a caption that is too long is a ValueError that names it)."""
    return tokenize(captions, length, SCENE_VOCAB)


def detokenize_scenes(tokens: torch.Tensor) -> list[str]:
    """(N, L) indices into SCENE_VOCAB -> captions, padding dropped: the inverse of tokenize_scenes."""
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (N, L), got shape {tuple(tokens.shape)}")
    return [" ".join(SCENE_VOCAB[i] for i in row if i != 0) for row in tokens.tolist()]


# ----------------------------------------------------------------------------------------------------
# Reading captions back: what a caption states, and how much of a scene it gets right
# ----------------------------------------------------------------------------------------------------

ATTRIBUTES = ("shape", "color", "size", "position")
_PHRASE = re.compile(rf"a(?: ({'|'.join(SIZES)}))?(?: ({'|'.join(COLORS)}))? ({'|'.join(SHAPES)})"
                     rf"(?: in the ({'|'.join(POSITIONS)}))?")


def parse_caption(caption: str) -> list[dict]:
    """The objects a caption states, one dict per phrase joined by "and": {"shape", "color", "size", "position"}
    -> a word, or None where the phrase leaves it out ("a red circle" states no size or position). Reads full and
    short captions alike; a phrase that is no object ("a small red in the") is a ValueError that quotes it."""
    objects = []
    for phrase in caption.split(" and "):
        match = _PHRASE.fullmatch(phrase.strip())
        if match is None:
            raise ValueError(f"cannot read {phrase!r} (in {caption!r}) as 'a [size] [colour] shape [in the position]'")
        size, color, shape, position = match.groups()
        objects.append({"shape": shape, "color": color, "size": size, "position": position})
    return objects


def _match(stated: list[dict], truth: list[dict]) -> list[tuple[dict, dict | None]]:
    """Pair each true object with at most one stated object, the pairing that gets the most stated values right
    (ties: the fewest wrong), by trying every assignment (at most 3 true objects, so a few hundred)."""
    def score(pairs):
        right = sum(s[a] == t[a] for t, s in pairs if s is not None for a in ATTRIBUTES if s[a] is not None)
        wrong = sum(s[a] != t[a] for t, s in pairs if s is not None for a in ATTRIBUTES if s[a] is not None)
        return right, -wrong
    options = list(range(len(stated))) + [None] * len(truth)          # None: this true object goes unmentioned
    best = max((tuple(zip(truth, (None if k is None else stated[k] for k in pick_)))
                for pick_ in set(itertools.permutations(options, len(truth)))), key=score)
    return list(best)


def score_captions(captions: Sequence[str], scenes: Scenes) -> dict:
    """How true and how complete captions are of their scenes (caption i of scene i), from the scenes' ground truth.

    Every caption is parsed (parse_caption); each true object is paired with the stated object that agrees with
    it most. Returns fractions in [0, 1]:
        recall[a]    true objects whose attribute a (shape, color, size, position) the caption states correctly
        all_four     true objects stated with all four attributes right
        precision    stated values that are true of the object they were paired with (an unpaired stated object,
                     a hallucination, is wrong on everything it states)
        count        captions naming as many objects as the scene has
        exact        captions equal to the scene's full caption
        readable     captions that parse (one that does not counts as stating nothing)
    Short captions state little but nothing false (precision 1); a captioner can be complete and still wrong.
    """
    if len(captions) != len(scenes):
        raise ValueError(f"{len(captions)} captions for {len(scenes)} scenes: give one caption per scene")
    right = dict.fromkeys(ATTRIBUTES, 0)
    all_four = objects = stated_right = stated = count = exact = readable = 0
    for i, caption in enumerate(captions):
        truth = [dict(zip(("size", "color", "shape", "position"), o)) for o in scenes.objects(i)]
        try:
            said = parse_caption(caption)
            readable += 1
        except ValueError:
            said = []
        pairs = _match(said, truth)
        for t, s in pairs:
            hits = [s is not None and s[a] == t[a] for a in ATTRIBUTES]
            for a, hit in zip(ATTRIBUTES, hits):
                right[a] += hit
            all_four += all(hits)
        stated += sum(v is not None for s in said for v in s.values())
        stated_right += sum(s[a] == t[a] for t, s in pairs if s is not None for a in ATTRIBUTES if s[a] is not None)
        objects += len(truth)
        count += len(said) == len(truth)
        exact += caption == scenes.captions[i]
    n = len(captions)
    return {"recall": {a: right[a] / objects for a in ATTRIBUTES}, "all_four": all_four / objects,
            "precision": stated_right / max(stated, 1), "count": count / n, "exact": exact / n,
            "readable": readable / n}


# ----------------------------------------------------------------------------------------------------
# Per-position cells: the scene judge's layout (minigen.models.scene_judge)
# ----------------------------------------------------------------------------------------------------

EMPTY = len(SHAPES)  # the shape class of a cell with no object


def scene_cells(scenes: Scenes) -> torch.Tensor:
    """Scenes' ground truth by position: (N, len(POSITIONS), 3) int64, per cell its object's shape (EMPTY where
    there is none), colour and size (-1 where empty). The scene judge's targets."""
    n = len(scenes)
    out = torch.full((n, len(POSITIONS), 3), -1, dtype=torch.long)
    out[..., 0] = EMPTY
    present = scenes.position >= 0                                           # (N, MAX_OBJECTS)
    rows = torch.arange(n)[:, None].expand_as(present)[present]              # (M,) the scene of each object
    cells = scenes.position[present]                                         # (M,) its cell
    for k, field in enumerate((scenes.shape, scenes.color, scenes.scale)):
        out[rows, cells, k] = field[present]
    return out


def caption_cells(cells: torch.Tensor) -> list[str]:
    """(N, len(POSITIONS), 3) cells in scene_cells' layout -> full captions (objects in POSITIONS order; "" for a
    scene with no object, which score_captions counts as unreadable: it states nothing)."""
    if not torch.is_tensor(cells) or cells.ndim != 3 or cells.shape[1:] != (len(POSITIONS), 3):
        shape = tuple(cells.shape) if torch.is_tensor(cells) else type(cells).__name__
        raise ValueError(f"caption_cells expects cells of shape (N, {len(POSITIONS)}, 3), got {shape}")
    return [full_caption([(s, c, z, p) for p, (s, c, z) in enumerate(row) if s != EMPTY]) for row in cells.tolist()]
