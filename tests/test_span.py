"""Tests of the SPAN model: uniform attention, re-weighted sums, masking, embeddings and checkpoints.

References are computed another way: W^S from the attention and the circuit weights by the
formula W * A / sum(W * A), -E(x) by a per-sample copy of the Einsum network whose own weights
are W^S, and patch tokens by slicing the image by hand. Exactness checks run in float64.
"""

import copy

import pytest
import torch

from tiny_models import TINY_ENCODER, tiny_span
from spanlib import (
    SPAN,
    Bernoulli,
    BernoulliEmbedding,
    Binomial,
    Categorical,
    DenseHead,
    EinsumNetwork,
    LinearEmbedding,
    LowRankHead,
    Normal,
    PatchEmbedding,
    random_binary_trees,
)

TIGHT = dict(rtol=0, atol=1e-10)


pytestmark = pytest.mark.usefixtures("single_thread")


def bernoulli_span(num_vars=6, **settings):
    return tiny_span(num_vars, **settings).double()


def patch_span(**settings):
    torch.manual_seed(0)
    net = EinsumNetwork(random_binary_trees(16, 2, 2, seed=1), Normal(), K=3, num_dims=3)
    return SPAN(net, PatchEmbedding(3, 4, 4, 2), **{**TINY_ENCODER, **settings}).double()


def linear_span(**settings):
    torch.manual_seed(0)
    net = EinsumNetwork(random_binary_trees(5, 2, 3, seed=2), Normal(), K=2, num_dims=2)
    return SPAN(net, LinearEmbedding(2), **{**TINY_ENCODER, **settings}).double()


BUILDERS = {"bernoulli": bernoulli_span, "patch": patch_span, "linear": linear_span}


def random_input(span, batch=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, span.einet.num_vars, span.einet.num_dims)
    if span.einet.leaf_family.discrete:
        return torch.randint(0, 2, shape, generator=generator).double()
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def all_heads(span):
    return [h for h in list(span.heads) + list(span.mixing_heads) if isinstance(h, (DenseHead, LowRankHead))]


def output_layer(head):
    return head.linear if isinstance(head, DenseHead) else head.up


def perturb(span, scale=0.5, seed=1):
    """Add Gaussian noise to every parameter, heads included, so that attention is not uniform."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in span.parameters():
            p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale)
    return span


def zero_head_outputs(span):
    with torch.no_grad():
        for head in all_heads(span):
            output_layer(head).weight.zero_()
            output_layer(head).bias.zero_()
    return span


def observed_all(x):
    return torch.ones(x.shape[:2], dtype=torch.bool)


def mixing_reference(span, x):
    """Re-weighted mixing weights W * A / sum(W * A) per sample, from the mixing heads directly."""
    tokens = span.embedding(x, observed_all(x))
    weights = []
    for encoder, head, plain in zip(span.encoders, span.mixing_heads, span.einet.mixing_log_weights()):
        if plain is None:
            weights.append(None)
            continue
        attention = torch.softmax(head(encoder(tokens)), dim=-1)
        product = plain.exp().unsqueeze(0) * attention
        weights.append(product / product.sum(-1, keepdim=True))
    return weights


def per_sample_reference(span, x):
    """Evaluate each sample with a copy of the Einsum network whose weights are that sample's W^S."""
    einsum_weights = span.sum_weights(x)
    mixing_weights = mixing_reference(span, x) if span.reweight_mixing else None
    values = []
    for b in range(len(x)):
        clone = copy.deepcopy(span.einet)
        with torch.no_grad():
            for layer, weights in zip(clone.einsum_layers, einsum_weights):
                layer.logits.copy_(weights[b].log())
            if mixing_weights is not None:
                for layer, weights in zip(clone.mixing_layers, mixing_weights):
                    if weights is not None:
                        layer.logits.copy_(weights[b].log())
        values.append(clone(x[b : b + 1])[0])
    return torch.stack(values)


# ---------------------------------------------------------------------------- uniform attention


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("reweight_mixing", [False, True])
def test_fresh_span_equals_einet(kind, reweight_mixing):
    span = BUILDERS[kind](reweight_mixing=reweight_mixing)
    x = random_input(span)
    torch.testing.assert_close(span(x), span.einet(x), **TIGHT)


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("reweight_mixing", [False, True])
@pytest.mark.parametrize("head", ["lowrank", "dense"])
def test_zero_heads_equal_einet(kind, reweight_mixing, head):
    span = zero_head_outputs(perturb(BUILDERS[kind](reweight_mixing=reweight_mixing, head=head)))
    x = random_input(span)
    torch.testing.assert_close(span(x), span.einet(x), **TIGHT)


