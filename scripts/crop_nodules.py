import pandas as pd

from namd.data.crops import build_crops, save_crops
from namd.workflow import rule_context

with rule_context(snakemake) as log:
    crop = snakemake.params.crop
    arrays, table = build_crops(
        pd.read_csv(snakemake.input.pairs),
        pd.read_csv(snakemake.input.series_index),
        size=crop["size"],
        window=tuple(crop["hu_window"]),
        border=crop["border"],
    )
    save_crops(arrays, snakemake.output.crops)
    table.to_csv(snakemake.output.table, index=False)
    log.info("%d pairs cropped, %d padded at the image border", len(table), int(arrays["border_padded"].sum()))
