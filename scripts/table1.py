import json

from namd.evaluation.table import latex_escape
from namd.methods import get_method, method_titles
from namd.stages.evaluate import build_table
from namd.workflow import rule_context

with rule_context(snakemake) as log:
    evaluation = snakemake.params.evaluation
    methods = {m: (get_method(m).group, get_method(m).stochastic) for m in snakemake.params.methods}
    titles, latex_titles = method_titles(snakemake.params.methods)
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
        titles=titles,
        latex_titles=latex_titles,
    )
    log.info("Table 1:\n%s", table.to_string())