def test_zero_heads_uniform_attention():
    span = zero_head_outputs(perturb(bernoulli_span()))
    x = random_input(span)
    for attention in span.attention_weights(x):
        K = attention.shape[-1]
        torch.testing.assert_close(attention, torch.full_like(attention, 1 / K**2), **TIGHT)


# ---------------------------------------------------------------------------- re-weighted sums


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("head", ["lowrank", "dense"])
def test_sum_weights_normalised(kind, head):
    span = perturb(BUILDERS[kind](head=head))
    x = random_input(span)
    for weights in span.sum_weights(x):
        assert weights.shape[0] == len(x)
        assert (weights >= 0).all()
        torch.testing.assert_close(weights.sum((-1, -2)), torch.ones(weights.shape[:-2], dtype=weights.dtype))


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_sum_weights_formula(kind):
    span = perturb(BUILDERS[kind]())
    x = random_input(span)
    for plain, attention, reweighted in zip(span.einet.log_weights(), span.attention_weights(x), span.sum_weights(x)):
        product = plain.exp().unsqueeze(0) * attention
        expected = product / product.sum((-1, -2), keepdim=True)
        torch.testing.assert_close(reweighted, expected, **TIGHT)


def test_sum_weights_shapes():
    span = bernoulli_span()
    x = random_input(span, batch=4)
    for layer, weights in zip(span.einet.einsum_layers, span.sum_weights(x)):
        assert weights.shape == (4, *layer.logits.shape)


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("head", ["lowrank", "dense"])
def test_attention_weights_reference(kind, head):
    """A(x) is the softmax over the K x K child pairs of each head's logits, shaped (batch, P, out, K, K)."""
    span = perturb(BUILDERS[kind](head=head))
    x = random_input(span, batch=4)
    tokens = span.embedding(x, observed_all(x))
    attention = span.attention_weights(x)
    K = span.einet.K
    assert len(attention) == len(span.einet.einsum_layers)
    for depth, (encoder, layer_head, got) in enumerate(zip(span.encoders, span.heads, attention)):
        out = 1 if depth == len(attention) - 1 else K
        partitions = span.einet.einsum_layers[depth].logits.shape[0]
        assert got.shape == (4, partitions, out, K, K)
        logits = layer_head(encoder(tokens)).reshape(4, partitions, out, K * K)
        expected = torch.softmax(logits, dim=-1).reshape(got.shape)
        torch.testing.assert_close(got, expected, **TIGHT)
        torch.testing.assert_close(got.sum((-1, -2)), torch.ones(4, partitions, out, dtype=got.dtype), **TIGHT)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_attention_changes_energy(kind):
    span = perturb(BUILDERS[kind]())
    x = random_input(span)
    assert (span(x) - span.einet(x)).abs().max() > 1e-3


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("head", ["lowrank", "dense"])
@pytest.mark.parametrize("reweight_mixing", [False, True])
def test_energy_per_sample_reference(kind, head, reweight_mixing):
    span = perturb(BUILDERS[kind](head=head, reweight_mixing=reweight_mixing))
    x = random_input(span)
    torch.testing.assert_close(span(x), per_sample_reference(span, x), **TIGHT)


def test_negative_energy_alias():
    span = perturb(bernoulli_span())
    x = random_input(span)
    assert torch.equal(span.negative_energy(x), span(x))


def test_inference_uses_einet():
    span = perturb(bernoulli_span())
    evidence = random_input(span, batch=3)
    mask = torch.zeros(3, span.einet.num_vars, dtype=torch.bool)
    mask[:, :3] = True
    assert torch.equal(span.mpe(evidence, mask), span.einet.mpe(evidence, mask))
    assert torch.equal(span.sample(4, seed=7), span.einet.sample(4, seed=7))


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_encoder_summary_matches_stack(depth, mode):
    span = perturb(bernoulli_span(depth=depth))
    span.train(mode == "train")
    x = random_input(span)
    tokens = span.embedding(x, observed_all(x))
    for encoder in span.encoders:
        h = encoder.project(tokens)
        h = torch.cat([encoder.summary_token.expand(len(x), -1, -1), h], dim=1) + encoder.position
        expected = encoder.encoder(h)[:, 0]
        torch.testing.assert_close(encoder(tokens), expected, **TIGHT)


# ---------------------------------------------------------------------------- missing values and masking


