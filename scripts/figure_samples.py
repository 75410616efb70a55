from namd.data.dataset import Cohort
from namd.evaluation.figures import sample_gallery
from namd.generate import generated_images
from namd.methods import method_titles
from namd.workflow import rule_context

with rule_context(snakemake) as log:
    cohort = Cohort.load(snakemake.input.pairs, snakemake.input.crops)
    test = cohort.indices("test")
    pair_ids = cohort.pairs["pair_id"].to_numpy()[test]
    titles, _ = method_titles(snakemake.params.methods)
    generated = {titles[method]: generated_images(path, pair_ids)
                 for method, path in zip(snakemake.params.methods, snakemake.input.generated)}
    shown = sample_gallery(cohort.baseline[test].numpy(), cohort.followup[test].numpy(),
                           cohort.labels[test].numpy(), list(pair_ids), generated,
                           snakemake.output.png, snakemake.output.pdf, seed=snakemake.params.seed)
    log.info("sample gallery: pairs %s", ", ".join(shown))
