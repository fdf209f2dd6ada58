"""The encoder and reconstruction model: shapes, masking semantics, per-variable embeddings."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from stefaland.model import MaskedReconstructionModel, ModelConfig, StefaLandEncoder, VariableEmbedding

torch.set_num_threads(1)

TINY = ModelConfig(d_model=16, n_heads=2, n_layers=1, d_ff=32, dropout=0.0, embed_hidden=8, head_hidden=8)


@pytest.mark.parametrize("n_dynamic,n_static", [(1, 1), (3, 7), (6, 48)])
@pytest.mark.parametrize("decoder", ["lstm", "bilstm"])
def test_shapes_for_several_variable_counts(n_dynamic: int, n_static: int, decoder: str) -> None:
    config = TINY.model_copy(update={"decoder": decoder})
    model = MaskedReconstructionModel(n_dynamic, n_static, config)
    dynamic, static = torch.randn(3, 31, n_dynamic), torch.randn(3, n_static)
    encoded = model.encoder(dynamic, static)
    assert encoded.time_tokens.shape == (3, 31, 16)
    assert encoded.static_token.shape == (3, 16)
    assert encoded.sequence().shape == (3, 32, 16)
    output = model(dynamic, static)
    assert output.dynamic.shape == (3, 31, n_dynamic)
    assert output.static.shape == (3, n_static)


def test_missing_cells_behave_exactly_like_masked_cells() -> None:
    torch.manual_seed(0)
    model = MaskedReconstructionModel(4, 5, TINY).eval()
    dynamic, static = torch.randn(2, 40, 4), torch.randn(2, 5)
    d_mask = torch.zeros(2, 40, 4, dtype=torch.bool)
    d_mask[0, 5:20, 1] = True
    s_mask = torch.zeros(2, 5, dtype=torch.bool)
    s_mask[1, 3] = True
    with_nan_d, with_nan_s = dynamic.clone(), static.clone()
    with_nan_d[d_mask], with_nan_s[s_mask] = float("nan"), float("nan")
    masked = model(dynamic, static, d_mask, s_mask)
    missing = model(with_nan_d, with_nan_s)
    assert torch.isfinite(missing.dynamic).all() and torch.isfinite(missing.static).all()
    torch.testing.assert_close(masked.dynamic, missing.dynamic)
    torch.testing.assert_close(masked.static, missing.static)


def test_a_masked_value_cannot_leak_into_the_output() -> None:
    torch.manual_seed(1)
    model = MaskedReconstructionModel(3, 4, TINY).eval()
    dynamic, static = torch.randn(2, 30, 3), torch.randn(2, 4)
    d_mask = torch.zeros(2, 30, 3, dtype=torch.bool)
    d_mask[:, 10:25, 0] = True
    s_mask = torch.tensor([[True, False, False, False]] * 2)
    changed_d, changed_s = dynamic.clone(), static.clone()
    changed_d[d_mask] += 100.0
    changed_s[s_mask] -= 50.0
    torch.testing.assert_close(model(dynamic, static, d_mask, s_mask).dynamic,
                               model(changed_d, changed_s, d_mask, s_mask).dynamic)
    visible_change = dynamic.clone()
    visible_change[:, 2, 1] += 5.0  # a visible cell must matter
    assert not torch.allclose(model(dynamic, static, d_mask, s_mask).dynamic,
                              model(visible_change, static, d_mask, s_mask).dynamic)


def test_static_token_reaches_every_day() -> None:
    torch.manual_seed(2)
    encoder = StefaLandEncoder(2, 3, TINY).eval()
    dynamic = torch.randn(1, 20, 2)
    a = encoder(dynamic, torch.zeros(1, 3)).time_tokens
    b = encoder(dynamic, torch.ones(1, 3)).time_tokens
    assert (a - b).abs().amax(dim=-1).min() > 0  # every day's token changed


def test_embedding_is_a_sum_of_independent_per_variable_mlps() -> None:
    torch.manual_seed(3)
    embedding = VariableEmbedding(n_vars=3, d_model=8, hidden=5).eval()
    values = torch.randn(4, 6, 3)
    hidden = torch.rand(4, 6, 3) < 0.3
    expected = torch.zeros(4, 6, 8)
    for v in range(3):  # reference: one Linear(1,h) → GELU → Linear(h,d) per variable
        mlp = F.gelu(values[..., v : v + 1] * embedding.w1[v] + embedding.b1[v]) @ embedding.w2[v] + embedding.b2[v]
        expected += torch.where(hidden[..., v : v + 1], embedding.mask_vector[v].expand_as(mlp), mlp)
    torch.testing.assert_close(embedding(values, hidden), expected, rtol=1e-5, atol=1e-6)


def test_default_size_matches_the_public_release() -> None:
    model = MaskedReconstructionModel(5, 48, ModelConfig(decoder="lstm"))
    n = sum(p.numel() for p in model.parameters())
    assert 4.0e6 < n < 5.5e6, n  # the release reports about 4.8 M parameters


def test_config_rejects_heads_that_do_not_divide_the_width() -> None:
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=30, n_heads=4)


def test_gradients_reach_embeddings_and_mask_vectors() -> None:
    torch.manual_seed(4)
    model = MaskedReconstructionModel(2, 3, TINY)
    d_mask = torch.rand(2, 30, 2) < 0.5
    output = model(torch.randn(2, 30, 2), torch.randn(2, 3), d_mask, torch.tensor([[True, False, False]] * 2))
    (output.dynamic.square().mean() + output.static.square().mean()).backward()
    for name in ("encoder.dynamic_embedding.mask_vector", "encoder.static_embedding.w2", "encoder.position"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
