"""ACDC label values (not the UK Biobank order)."""

LABELS = {1: "RV cavity", 2: "LV myocardium", 3: "LV cavity"}
RV, MYO, LV = 1, 2, 3
MYOCARDIAL_DENSITY_G_PER_ML = 1.05
