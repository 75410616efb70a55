from namd.data.dataset import Cohort
from namd.evaluation.figures import sample_gallery
from namd.generate import load_generated
from namd.stages.evaluate import TITLES
from namd.workflow import rule_context

with rule_context(snakemake) as log:
    cohort = Cohort.load(snakemake.input.pairs, snakemake.input.crops)
    test = cohort.indices("test")
    pair_ids = cohort.pairs["pair_id"].to_numpy()[test]
    generated = {}
    for method, path in zip(snakemake.params.methods, snakemake.input.generated):
        arrays = load_generated(path, expected_pair_ids=pair_ids)
        order = {p: i for i, p in enumerate(arrays["pair_id"].tolist())}
        generated[TITLES.get(method, method)] = arrays["images"][[order[p] for p in pair_ids]]
    shown = sample_gallery(cohort.baseline[test].numpy(), cohort.followup[test].numpy(),
                           cohort.labels[test].numpy(), list(pair_ids), generated,
                           snakemake.output.png, snakemake.output.pdf, seed=snakemake.params.seed)
    log.info("sample gallery: pairs %s", ", ".join(shown))
