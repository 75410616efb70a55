"""NLST codes, lobe tables, the screen-to-screen shift and the columns of every file the phantom writes."""

SPICULATED, SMOOTH, POORLY_DEFINED = 1, 2, 3
NODULE, MICRONODULE, CALCIFIED_NODULE = 51, 52, 53
OTHER_FINDINGS = tuple(range(54, 66))
MAX_SHIFT_PX = 3  # patient repositioning between screens
RIGHT_LOBES = (1, 2, 3)
LOBE_PROBABILITIES = {1: 0.28, 2: 0.08, 3: 0.19, 4: 0.23, 5: 0.05, 6: 0.17}
CANCER_LOCATION_COLUMNS = {1: "locrup", 2: "locrmid", 3: "locrlow", 4: "loclup", 5: "loclin", 6: "locllow"}
FAMILY_COLUMNS = ("famfather", "fammother", "fambrother", "famsister", "famchild")
FAMILY_PREVALENCE = (0.14, 0.07, 0.08, 0.05, 0.02)

PRSN_COLUMNS = [
    "pid",
    "age",
    "gender",
    "diagemph",
    *FAMILY_COLUMNS,
    "cigsmok",
    "pkyr",
    "can_scr",
    "conflc",
    "cancyr",
    "candx_days",
    "scr_days0",
    "scr_days1",
    "scr_days2",
    *CANCER_LOCATION_COLUMNS.values(),
]
SCTABN_COLUMNS = [
    "pid",
    "study_yr",
    "sct_ab_num",
    "sct_ab_desc",
    "sct_pre_att",
    "sct_epi_loc",
    "sct_long_dia",
    "sct_perp_dia",
    "sct_margins",
    "sct_slice_num",
    "sct_found_after_comp",
]
SCTABNC_COLUMNS = [
    "pid",
    "study_yr",
    "sct_ab_num",
    "sct_ab_preexist",
    "sct_ab_gwth",
    "sct_ab_attn",
    "sct_ab_invg",
    "visible_days",
]
LOCATION_COLUMNS = [
    "pid",
    "study_yr",
    "sct_ab_num",
    "nodule_id",
    "series_instance_uid",
    "row",
    "col",
    "slice_index",
]
TRUTH_COLUMNS = [
    "pid",
    "nodule_id",
    "study_yr",
    "sct_ab_num",
    "malignant",
    "brock_risk",
    "vdt_days",
    "first_screen",
    "long_dia_mm",
    "perp_dia_mm",
    "attenuation",
    "margins",
    "core_fraction",
    "lobe",
    "juxtapleural",
    "series_instance_uid",
    "row",
    "col",
    "slice_index",
]
