"""CorrFlowNet (Table 1, ODE deterministic and SDE stochastic): latent flow from baseline to follow-up.

Follows Wu, Wang, Zhang, Zhou, Ying, "Early Lung Cancer Diagnosis from Virtual Follow-up LDCT
Generation via Correlational Autoencoder and Latent Flow Matching", arXiv 2511.18185 (2025). Only
the abstract could be read; the rest is our reading (BASELINES.md), with the correlational
autoencoder of CorrNet (Chandar et al., Neural Computation 2016):

Stage 1, correlational autoencoder. One conv encoder E maps either crop to a latent map
z = E(x) (latent_channels x S/4 x S/4 by default); one conv decoder D maps a latent to both views,
channel 0 the baseline and channel 1 the follow-up (CorrNet's decoder reconstructs every view from
one view's code). With z1 = E(x1), z2 = E(x2):
    self-reconstruction   ||D(z1)_0 - x1||^2 + ||D(z2)_1 - x2||^2
    cross-reconstruction  lambda_cross * ||D(z1)_1 - x2||^2   (the follow-up from the baseline code)
    correlation           - lambda_corr * mean over latent dims of corr(z1_d, z2_d) across the batch
    malignancy probe      lambda_cls * BCE(linear(z), label) on z1 and z2 (the auxiliary classifier)

Stage 2, latent flow ("background-aligned" read as: the flow starts at the baseline latent, not at
noise). A velocity net v(z_t, t, z1), a small U-Net on [z_t, z1] with a time embedding, is trained
on the bridge path
    z_t = (1 - t) z1 + t z2 + sigma sqrt(t (1 - t)) eps,   target (z2 - z_t) / (1 - t),
which for sigma = 0 (the ODE variant) is plain flow matching on the straight path with target
z2 - z1, and for sigma > 0 (the SDE variant) is (augmented) Brownian-bridge matching: the target
is the drift of the bridge pinned at z2, whose regression gives an SDE dz = v dt + sigma dW with
the bridge's marginals. Sampling integrates from z1 with n_steps Euler (ODE) or Euler-Maruyama
(SDE) steps and decodes D(z)_1. The last SDE step adds no noise (the bridge is pinned at t = 1).
Training times are drawn from [0, 1 - 1/n_steps], the times the sampler evaluates; this also keeps
the bridge target's variance, sigma^2 t / (1 - t), bounded.

Both stages train jointly with one optimiser: the flow loss sees the latents through a
stop-gradient, so the autoencoder is shaped only by its own losses and the velocity net tracks
its latents as they settle. One optimiser, one loop, no phase boundary to tune. The validation
loss (model selection) is this same total objective on validation pairs, with its noise fixed by
the trainer; "followup_mse" (decoded noise-free endpoint vs the real follow-up) is logged beside it.

Deviations, and why: layer sizes, latent size and loss weights are not published and are
CPU-sized here; Euler rather than an adaptive ODE solver, so both variants share one integrator
and the time grid they train on. The SDE variant and its sigma are not described in the abstract
(NAMD's Table 1 lists it): the bridge is our reading.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from namd.methods import register
from namd.methods.base import DataSpec, GenerativeMethod, MethodContext
from namd.methods.blocks import ConvDecoder, ConvEncoder, ConvUNet, TimeEmbedding, merge_params
from namd.sampling import sample_noise

DEFAULTS: dict[str, Any] = {
    "latent_channels": 4,  # channels of the latent map
    "ae_channels": 16,  # autoencoder width at full resolution
    "ae_mults": [1, 2, 4],  # autoencoder widths per scale; latent side = S / 2**(len - 1)
    "flow_channels": 32,  # velocity U-Net width at latent resolution
    "flow_mults": [1, 2],  # velocity U-Net widths per scale
    "time_dim": 64,  # time-embedding width
    "lr": 2e-4,  # Adam learning rate (both stages)
    "lambda_cross": 1.0,  # cross-reconstruction weight
    "lambda_corr": 0.1,  # latent correlation weight (subtracted)
    "lambda_cls": 0.1,  # latent malignancy-probe BCE weight
    "n_steps": 20,  # Euler / Euler-Maruyama steps from t = 0 to 1
}


def latent_correlation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean over latent dimensions of the Pearson correlation of a_d and b_d across the batch (CorrNet)."""
    a = a.flatten(1) - a.flatten(1).mean(0)
    b = b.flatten(1) - b.flatten(1).mean(0)
    return ((a * b).sum(0) / ((a.square().sum(0) * b.square().sum(0)).sqrt() + eps)).mean()


