"""The shared blocks of minigen.nn: attention against a plain multi-head attention written here, the adaLN-Zero
block as the identity at init, the embedders, the conv stacks, and every bad input named."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minigen.kernels import _dispatch, layernorm_modulate_reference
from minigen.nn import (Attention, ConvResBlock, LabelEmbedder, Mlp, TimestepEmbedder, TransformerBlock,
                        conv_decoder, conv_encoder, init_transformer, modulate)


def plain_mha(x, context, attn: Attention, causal=False, key_padding_mask=None):
    """Multi-head attention from the formula, one head at a time, with the module's weights:
    softmax(q_h k_h^T / sqrt(D)) v_h for each head h, concatenated, then the output projection."""
    C, H = attn.dim, attn.heads
    D = C // H
    if attn.context_dim is None:
        q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).split(C, dim=-1)      # 3 x (B, N, C)
    else:
        q = F.linear(x, attn.q.weight, attn.q.bias)                                 # (B, N, C)
        k, v = F.linear(context, attn.kv.weight, attn.kv.bias).split(C, dim=-1)     # 2 x (B, M, C)
    N, M = q.shape[1], k.shape[1]
    heads = []
    for h in range(H):
        sl = slice(h * D, (h + 1) * D)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(D)             # (B, N, M)
        allowed = torch.ones(N, M, dtype=torch.bool)
        if causal:
            allowed = torch.ones(N, M).tril().bool()
        allowed = allowed[None] if key_padding_mask is None else allowed[None] & key_padding_mask[:, None, :]
        scores = scores.masked_fill(~allowed, float("-inf"))
        heads.append(torch.softmax(scores, dim=-1) @ v[..., sl])                    # (B, N, D)
    return F.linear(torch.cat(heads, dim=-1), attn.proj.weight, attn.proj.bias)     # (B, N, C)


@pytest.mark.parametrize("B, N, C, H, causal", [(2, 13, 40, 5, False), (3, 7, 24, 3, True), (1, 1, 8, 1, False)])
def test_self_attention_equals_plain_multi_head_attention(B, N, C, H, causal):
    attn = Attention(C, H)
    x = torch.randn(B, N, C)
    torch.testing.assert_close(attn(x, causal=causal), plain_mha(x, None, attn, causal=causal), atol=1e-5, rtol=1e-5)


def test_cross_attention_with_padding_equals_plain_and_ignores_padded_keys():
    B, N, M, C, Cc, H = 2, 11, 9, 32, 20, 4
    attn = Attention(C, H, context_dim=Cc)
    x, context = torch.randn(B, N, C), torch.randn(B, M, Cc)
    keep = torch.ones(B, M, dtype=torch.bool)
    keep[0, 5:] = False                                                             # sample 0 has 5 real tokens
    out = attn(x, context, key_padding_mask=keep)
    torch.testing.assert_close(out, plain_mha(x, context, attn, key_padding_mask=keep), atol=1e-5, rtol=1e-5)
    noisy = context.clone()
    noisy[0, 5:] = 100 * torch.randn(M - 5, Cc)                                     # change only padded tokens
    torch.testing.assert_close(attn(x, noisy, key_padding_mask=keep), out)
    assert not torch.allclose(attn(x, noisy), attn(x, context))                     # unmasked, they would matter


def test_attention_backends_agree_on_the_cpu():
    """The default on the CPU is SDPA; the full-matrix reference gives the same numbers."""
    attn = Attention(48, 3)
    x = torch.randn(2, 17, 48)
    ref = Attention(48, 3, backend="reference")
    ref.load_state_dict(attn.state_dict())
    torch.testing.assert_close(attn(x, causal=True), ref(x, causal=True), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(_dispatch.triton is None or not _dispatch.interpreting(), reason="needs the Triton interpreter")
def test_attention_triton_path_equals_sdpa_path_in_the_interpreter():
    """Forward and gradients of the module on the Triton kernel (interpreted) against the SDPA path, odd sizes,
    head dim 24 (padded to 32 inside the kernel), causal and padded."""
    torch.manual_seed(1)
    sdpa, tri = Attention(72, 3, backend="sdpa"), Attention(72, 3, backend="triton")
    tri.load_state_dict(sdpa.state_dict())
    x = torch.randn(2, 19, 72)
    keep = torch.ones(2, 19, dtype=torch.bool)
    keep[1, 13:] = False
    outs, grads = [], []
    for m in (sdpa, tri):
        xi = x.clone().requires_grad_()
        y = m(xi, causal=True, key_padding_mask=keep)
        y.square().sum().backward()
        outs.append(y.detach())
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    print("max |triton - sdpa|:", (outs[0] - outs[1]).abs().max().item())
    torch.testing.assert_close(outs[1], outs[0], atol=2e-5, rtol=2e-5)
    for g_sdpa, g_tri in zip(*grads):
        torch.testing.assert_close(g_tri, g_sdpa, atol=1e-4, rtol=1e-4)


def test_attention_names_bad_input():
    attn = Attention(16, 2)
    with pytest.raises(ValueError, match=r"\(B, N, 16\)"):
        attn(torch.zeros(2, 5, 12))
    with pytest.raises(ValueError, match="self-attention"):
        attn(torch.zeros(2, 5, 16), torch.zeros(2, 3, 16))
    with pytest.raises(ValueError, match="pass a context"):
        Attention(16, 2, context_dim=8)(torch.zeros(2, 5, 16))
    with pytest.raises(ValueError, match=r"a context of shape \(B, N, 8\)"):
        Attention(16, 2, context_dim=8)(torch.zeros(2, 5, 16), torch.zeros(2, 3, 9))
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        Attention(16, 3)
    with pytest.raises(ValueError, match="key_padding_mask"):
        attn(torch.zeros(2, 5, 16), key_padding_mask=torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.parametrize("N, C, H, ratio", [(13, 40, 5, 4.0), (1, 16, 2, 2.5), (50, 24, 3, 1.0)])
def test_plain_block_is_pre_ln_attention_then_mlp(N, C, H, ratio):
    block = TransformerBlock(C, H, ratio)
    x = torch.randn(3, N, C)
    h = x + block.attn(block.norm1(x))
    torch.testing.assert_close(block(x), h + block.mlp(block.norm2(h)))
    assert block.mlp.fc1.out_features == int(C * ratio)


@pytest.mark.parametrize("context_dim", [None, 12])
def test_adaln_zero_block_is_the_identity_at_init(context_dim):
    B, N, C = 3, 11, 32
    block = TransformerBlock(C, 4, cond_dim=20, context_dim=context_dim)
    init_transformer(block)                                  # the model's init must keep it so
    x, c = torch.randn(B, N, C), torch.randn(B, 20)
    context = None if context_dim is None else torch.randn(B, 5, context_dim)
    assert torch.equal(block(x, c, context), x)
    # not vacuously: the modulation layer learns (its gradient is not zero) and, once moved, changes the output
    x.requires_grad_()
    block(x, c, context).square().sum().backward()
    assert block.adaln[-1].weight.grad.abs().sum() > 0
    with torch.no_grad():
        block.adaln[-1].bias.normal_()
    assert not torch.allclose(block(x, c, context), x)


def test_adaln_block_equals_its_readable_formula():
    B, N, C = 2, 9, 24
    block = TransformerBlock(C, 3, cond_dim=10)
    with torch.no_grad():
        block.adaln[-1].weight.normal_(std=0.1)
        block.adaln[-1].bias.normal_(std=0.1)
    x, c = torch.randn(B, N, C), torch.randn(B, 10)
    shift1, scale1, gate1, shift2, scale2, gate2 = block.adaln(c).chunk(6, dim=1)
    ln = lambda t: F.layer_norm(t, (C,), eps=1e-6)  # noqa: E731
    h = x + gate1[:, None] * block.attn(modulate(ln(x), shift1, scale1))
    want = h + gate2[:, None] * block.mlp(modulate(ln(h), shift2, scale2))
    torch.testing.assert_close(block(x, c), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(modulate(ln(x), shift1, scale1), layernorm_modulate_reference(x, shift1, scale1))


def test_block_names_bad_input():
    plain, cond = TransformerBlock(16, 2), TransformerBlock(16, 2, cond_dim=8)
    x = torch.zeros(2, 5, 16)
    with pytest.raises(ValueError, match="without cond_dim"):
        plain(x, torch.zeros(2, 8))
    with pytest.raises(ValueError, match=r"c of shape \(2, 8\), got \(2, 7\)"):
        cond(x, torch.zeros(2, 7))
    with pytest.raises(ValueError, match=r"c of shape \(2, 8\), got NoneType"):
        cond(x)
    with pytest.raises(ValueError, match="without context_dim"):
        plain(x, context=torch.zeros(2, 3, 16))
    with pytest.raises(ValueError, match=r"\(B, N, 16\)"):
        plain(torch.zeros(2, 16))


def test_block_causal_mask_hides_the_future():
    block = TransformerBlock(16, 2)
    x = torch.randn(1, 8, 16)
    changed = x.clone()
    changed[0, 5:] = torch.randn(3, 16)
    a, b = block(x, causal=True), block(changed, causal=True)
    torch.testing.assert_close(a[0, :5], b[0, :5])                 # tokens 0..4 cannot see tokens 5..7
    assert not torch.allclose(a[0, 5:], b[0, 5:])


def test_init_transformer_xavier_zero_biases_and_zero_adaln():
    model = nn.Sequential(nn.Linear(8, 16), TransformerBlock(16, 2, cond_dim=4), TransformerBlock(16, 2))
    for p in model.parameters():
        nn.init.normal_(p)
    init_transformer(model)
    linear = model[2].mlp.fc1
    bound = math.sqrt(6 / (linear.in_features + linear.out_features))
    assert linear.weight.abs().max() <= bound and linear.weight.std() > bound / 3
    assert all(m.bias.abs().sum() == 0 for m in model.modules() if isinstance(m, nn.Linear))
    assert model[1].adaln[-1].weight.abs().sum() == 0
    assert torch.equal(model[2].norm1.weight, torch.ones(16))


def test_mlp_shapes():
    assert Mlp(12, 3.0)(torch.randn(2, 5, 12)).shape == (2, 5, 12)


def test_timestep_embedder():
    emb = TimestepEmbedder(32, freq_dim=64)
    t = torch.tensor([0, 10, 999])
    out = emb(t)
    assert out.shape == (3, 32) and not torch.allclose(out[0], out[1])
    assert emb(torch.tensor([0.25, 0.5])).shape == (2, 32)                  # continuous times too
    with pytest.raises(ValueError, match=r"timesteps of shape \(B,\)"):
        emb(torch.zeros(3, 1))


def test_label_embedder_null_class_and_dropout():
    emb = LabelEmbedder(10, 16)
    y = torch.arange(10)
    assert emb(y).shape == (10, 16) and emb.null == 10
    assert emb(torch.tensor([emb.null])).shape == (1, 16)
    dropped = emb.drop(torch.zeros(10_000, dtype=torch.long), 0.1, torch.Generator().manual_seed(0))
    assert abs((dropped == emb.null).float().mean().item() - 0.1) < 0.01
    assert set(dropped.unique().tolist()) == {0, 10}
    with pytest.raises(ValueError, match=r"labels must be in 0..10"):
        emb(torch.tensor([11]))
    with pytest.raises(ValueError, match="integer labels"):
        emb(torch.zeros(3))


@pytest.mark.parametrize("C, s, blocks", [(1, 28, 0), (3, 32, 1), (2, 12, 2)])
def test_conv_stacks_shapes(C, s, blocks):
    enc = conv_encoder(10, in_channels=C, width=8, hidden=24, blocks=blocks, image_size=s)
    dec = conv_decoder(5, out_channels=C, width=8, hidden=24, blocks=blocks, image_size=s, final=nn.Tanh())
    assert enc(torch.randn(2, C, s, s)).shape == (2, 10)
    y = dec(torch.randn(2, 5))
    assert y.shape == (2, C, s, s) and y.abs().max() <= 1
    assert sum(isinstance(m, ConvResBlock) for m in enc) == 2 * blocks
    with pytest.raises(ValueError, match="divisible by 4"):
        conv_encoder(4, image_size=30)
