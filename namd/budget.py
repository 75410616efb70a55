"""One training budget for every generative row of Table 1 (config `budget:`).

Every row trains its generator for the same S_total = pretrain_steps + paired_steps optimiser
steps, at the same batch size, on the same training pairs, so that a difference between rows is
the method's and not its budget's. The rows of NAMD's latent family (`LDM_FAMILY`: NAMD, its
ablation, SD1.5) spend pretrain_steps on the unconditional stage (Eq. 9, `ldm_unconditional_{vae}`)
on their own VAE's latents and paired_steps on the paired stage; every other row spends all of
S_total in its own training loop, its own autoencoders and networks included, as its paper does.
Not counted: the latent family's VAE, shared infrastructure like SD1.5's pretrained VAE in the
paper (Flux trains on the same cached latents). Flux has no stage 1: that would need a
Flux-shaped unconditional model, so it trains S_total paired steps from scratch. A row that
samples another's trained model (`namd.methods.REUSES`: NAMD with the null context) trains nothing.

Free of heavy imports: the Snakefile reads it to fill each training rule's params.
"""

from __future__ import annotations

from namd.methods import LDM_FAMILY, REUSES, get_method_module, upstream_of

#: the training job of the latent family's unconditional stage (one per VAE)
STAGE1 = "ldm_unconditional"


def trainer_budget(config: dict, job: str) -> dict[str, int]:
    """The trainer keys of one training job, a method or STAGE1: {"max_steps", "batch_size"}."""
    budget = config["budget"]
    if job == STAGE1:
        steps = budget["pretrain_steps"]
    elif job in LDM_FAMILY:
        steps = budget["paired_steps"]
    elif job in REUSES:
        steps = 0
    else:
        get_method_module(job)  # an unknown name is an error naming the known ones
        steps = budget["pretrain_steps"] + budget["paired_steps"]
    return {"max_steps": int(steps), "batch_size": int(budget["batch_size"])}


def method_params(config: dict, method: str) -> dict:
    """What a method's training job receives: its own keys (less `vae`, which picks its inputs), the
    latent width when it works on a VAE's latents, `ldm` for NAMD's family, and its share of the budget."""
    own = {k: v for k, v in config["methods"][method].items() if k != "vae"}
    latent = {"latent_channels": config["vae"]["latent_channels"]} if "vae" in upstream_of(method) else {}
    shared = config["ldm"] if method in LDM_FAMILY else {}
    return {**shared, **latent, **own, **trainer_budget(config, method)}


def budget_rows(config: dict, train_pairs: int | None = None) -> list[dict]:
    """Per method of `config["methods"]`: its stage-1 and paired steps, batch, what it sees and
    where it starts from; `train_pairs` (the training split's size) adds epochs over the pairs."""
    batch = int(config["budget"]["batch_size"])
    rows = []
    for method, params in config["methods"].items():
        pre = trainer_budget(config, STAGE1)["max_steps"] if method in LDM_FAMILY else 0
        paired = trainer_budget(config, method)["max_steps"]
        rows.append({
            "method": method,
            "pretrain_steps": pre,
            "paired_steps": paired,
            "total_steps": pre + paired,
            "batch_size": batch,
            "pairs_seen": paired * batch,
            "stage1_images_seen": pre * batch,
            "paired_epochs": paired * batch / train_pairs if train_pairs else None,
            "initialisation": initialisation(config, method, params),
        })
    return rows


def initialisation(config: dict, method: str, params: dict) -> str:
    if method in REUSES:
        return f"none: reuses {REUSES[method]}'s trained model (trains nothing)"
    if method in LDM_FAMILY:
        start = config["ldm"]["unet"].get("pretrained")
        stage1 = f"stage 1 (Eq. 9) on vae_{params['vae']} latents"
        return f"{stage1}, itself from {start}" if start else f"{stage1}, itself from scratch"
    if params.get("pretrained"):
        return f"pretrained {params['pretrained']}"
    if method == "flux":
        return "from scratch (no Flux-shaped stage 1: all steps paired)"
    return "from scratch"
