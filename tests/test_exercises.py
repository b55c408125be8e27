"""Every exercise checker rejects the notebook's stub and a plausible mistake and accepts the solution; every
exercise in the notebooks follows the pattern stub -> checker on the student's function -> solution on request."""
import ast
import importlib
import json
import math
from pathlib import Path

import pytest
import torch

from minigen.exercises import SOLUTIONS, solution

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ("pixels", "autoencoder", "vae", "flow", "diffusion", "kernels", "dit", "gan", "edits", "clip",
          "t2i", "video")


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


def _patchify_channels_first(x, p):            # tokens ordered (c, dy, dx): channels slowest
    B, C, H, W = x.shape
    return x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, p * p * C)


def _unpatchify_no_permute(patches, p, h, w):  # a reshape alone scrambles the pixels
    B, N, P = patches.shape
    return patches.reshape(B, P // (p * p), h * p, w * p)


def _mask_by_threshold(B, N, ratio, generator):  # hides the right share only on average
    return (torch.rand(B, N, generator=generator) < ratio).float()


def _coupling_inverse_wrong_sign(y, net):
    log_s, t = net(y[:, :1]).chunk(2, dim=1)
    return torch.cat([y[:, :1], (y[:, 1:] + t) * torch.exp(-log_s)], dim=1)


def _merge_without_rescale(m_a, l_a, acc_a, m_b, l_b, acc_b):
    return torch.maximum(m_a, m_b), l_a + l_b, acc_a + acc_b


def _stride_align_counting_size_one(shape, strides):
    align = 16
    for stride in strides[:3]:
        while stride % align:
            align //= 2
    return align


def _r1_without_create_graph(judge, real):       # right value, but the judge cannot learn from it
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(judge(real).sum(), real)
    return grad.square().flatten(1).sum(1).mean()


def _vector_minus_mean_of_all(z, present):       # half the size (and off when the groups are unequal)
    return z[present.bool()].mean(0) - z.mean(0)


def _image_to_text_only(image_emb, text_emb, temperature):   # one direction of the symmetric loss
    logits = image_emb @ text_emb.T / temperature
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(logits)))


def _lerp_rescaled_to_the_sphere(a, b, t):        # right length, wrong place along the arc
    p = (1 - t) * a + t * b
    return p / p.norm() * ((1 - t) * a.norm() + t * b.norm())


def _attention_across_space(q, k, v):           # (B, T, S, H, D) -> attends over S, the other axis
    q, k, v = (x.permute(0, 1, 3, 2, 4) for x in (q, k, v))             # (B, T, H, S, D)
    out = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1) @ v         # (B, T, H, S, D)
    return out.permute(0, 1, 3, 2, 4)


