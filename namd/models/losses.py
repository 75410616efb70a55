"""Loss terms of the nodule-aligned VAE (paper Section 3.2, Eqs. 2-6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Eq. 4 needs two neighbours per sample to compare: at B = 2 both distributions are the point mass 1
ALIGNMENT_MIN_BATCH = 3


def _neighbour_log_probs(points: torch.Tensor, sigma: float) -> torch.Tensor:
    """Row-wise log of Eq. 3: log-softmax over j != i of -||x_j - x_i||^2 / (2 sigma^2).

    The diagonal is -inf before the softmax so that it takes no mass (P_ii = 0) and the other
    entries of each row are normalised over k != i exactly as Eq. 3 writes them. Differences are
    squared directly (not cdist's sqrt then square) so the gradient at zero distance is finite.
    """
    squared_distances = (points[:, None, :] - points[None, :, :]).square().sum(dim=-1)
    logits = -squared_distances / (2.0 * sigma**2)
    self_pairs = torch.eye(points.shape[0], dtype=torch.bool, device=points.device)
    return torch.log_softmax(logits.masked_fill(self_pairs, float("-inf")), dim=1)


def alignment_loss(features: torch.Tensor, latents: torch.Tensor, sigma_f: float, sigma_z: float) -> torch.Tensor:
    """Eq. 4: mean over the batch of KL(P_i || Q_i), P from nodule features, Q from latents.

    features: (B, T) normalised nodule features f^(n); latents: (B, ...) flattened to (B, D).
    The KL is computed from log-probabilities (log_softmax), never from log(P / Q), so rows whose
    distances are large stay finite; the diagonal (P_ii = 0, log -inf) is dropped before the sum,
    so no inf - inf enters the graph.
    """
    if features.ndim != 2:
        raise ValueError(f"alignment_loss: features must be (B, T), got shape {tuple(features.shape)}")
    batch_size = features.shape[0]
    if batch_size < ALIGNMENT_MIN_BATCH:
        raise ValueError(
            f"alignment_loss needs a batch of at least {ALIGNMENT_MIN_BATCH} samples, got {batch_size}: Eq. 3 "
            "normalises over j != i, so with 2 samples each row has one neighbour, P_i = Q_i = 1 and Eq. 4 is "
            "identically zero (no gradient)"
        )
    if latents.shape[0] != batch_size:
        raise ValueError(
            f"alignment_loss: features have {batch_size} rows but latents have {latents.shape[0]}"
        )
    if sigma_f <= 0 or sigma_z <= 0:
        raise ValueError(f"alignment_loss: sigma_f and sigma_z must be > 0, got {sigma_f} and {sigma_z}")
    off_diagonal = ~torch.eye(batch_size, dtype=torch.bool, device=latents.device)
    log_p = _neighbour_log_probs(features.to(latents.dtype), sigma_f)[off_diagonal]
    log_q = _neighbour_log_probs(latents.flatten(1), sigma_z)[off_diagonal]
    return (log_p.exp() * (log_p - log_q)).sum() / batch_size


def prediction_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 5 averaged over the batch; h_theta's sigmoid is folded into the stable BCE-with-logits."""
    if logits.shape != labels.shape:
        raise ValueError(
            f"prediction_loss: logits shape {tuple(logits.shape)} does not match labels shape {tuple(labels.shape)}"
        )
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def kl_loss(posterior) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) of a diffusers DiagonalGaussianDistribution.

    Summed over latent elements and averaged over the batch, as the LDM autoencoder loss
    (``torch.sum(posteriors.kl()) / B``) and diffusers' VAE training scripts reduce it; lambda_KL
    values from those recipes (1e-6) therefore carry over.
    """
    return posterior.kl().mean()