def half_mask(span, batch=5):
    mask = torch.zeros(batch, span.einet.num_vars, dtype=torch.bool)
    mask[:, : span.einet.num_vars // 2] = True
    return mask


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_marginal_without_masking_is_einet(kind):
    span = perturb(BUILDERS[kind]())
    x = random_input(span)
    mask = half_mask(span)
    assert torch.equal(span(x, marginalize=mask), span.einet(x, marginalize=mask))


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_complete_rows_keep_attention(kind):
    """In a marginal query without token masking, rows with nothing missing still get -E(x)."""
    span = perturb(BUILDERS[kind]())
    x = random_input(span, batch=6)
    mask = torch.zeros(6, span.einet.num_vars, dtype=torch.bool)
    mask[::2, :2] = True
    value = span(x, marginalize=mask)
    torch.testing.assert_close(value[1::2], span(x[1::2]), **TIGHT)
    torch.testing.assert_close(value[::2], span.einet(x[::2], marginalize=mask[::2]), **TIGHT)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_empty_marginal_is_energy(kind):
    span = perturb(BUILDERS[kind]())
    x = random_input(span)
    nothing = torch.zeros(len(x), span.einet.num_vars, dtype=torch.bool)
    assert torch.equal(span(x, marginalize=nothing), span(x))


def test_mixed_marginal_ignores_nan():
    """NaN at missing entries reaches neither the value nor the gradient when complete rows use attention."""
    span = perturb(bernoulli_span())
    x = random_input(span, batch=4)
    mask = torch.zeros(4, span.einet.num_vars, dtype=torch.bool)
    mask[0, :3] = True
    with_nan = x.clone()
    with_nan[mask] = float("nan")
    value = span(with_nan, marginalize=mask)
    assert torch.equal(value, span(x, marginalize=mask))
    value.sum().backward()
    for name, p in span.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in span.encoder_parameters())


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_marginal_with_masking_uses_attention(kind):
    span = perturb(BUILDERS[kind](mask_probability=0.3)).eval()
    x = random_input(span)
    mask = half_mask(span)
    assert (span(x, marginalize=mask) - span.einet(x, marginalize=mask)).abs().max() > 1e-3


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_marginal_with_masking_uniform(kind):
    span = zero_head_outputs(perturb(BUILDERS[kind](mask_probability=0.3))).eval()
    x = random_input(span)
    mask = half_mask(span)
    torch.testing.assert_close(span(x, marginalize=mask), span.einet(x, marginalize=mask), **TIGHT)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_marginal_ignores_missing_values(kind):
    span = perturb(BUILDERS[kind](mask_probability=0.3)).eval()
    x = random_input(span)
    mask = half_mask(span)
    filled = x.clone()
    filled[mask] = 1.0 - filled[mask]
    with_nan = x.clone()
    with_nan[mask] = float("nan")
    reference = span(x, marginalize=mask)
    assert torch.equal(span(filled, marginalize=mask), reference)
    assert torch.equal(span(with_nan, marginalize=mask), reference)


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fully_masked_sample_finite(kind, mode):
    span = perturb(BUILDERS[kind](mask_probability=0.5), scale=0.2)
    span.train(mode == "train")
    x = random_input(span)
    mask = torch.zeros(len(x), span.einet.num_vars, dtype=torch.bool)
    mask[0] = True
    value = span(x, marginalize=mask)
    assert torch.isfinite(value).all()
    # Every variable of sample 0 is summed out and the weights are normalised, so its value is log 1.
    assert abs(float(value[0].detach())) < 1e-10
    value.sum().backward()
    for name, p in span.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_random_masking_of_every_token(kind):
    """Train-mode token masking that hides every token of a sample gives log 1 and finite gradients."""
    span = perturb(BUILDERS[kind](mask_probability=0.99), scale=0.2).train()
    x = random_input(span, batch=8)
    torch.manual_seed(0)
    value = span(x)
    hidden = value.detach().abs() < 1e-10
    assert hidden.any(), "with mask_probability 0.99 some sample should lose every token"
    assert torch.isfinite(value).all()
    value.sum().backward()
    for name, p in span.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_train_mode_masks_tokens():
    span = perturb(bernoulli_span(mask_probability=0.5))
    x = random_input(span, batch=8)
    evaluated = span.eval()(x)
    torch.manual_seed(3)
    trained = span.train()(x)
    assert (trained - evaluated).abs().max() > 1e-3


# ---------------------------------------------------------------------------- embeddings