# exercise key -> (checker module, checker name, a plausible mistake: the functions the checker takes)
MISTAKES = {
    "pixels.patchify": ("pixels", "check_patchify", (_patchify_channels_first,)),
    "pixels.token_count": ("pixels", "check_token_count",
                           (lambda s, fps, h, w, p, pt: s * fps * (h // p) * (w // p),)),  # forgot pt
    "pixels.attention_cost": ("pixels", "check_attention_cost", (lambda T, S: ((T * S) ** 2, T * S ** 2),)),
    "autoencoder.unpatchify": ("autoencoder", "check_unpatchify", (_unpatchify_no_permute,)),
    "autoencoder.random_mask": ("autoencoder", "check_random_mask", (_mask_by_threshold,)),
    "vae.gaussian_kl": ("vae", "check_gaussian_kl",                                        # dropped the 1/2
                        (lambda mq, lq, mp, lp: (lp - lq + (lq.exp() + (mq - mp) ** 2) / lp.exp() - 1).sum(-1),)),
    "vae.reparameterize": ("vae", "check_reparameterize",                                  # std = exp(logvar)
                           (lambda mu, logvar: mu + logvar.exp() * torch.randn_like(mu),)),
    "flow.affine_coupling": ("flow", "check_affine_coupling", (SOLUTIONS.get("flow.affine_coupling", (None,))[0],
                                                              _coupling_inverse_wrong_sign)),
    "flow.conv1x1_logdet": ("flow", "check_conv1x1_logdet",                                # forgot H*W
                            (lambda weight, h, w: torch.linalg.slogdet(weight)[1],)),
    "diffusion.q_sample": ("diffusion", "check_q_sample",                                  # no square roots
                           (lambda ab, x0, t, noise: ab[t].float().view(-1, 1, 1, 1) * x0
                            + (1 - ab[t].float().view(-1, 1, 1, 1)) * noise,)),
    "diffusion.ddim_step": ("diffusion", "check_ddim_step",                                # re-noised with ab_t
                            (lambda x_t, eps, ab_t, ab_prev: math.sqrt(ab_prev) * (x_t - math.sqrt(1 - ab_t) * eps)
                             / math.sqrt(ab_t) + math.sqrt(1 - ab_t) * eps,)),
    "kernels.merge_partials": ("kernels", "check_merge_partials", (_merge_without_rescale,)),
    "kernels.modulate_traffic": ("kernels", "check_modulate_traffic",                       # forgot the writes
                                 (lambda B, N, C, b: (3 * B * N * C * b, B * N * C * b),)),
    "kernels.stride_align": ("kernels", "check_stride_align", (_stride_align_counting_size_one,)),
    "dit.modulate": ("dit", "check_modulate", (lambda x, shift, scale: x * scale[:, None] + shift[:, None],)),  # no 1 +
    "dit.fm_loss": ("dit", "check_fm_loss",                                                 # velocity's sign flipped
                    (lambda model, x0, noise, t, y: (model((1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1)
                                                           * noise, t, y) - (x0 - noise)).square().mean(),)),
    "gan.generator_loss": ("gan", "check_generator_loss",                                   # the saturating loss
                           (lambda logits: -torch.nn.functional.softplus(logits).mean(),)),
    "gan.r1_penalty": ("gan", "check_r1_penalty", (_r1_without_create_graph,)),
    "edits.attribute_vector": ("edits", "check_attribute_vector", (_vector_minus_mean_of_all,)),
    "edits.slerp": ("edits", "check_slerp", (_lerp_rescaled_to_the_sphere,)),
    "clip.contrastive_loss": ("clip", "check_contrastive_loss", (_image_to_text_only,)),
    "clip.clip_score": ("clip", "check_clip_score",                                         # dot product, no cosine
                        (lambda image_emb, text_emb: 2.5 * (image_emb * text_emb).sum(-1).clamp(min=0),)),
    "t2i.caption_dropout": ("t2i", "check_caption_dropout",                                # single words dropped
                            (lambda tokens, p, generator=None: tokens.masked_fill(
                                torch.rand(tokens.shape, generator=generator) < p, 0),)),
    "t2i.guided_velocity": ("t2i", "check_guided_velocity",                                # the mix swapped
                            (lambda model, x, t, tokens, scale: model(x, t, tokens) + scale * (
                                model(x, t, torch.zeros_like(tokens)) - model(x, t, tokens)),)),
    "video.temporal_attention": ("video", "check_temporal_attention", (_attention_across_space,)),
    "video.velocity_error": ("video", "check_velocity_error",                               # positions, not steps
                             (lambda centres, positions: (centres - positions).norm(dim=-1).mean().item(),)),
}


def _load_all():
    for topic in TOPICS:
        importlib.import_module(f"minigen.exercises.{topic}")


def test_every_exercise_has_a_solution_and_a_mistake_here():
    _load_all()
    assert set(SOLUTIONS) == set(MISTAKES)


@pytest.mark.parametrize("key", sorted(MISTAKES))
def test_checker_rejects_the_stub_and_a_mistake_and_accepts_the_solution(key, capsys):
    _load_all()
    module, name, mistake = MISTAKES[key]
    check = getattr(importlib.import_module(f"minigen.exercises.{module}"), name)
    assert check.key == key
    with pytest.raises(NotImplementedError):
        check(*[stub] * len(mistake), strict=True)
    if key == "flow.affine_coupling":
        mistake = (SOLUTIONS[key][0], mistake[1])
    with pytest.raises(AssertionError):
        check(*mistake, strict=True)
    check(*SOLUTIONS[key], strict=True)
    # in a notebook the same checker prints its verdict and never raises
    check(*[stub] * len(mistake))
    check(*mistake)
    out = capsys.readouterr().out
    assert "not attempted yet" in out and "not yet:" in out and f"solution({key!r})" in out


def test_solution_prints_pasteable_code(capsys):
    solution("vae.gaussian_kl")
    code = capsys.readouterr().out
    namespace = {"torch": torch}
    exec(compile(code, "<solution>", "exec"), namespace)  # the printed text defines the student's function
    assert "my_gaussian_kl" in namespace and "@" not in code
    with pytest.raises(KeyError, match="exercises of vae: vae.gaussian_kl, vae.reparameterize"):
        solution("vae.kl")


def _code_cells(path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_notebook_exercises_check_the_students_stub(path):
    """No hidden cells (GitHub and Colab show them anyway); every function handed to a checker is defined in the
    notebook as a stub that raises NotImplementedError, and nothing redefines it before the checker runs."""
    cells = _code_cells(path)
    assert not [c for c in cells if c.get("metadata", {}).get("jupyter", {}).get("source_hidden")]
    defined: dict[str, str] = {}
    checked = 0
    for cell in cells:
        source = "".join(cell["source"])
        try:
            tree = ast.parse("\n".join(l for l in source.splitlines() if not l.lstrip().startswith(("!", "%"))))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                defined[node.name] = ast.unparse(node)
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")).startswith(
                    "check_") and node.args:
                for arg in node.args:
                    if isinstance(arg, ast.Name) and arg.id in defined:
                        assert "NotImplementedError" in defined[arg.id], \
                            f"{path.name}: {arg.id} reaches its checker already solved"
                        checked += 1
    exercises = sum("## " in "".join(c["source"]) and "Exercises" in "".join(c["source"])
                    for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown")
    assert checked or not exercises, f"{path.name} has an exercises section but no checker on a stub"
