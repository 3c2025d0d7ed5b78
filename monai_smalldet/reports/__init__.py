"""Clinical output: the Mammography CAD SR (TID 4000) of a study's findings (pydicom only)."""

from .mammography_cad_sr import (
    FINDING_CODES,
    MAMMOGRAPHY_CAD_SR,
    CadAlgorithm,
    CadFinding,
    CadImage,
    build_mammography_cad_sr,
    read_mammography_cad_sr,
    valid_uid,
)

__all__ = [
    "FINDING_CODES",
    "MAMMOGRAPHY_CAD_SR",
    "CadAlgorithm",
    "CadFinding",
    "CadImage",
    "build_mammography_cad_sr",
    "read_mammography_cad_sr",
    "valid_uid",
]