@register
class CorrFlowNetODE(GenerativeMethod):
    """Correlational autoencoder + straight-path latent flow, integrated by Euler from z1."""

    name = "corrflownet_ode"
    title = "CorrFlowNet (ODE)"
    stochastic = False
    group = "Deterministic Methods"
    reference = "Wu et al., arXiv 2511.18185, 2025 (CorrFlowNet); CorrNet: Chandar et al., Neural Comput. 2016"
    defaults: dict[str, Any] = DEFAULTS

    def __init__(self, params: dict[str, Any], spec: DataSpec, context: MethodContext):
        super().__init__(params, spec, context)
        self.params = p = merge_params(self.name, self.defaults, params)
        if int(p["n_steps"]) < 2:
            raise ValueError(f"{self.name}: n_steps must be at least 2, got {p['n_steps']}")
        if self.stochastic and not self.sigma > 0:
            raise ValueError(f"{self.name}: sigma must be > 0 (sigma = 0 is corrflownet_ode), got {self.sigma}")
        c = p["latent_channels"]
        self.encoder = ConvEncoder(spec.channels, c, p["ae_channels"], p["ae_mults"])
        self.decoder = ConvDecoder(c, 2 * spec.channels, p["ae_channels"], p["ae_mults"])
        side = spec.image_size // 2 ** (len(p["ae_mults"]) - 1)
        self.probe = nn.Linear(c * side * side, 1)
        self.time = TimeEmbedding(p["time_dim"])
        self.velocity_net = ConvUNet(2 * c, c, p["flow_channels"], p["flow_mults"], emb_dim=p["time_dim"])
        self.latent_shape = (c, side, side)

    @property
    def sigma(self) -> float:
        """Bridge noise scale: 0 makes the path straight and the sampler an ODE."""
        return 0.0

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 2C, S, S) in [-1, 1]: the baseline view then the follow-up view of each latent."""
        return torch.tanh(self.decoder(z))

    def velocity(self, z_t: torch.Tensor, t: torch.Tensor, z_base: torch.Tensor) -> torch.Tensor:
        return self.velocity_net(torch.cat([z_t, z_base], dim=1), self.time(t))

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": torch.optim.Adam(self.parameters(), lr=self.params["lr"])}

    def _flow_loss(self, z_base: torch.Tensor, z_follow: torch.Tensor) -> torch.Tensor:
        t_max = 1.0 - 1.0 / self.params["n_steps"]
        t = torch.rand(z_base.shape[0], device=z_base.device) * t_max
        tt = t[:, None, None, None]
        z_t = (1 - tt) * z_base + tt * z_follow + self.sigma * (tt * (1 - tt)).sqrt() * torch.randn_like(z_base)
        return F.mse_loss(self.velocity(z_t, t, z_base), (z_follow - z_t) / (1 - tt))

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x1, x2, label = batch["baseline"], batch["followup"], batch["label"].float()
        ch = self.spec.channels
        z1, z2 = self.encoder(x1), self.encoder(x2)
        from_base, from_follow = self.decode(z1), self.decode(z2)
        p = self.params
        out = {
            "self_recon": F.mse_loss(from_base[:, :ch], x1) + F.mse_loss(from_follow[:, ch:], x2),
            "cross_recon": F.mse_loss(from_base[:, ch:], x2),
            "correlation": latent_correlation(z1, z2),
            "probe_bce": 0.5 * (
                F.binary_cross_entropy_with_logits(self.probe(z1.flatten(1)).squeeze(1), label)
                + F.binary_cross_entropy_with_logits(self.probe(z2.flatten(1)).squeeze(1), label)
            ),
            "flow": self._flow_loss(z1.detach(), z2.detach()),
        }
        out["loss"] = (
            out["self_recon"] + p["lambda_cross"] * out["cross_recon"] - p["lambda_corr"] * out["correlation"]
            + p["lambda_cls"] * out["probe_bce"] + out["flow"]
        )
        return out

    @torch.no_grad()
    def validation_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.losses(batch)
        z = self.integrate(self.encoder(batch["baseline"]), None)
        out["followup_mse"] = F.mse_loss(self.decode(z)[:, self.spec.channels:], batch["followup"])
        return out

    def integrate(self, z_base: torch.Tensor, increments: torch.Tensor | None) -> torch.Tensor:
        """Euler(-Maruyama) from t = 0 to 1; increments (B, n_steps - 1, *latent) are unit normals or None."""
        n = int(self.params["n_steps"])
        dt = 1.0 / n
        z = z_base
        for k in range(n):
            t = torch.full((z.shape[0],), k * dt, device=z.device)
            z = z + self.velocity(z, t, z_base) * dt
            if increments is not None and k < n - 1:
                z = z + self.sigma * dt**0.5 * increments[:, k]
        return z

    def _increments(self, pair_ids: Sequence[str], seeds: Sequence[int]) -> torch.Tensor | None:
        """Per-sample Brownian increments; none for the ODE."""
        return None

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], seeds: Sequence[int]) -> torch.Tensor:
        seeds = list(seeds) if self.stochastic else [0]
        n_pairs, k = len(batch["pair_id"]), len(seeds)
        z_base = self.encoder(batch["baseline"]).repeat_interleave(k, dim=0)
        increments = self._increments(batch["pair_id"], seeds)
        if increments is not None:
            increments = increments.to(z_base.device, z_base.dtype)
        images = self.decode(self.integrate(z_base, increments))[:, self.spec.channels:]
        return images.reshape(n_pairs, k, *images.shape[1:])


@register
class CorrFlowNetSDE(CorrFlowNetODE):
    """The same model trained on the Brownian bridge (sigma > 0) and sampled by Euler-Maruyama."""

    name = "corrflownet_sde"
    title = "CorrFlowNet (SDE)"
    stochastic = True
    group = "Stochastic Methods"
    defaults = {**DEFAULTS, "sigma": 0.1}  # sigma: bridge noise scale, in latent units

    @property
    def sigma(self) -> float:
        return float(self.params["sigma"])

    def _increments(self, pair_ids: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        shape = (int(self.params["n_steps"]) - 1, *self.latent_shape)
        return sample_noise(pair_ids, seeds, shape, self.context.seed)
