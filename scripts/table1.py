import json

from namd.evaluation.table import latex_escape
from namd.methods import get_method
from namd.stages.evaluate import build_table
from namd.workflow import rule_context

with rule_context(snakemake) as log:
    evaluation = snakemake.params.evaluation
    classes = {m: get_method(m) for m in snakemake.params.methods}
    methods = {m: (c.group, c.stochastic) for m, c in classes.items()}
    table = build_table(
        dict(zip(snakemake.params.rows, snakemake.input.probs)),
        dict(zip(snakemake.params.methods, snakemake.input.image)),
        methods,
        snakemake.input.pairs,
        seeds=snakemake.params.seeds,
        reference=evaluation["reference"],
        significance_params=evaluation["significance"],
        out_tex=snakemake.output.tex,
        out_csv=snakemake.output.csv,
        out_significance=snakemake.output.significance,
        out_per_seed=snakemake.output.per_seed,
        seed=snakemake.params.seed,
        cohort_source=snakemake.params.cohort_source,
        extra_notes=[latex_escape(json.loads(open(snakemake.input.evaluator).read())["footnote"])],
        titles={m: c.title for m, c in classes.items()},
        latex_titles={m: c.latex_title for m, c in classes.items() if c.latex_title},
    )
    log.info("Table 1:\n%s", table.to_string())