def test_bernoulli_codes():
    embedding = BernoulliEmbedding()
    embedding.bind(3, 1)
    x = torch.tensor([[[1.0], [0.0], [1.0]]])
    observed = torch.tensor([[True, True, False]])
    expected = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    assert torch.equal(embedding(x, observed), expected)


def test_linear_tokens():
    embedding = LinearEmbedding(2)
    embedding.bind(2, 2)
    x = torch.tensor([[[0.5, -1.0], [float("nan"), 2.0]]])
    observed = torch.tensor([[True, False]])
    expected = torch.tensor([[[0.5, -1.0, 1.0], [0.0, 0.0, 0.0]]])
    assert torch.equal(embedding(x, observed), expected)


def hand_patches(image, patch):
    """Cut (batch, H, W, C) into row-major patches, each flattened over (row, col, channel)."""
    batch, height, width, _ = image.shape
    tokens = []
    for top in range(0, height, patch):
        for left in range(0, width, patch):
            tokens.append(image[:, top : top + patch, left : left + patch, :].reshape(batch, -1))
    return torch.stack(tokens, dim=1)


def test_patch_tokens_by_hand():
    channels, height, width, patch = 2, 4, 6, 2
    embedding = PatchEmbedding(channels, height, width, patch)
    embedding.bind(height * width, channels)
    x = torch.randn(3, height * width, channels, generator=torch.Generator().manual_seed(0))
    observed = torch.rand(3, height * width, generator=torch.Generator().manual_seed(1)) > 0.3
    tokens = embedding(x, observed)

    values = torch.where(observed.unsqueeze(-1), x, torch.zeros_like(x)).view(3, height, width, channels)
    flags = observed.unsqueeze(-1).expand_as(x).double().view(3, height, width, channels)
    features = patch * patch * channels
    assert tokens.shape == (3, embedding.num_tokens, 2 * features)
    assert torch.equal(tokens[..., :features], hand_patches(values, patch))
    assert torch.equal(tokens[..., features:], hand_patches(flags, patch).to(tokens.dtype))


