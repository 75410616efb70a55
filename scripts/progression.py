from namd.methods import method_titles
from namd.stages.progression import progression
from namd.workflow import rule_context

with rule_context(snakemake) as log:
    titles, latex_titles = method_titles(snakemake.params.methods)
    files = dict(snakemake.input.items())
    calibrated = ({"truth": files["truth"], **{k: files[f"train_{k}"] for k in ("pairs", "crops", "crops_table")}}
                  if "truth" in files else None)  # the phantom's calibrated generator row
    table = progression(
        snakemake.input.pairs,
        snakemake.input.crops,
        snakemake.input.crops_table,
        dict(zip(snakemake.params.methods, snakemake.input.generated)),
        snakemake.params.methods,
        params=snakemake.params.readout,
        window=snakemake.params.window,
        out_csv=snakemake.output.csv,
        out_per_seed=snakemake.output.per_seed,
        out_points=snakemake.output.points,
        out_tex=snakemake.output.tex,
        out_png=snakemake.output.png,
        out_pdf=snakemake.output.pdf,
        titles=titles,
        latex_titles=latex_titles,
        calibrated=calibrated,
        seed=snakemake.params.seed,
    )
    log.info("progression table:\n%s", table.to_string())
