"""BASELINE, NOT PART OF THE PRODUCT: the teaching app's serving design, kept only so the
benchmark can measure mnistream against it under the same load generator."""