def test_patch_variable_mask():
    height, width, patch = 4, 6, 2
    embedding = PatchEmbedding(1, height, width, patch)
    embedding.bind(height * width, 1)
    token_mask = torch.rand(2, embedding.num_tokens, generator=torch.Generator().manual_seed(0)) > 0.5
    pixels = embedding.variable_mask(token_mask)
    columns = width // patch
    for b in range(2):
        for row in range(height):
            for col in range(width):
                token = (row // patch) * columns + col // patch
                assert pixels[b, row * width + col] == token_mask[b, token]


# ---------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("kind", ["bernoulli", "patch"])
@pytest.mark.parametrize("head", ["lowrank", "dense"])
def test_save_load_bitwise(kind, head, tmp_path):
    span = perturb(BUILDERS[kind](head=head, reweight_mixing=True)).eval()
    x = random_input(span)
    path = tmp_path / "span.pt"
    span.save(path)
    loaded = SPAN.load(path).eval()
    assert loaded.config() == span.config()
    assert torch.equal(loaded(x), span(x))
    for before, after in zip(span.sum_weights(x), loaded.sum_weights(x)):
        assert torch.equal(before, after)


def test_load_corrupt_file(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pt"):
        SPAN.load(path)


def test_load_einet_file(tmp_path):
    path = tmp_path / "einet.pt"
    bernoulli_span().einet.save(path)
    with pytest.raises(ValueError, match="einet.pt"):
        SPAN.load(path)


def test_load_mismatched_state(tmp_path):
    span = bernoulli_span()
    path = tmp_path / "mismatch.pt"
    config = {**span.config(), "d_model": 16, "heads": 4}
    torch.save({"format": "spanlib.SPAN/1", "config": config, "state_dict": span.state_dict()}, path)
    with pytest.raises(ValueError, match="mismatch.pt"):
        SPAN.load(path)


# ---------------------------------------------------------------------------- constructor


def test_positional_encoder_arguments():
    """SPAN(einet, embedding, depth, heads, d_model, d_ff) sizes every encoder in that order."""
    net = EinsumNetwork(random_binary_trees(8, 2, 1), Bernoulli(), K=2)
    span = SPAN(net, BernoulliEmbedding(), 3, 2, 12, 20)
    assert len(span.encoders) == len(net.einsum_layers)
    for encoder in span.encoders:
        assert len(encoder.encoder.layers) == 3
        assert encoder.project.out_features == 12
        for layer in encoder.encoder.layers:
            assert layer.self_attn.num_heads == 2
            assert layer.linear1.out_features == 20


# ---------------------------------------------------------------------------- configuration errors


def test_patch_size_not_dividing():
    with pytest.raises(ValueError, match=r"patch_size=5.*16 x 16"):
        PatchEmbedding(1, 16, 16, 5)


def test_patch_image_size_mismatch():
    net = EinsumNetwork(random_binary_trees(32, 2, 1), Normal(), K=2)
    with pytest.raises(ValueError, match=r"64 variables.*32"):
        SPAN(net, PatchEmbedding(1, 8, 8, 4), **TINY_ENCODER)


def test_patch_channels_mismatch():
    net = EinsumNetwork(random_binary_trees(16, 2, 1), Normal(), K=2, num_dims=1)
    with pytest.raises(ValueError, match=r"3 dims.*16 with 1"):
        SPAN(net, PatchEmbedding(3, 4, 4, 2), **TINY_ENCODER)


def test_linear_dims_mismatch():
    net = EinsumNetwork(random_binary_trees(8, 2, 1), Normal(), K=2, num_dims=3)
    with pytest.raises(ValueError, match=r"LinearEmbedding\(2\).*num_dims=3"):
        SPAN(net, LinearEmbedding(2), **TINY_ENCODER)


def test_d_model_not_divisible():
    net = EinsumNetwork(random_binary_trees(8, 2, 1), Bernoulli(), K=2)
    with pytest.raises(ValueError, match=r"d_model=10.*heads=4"):
        SPAN(net, BernoulliEmbedding(), depth=1, heads=4, d_model=10, d_ff=16)


def test_bernoulli_embedding_three_dims():
    net = EinsumNetwork(random_binary_trees(8, 2, 1), Bernoulli(), K=2, num_dims=3)
    with pytest.raises(ValueError, match="num_dims=3"):
        SPAN(net, BernoulliEmbedding(), **TINY_ENCODER)


@pytest.mark.parametrize("leaf", [Categorical(4), Binomial(3), Normal()])
def test_bernoulli_embedding_non_binary_leaves(leaf):
    net = EinsumNetwork(random_binary_trees(8, 2, 1), leaf, K=2)
    with pytest.raises(ValueError, match=rf"{type(leaf).__name__}.*LinearEmbedding\(1\)"):
        SPAN(net, BernoulliEmbedding(), **TINY_ENCODER)


@pytest.mark.parametrize("leaf", [Bernoulli(), Categorical(2), Binomial(1)])
def test_bernoulli_embedding_binary_leaves(leaf):
    net = EinsumNetwork(random_binary_trees(8, 2, 1), leaf, K=2)
    span = SPAN(net, BernoulliEmbedding(), **TINY_ENCODER)
    x = torch.tensor([[0.0, 1.0] * 4])
    assert span(x).shape == (1,)


def test_unknown_head():
    net = EinsumNetwork(random_binary_trees(8, 2, 1), Bernoulli(), K=2)
    with pytest.raises(ValueError, match="'wide'"):
        SPAN(net, BernoulliEmbedding(), head="wide", **TINY_ENCODER)


def test_mask_probability_out_of_range():
    net = EinsumNetwork(random_binary_trees(8, 2, 1), Bernoulli(), K=2)
    with pytest.raises(ValueError, match="1.5"):
        SPAN(net, BernoulliEmbedding(), mask_probability=1.5, **TINY_ENCODER)


def test_wrong_variable_count():
    span = bernoulli_span()
    with pytest.raises(ValueError, match=r"5 variables.*6"):
        span(torch.zeros(2, 5, dtype=torch.float64))


def test_wrong_input_rank():
    span = patch_span()
    with pytest.raises(ValueError, match=r"\(batch, 16, 3\).*\(2, 48\)"):
        span(torch.zeros(2, 48, dtype=torch.float64))


def test_wrong_input_dims():
    span = patch_span()
    with pytest.raises(ValueError, match=r"1 dims.*num_dims=3"):
        span(torch.zeros(2, 16, 1, dtype=torch.float64))


def test_input_on_other_device():
    span = bernoulli_span()
    x = random_input(span).to("meta")
    for query in (span, span.attention_weights, span.sum_weights):
        with pytest.raises(ValueError, match="x is on meta but the network is on cpu"):
            query(x)


def test_mask_on_other_device():
    span = bernoulli_span()
    mask = half_mask(span).to("meta")
    with pytest.raises(ValueError, match="marginalize is on meta but the network is on cpu"):
        span(random_input(span), marginalize=mask)
