"""Deployable applications built on monai_smalldet (MONAI Deploy App SDK)."""
