"""minigen.text2image.draw: one seeded image per prompt whatever the batching (to float rounding), guidance 0
ignores the prompt, and a prompt with a word outside the vocabulary is a clear error."""
import pytest
import torch

from minigen.recipes import recipe
from minigen.text2image import draw


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    clip = recipe("clip", "ci").build()
    m = recipe("t2i", "ci").build(text_encoder=clip.text)
    with torch.no_grad():                     # untrained, the zero-initialised output layer would give v = 0 for
        for p in m.parameters():              # every prompt and every check below would pass by default
            p.normal_(0, 0.05)
    return m.eval()


def test_same_seed_same_images_whatever_the_batch_size(model):
    prompts = ["a small red circle in the top left", "a blue square", "a cross and a circle"]
    a = draw(model, prompts, steps=3, seed=5, batch_size=2)
    b = draw(model, prompts, steps=3, seed=5)
    assert a.shape == (3, 3, 32, 32) and torch.allclose(a, b, atol=1e-5)  # batching: float rounding only
    assert a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, draw(model, prompts, steps=3, seed=6))


def test_the_prompt_matters_and_guidance_zero_ignores_it(model):
    prompts = ["a small red circle in the top left", "a large green triangle in the center"]
    same_noise = [prompts[0]] * 2
    cond = draw(model, same_noise, guidance=4.0, steps=3)
    other = draw(model, [prompts[1]] * 2, guidance=4.0, steps=3)
    assert not torch.allclose(cond, other)                                    # the words change the image
    assert torch.allclose(draw(model, prompts, guidance=0.0, steps=3), draw(model, ["", ""], guidance=0.0, steps=3))


def test_clear_errors(model):
    with pytest.raises(ValueError, match="unknown word 'purple'"):
        draw(model, "a purple circle")
    with pytest.raises(ValueError, match="at most 26 fit"):
        draw(model, " ".join(["a circle and"] * 10) + " a circle")
    with pytest.raises(ValueError, match="caption model"):
        draw(recipe("dit-fm", "ci").build(), "a circle")
    with pytest.raises(ValueError, match="no prompts"):
        draw(model, [])
    with pytest.raises(ValueError, match="guidance"):
        draw(model, "a circle", guidance=-1)
