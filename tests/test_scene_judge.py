"""The scene judge (minigen.models.scene_judge): targets from the ground truth, reading logits back into the full
captions, learning real scenes, clear errors."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from minigen.data import caption_cells, make_scenes, scene_cells, score_captions
from minigen.data.scenes import EMPTY
from minigen.data.shapes import COLORS, POSITIONS, SHAPES, SIZES
from minigen.models.scene_judge import SCENE_JUDGE_PRESETS, SceneJudge, SceneJudgeConfig
from minigen.recipes import recipe
from minigen.train import Trainer


def test_scene_cells_put_each_object_in_its_cell():
    scenes = make_scenes(50, seed=3)
    y = scene_cells(scenes)
    assert y.shape == (50, len(POSITIONS), 3) and y.dtype == torch.long
    assert ((y[..., 0] != EMPTY).sum(1) == scenes.count).all()
    assert ((y[..., 0] == EMPTY) == (y[..., 1] == -1)).all() and ((y[..., 1] == -1) == (y[..., 2] == -1)).all()
    for i in range(50):
        for j in range(int(scenes.count[i])):
            cell = int(scenes.position[i, j])
            assert y[i, cell].tolist() == [int(scenes.shape[i, j]), int(scenes.color[i, j]), int(scenes.scale[i, j])]


def test_perfect_logits_read_back_into_the_full_captions(monkeypatch):
    # a judge whose logits are the one-hot truth must write every scene's full caption exactly
    scenes = make_scenes(40, seed=4)
    y = scene_cells(scenes)
    judge = SceneJudge(SCENE_JUDGE_PRESETS["SceneJudge-S"])

    def oracle(x):
        idx = torch.arange(len(x))                                # the test passes the scenes in order, one batch
        shape = F.one_hot(y[idx, :, 0], EMPTY + 1).float()
        color = F.one_hot(y[idx, :, 1].clamp(min=0), 6).float()   # an empty cell's colour and size are ignored
        size = F.one_hot(y[idx, :, 2].clamp(min=0), 2).float()
        return shape, color, size
    monkeypatch.setattr(judge, "forward", oracle)
    read = judge.read(scenes.images)
    assert torch.equal(read, y)
    assert caption_cells(read) == scenes.captions


def test_the_recipe_judge_reads_real_scenes():
    # trained as the ci recipe trains it (2 s: measured count 0.96, position 0.97, colour 0.86 on these scenes), it
    # already finds the objects; the cpu recipe reads 1,000 scenes exactly (measured, see minigen/recipes.py)
    r = recipe("scene-judge", "ci")
    train = make_scenes(2000, seed=0, split="any")
    judge = r.build()
    Trainer(judge, (train.images, scene_cells(train)), r.train).fit()
    test = make_scenes(300, seed=1)
    score = score_captions(caption_cells(judge.read(test.images)), test)
    assert score["count"] > 0.85 and score["recall"]["position"] > 0.85 and score["recall"]["color"] > 0.7, score


def test_a_short_cpu_judge_is_right_on_real_scenes():
    # notebook 11's instrument must be right before it grades anything: the cpu recipe cut to 250 steps on 8,000
    # scenes (about 16 s here; measured 1.000 on every attribute, and 0.988 shape at 150 steps) reads held-out real
    # scenes >= 98 % right on each attribute; its features are one hidden vector per image
    r = recipe("scene-judge", "cpu")
    r = dataclasses.replace(r, train=dataclasses.replace(r.train, steps=250, warmup=25))
    train = make_scenes(8000, seed=0, split="any")
    torch.manual_seed(0)
    judge = r.build()
    Trainer(judge, (train.images, scene_cells(train)), r.train).fit()
    for split, seed in (("train", 1), ("heldout", 2)):
        test = make_scenes(400, seed=seed, split=split)
        score = score_captions(caption_cells(judge.read(test.images)), test)
        assert min(score["recall"].values()) >= 0.98 and score["count"] >= 0.98, (split, score)
    features = judge.features(test.images[:7])
    assert features.shape == (7, judge.config.hidden) and torch.isfinite(features).all()


def test_clear_errors():
    judge = SceneJudge(SCENE_JUDGE_PRESETS["SceneJudge-S"])
    with pytest.raises(ValueError, match="SceneJudge"):
        judge(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="SceneJudge.features"):
        judge.features(torch.zeros(2, 3, 28, 28))
    scenes = make_scenes(4)
    with pytest.raises(ValueError, match="scene_cells"):
        judge.loss((scenes.images, torch.zeros(4, 3, dtype=torch.long)))
    with pytest.raises(ValueError, match="image_size"):
        SceneJudgeConfig(image_size=30)
    with pytest.raises(ValueError, match="caption_cells"):
        caption_cells(torch.zeros(2, 4, 3, dtype=torch.long))


def test_the_config_matches_the_scenes():
    c = SceneJudgeConfig()
    assert (c.positions, c.shapes, c.colors, c.sizes) == (len(POSITIONS), len(SHAPES), len(COLORS), len(SIZES))
    assert c.shapes == EMPTY
