import math

import pytest
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from namd.models.losses import alignment_loss, kl_loss, prediction_loss


def literal_alignment_loss(features, latents, sigma_f, sigma_z):
    """Eqs. 2-4 transcribed term by term with Python loops, independent of the vectorised code."""
    batch_size = len(features)

    def row_distribution(points, sigma, i):
        scores = {
            j: math.exp(-sum((points[j][t] - points[i][t]) ** 2 for t in range(len(points[i]))) / (2 * sigma**2))
            for j in range(batch_size)
            if j != i
        }
        normaliser = sum(scores.values())
        return {j: score / normaliser for j, score in scores.items()}

    total = 0.0
    for i in range(batch_size):
        p_row = row_distribution(features, sigma_f, i)
        q_row = row_distribution(latents, sigma_z, i)
        total += sum(p_row[j] * math.log(p_row[j] / q_row[j]) for j in p_row)
    return total / batch_size


@pytest.mark.parametrize("batch_size, sigma_f, sigma_z", [(3, 1.0, 1.0), (5, 0.7, 2.5), (9, 2.0, 4.0)])
def test_alignment_matches_literal_equations(batch_size, sigma_f, sigma_z):
    generator = torch.Generator().manual_seed(batch_size)
    features = torch.randn(batch_size, 3, generator=generator, dtype=torch.float64)
    latents = torch.randn(batch_size, 4, 2, 2, generator=generator, dtype=torch.float64)
    expected = literal_alignment_loss(features.tolist(), latents.flatten(1).tolist(), sigma_f, sigma_z)
    assert alignment_loss(features, latents, sigma_f, sigma_z).item() == pytest.approx(expected, rel=1e-10)


def test_alignment_zero_when_latent_geometry_matches_features():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=generator, dtype=torch.float64))
    latents = (torch.nn.functional.pad(features, (0, 11)) @ rotation + 3.0).reshape(6, 4, 2, 2)
    assert alignment_loss(features, latents, 1.3, 1.3).item() == pytest.approx(0.0, abs=1e-12)
    # the same geometry scaled by 2 is aligned exactly when sigma_z is scaled by 2
    assert alignment_loss(features, 2 * latents, 1.3, 2.6).item() == pytest.approx(0.0, abs=1e-12)
    assert alignment_loss(features, latents, 1.3, 0.5).item() > 1e-3


def test_alignment_positive_for_unrelated_latents_and_stable():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(8, 5, generator=generator)
    latents = torch.randn(8, 64, generator=generator)
    latents[1] = latents[0]  # zero distance must not give NaN gradients
    features.requires_grad_(True)
    latents.requires_grad_(True)
    loss = alignment_loss(features, latents, 1.0, 4.0)
    loss.backward()
    assert loss.item() > 0
    assert torch.isfinite(latents.grad).all() and torch.isfinite(features.grad).all()
    # distances far beyond exp's range: a naive softmax would underflow to 0/0
    assert torch.isfinite(alignment_loss(features, 1e4 * latents, 1.0, 1.0))


def test_alignment_rejects_batches_below_three_and_mismatches():
    # at B = 2 each row has one neighbour: P_i = Q_i = 1, so Eq. 4 would be zero whatever the latents
    for batch in (1, 2):
        with pytest.raises(ValueError, match=rf"at least 3 samples, got {batch}: .* Eq\. 4 is identically zero"):
            alignment_loss(torch.randn(batch, 3), torch.randn(batch, 8), 1.0, 1.0)
    assert alignment_loss(torch.randn(3, 3), torch.randn(3, 8), 1.0, 1.0).item() > 0
    with pytest.raises(ValueError, match="3 rows but latents have 4"):
        alignment_loss(torch.zeros(3, 3), torch.zeros(4, 8), 1.0, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        alignment_loss(torch.zeros(3, 3), torch.zeros(3, 8), 0.0, 1.0)


def test_prediction_loss_hand_computed():
    logits = torch.tensor([0.0, 2.0, -1.0])
    labels = torch.tensor([1.0, 0.0, 0.0])
    # -log(sigmoid(0)), -log(1 - sigmoid(2)) = log(1 + e^2), -log(1 - sigmoid(-1)) = log(1 + e^-1)
    expected = (math.log(2.0) + math.log(1 + math.e**2) + math.log(1 + math.e**-1)) / 3
    assert prediction_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="does not match"):
        prediction_loss(logits, labels[:2])


def test_kl_sums_over_latent_elements_and_averages_over_batch():
    mean = torch.zeros(2, 4, 3, 3)
    mean[0] = 1.0  # sample 0: KL = 0.5 * 36 elements * 1^2; sample 1: standard normal, KL = 0
    log_var = torch.zeros_like(mean)
    posterior = DiagonalGaussianDistribution(torch.cat([mean, log_var], dim=1))
    assert kl_loss(posterior).item() == pytest.approx((0.5 * 36 + 0.0) / 2)
