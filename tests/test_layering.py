"""Who may import whom, checked on the source so that a violation fails CI.

The layers, lowest first (a module imports only from layers below it):

1. ``files`` (atomic writes) and ``spacing`` (the one pixel-spacing reader): nothing of the package;
2. ``data``, ``transforms``, ``fusion``, ``metrics``, ``networks`` (only ``networks`` imports
   ultralytics), ``reports`` (the Mammography CAD SR: pydicom, no torch);
3. ``inference`` (the multi-scale detector);
4. ``batch`` (detection over files: JSON results, failures);
5. ``engines`` (Ignite training / evaluation, calibration, the bundle's entry points);
6. ``cli`` (``monai-smalldet``), and, outside the package, ``apps/`` (the MONAI Deploy app uses
   the library layers 1-4, never ``engines`` or ``cli``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "monai_smalldet"


def imports_of(path: Path) -> set[str]:
    """Absolute module names imported by ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    module = ".".join(("monai_smalldet", *path.relative_to(PACKAGE).with_suffix("").parts))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def files(sub: str) -> list[Path]:
    target = PACKAGE / sub
    return sorted(target.rglob("*.py")) if target.is_dir() else [target.with_suffix(".py")]


RULES = [
    # (files, forbidden import prefixes)
    (
        "data",
        ("monai_smalldet.networks", "monai_smalldet.inference", "monai_smalldet.engines", "ultralytics"),
    ),
    (
        "transforms",
        ("monai_smalldet.networks", "monai_smalldet.inference", "monai_smalldet.engines", "ultralytics"),
    ),
    (
        "fusion",
        ("monai_smalldet.networks", "monai_smalldet.inference", "monai_smalldet.transforms", "ultralytics"),
    ),
    (
        "metrics",
        ("monai_smalldet.networks", "monai_smalldet.inference", "monai_smalldet.transforms", "ultralytics"),
    ),
    # clinical output: pydicom and numpy over the spacing reader, nothing of the ML stack
    (
        "reports",
        (
            "monai_smalldet.networks",
            "monai_smalldet.inference",
            "monai_smalldet.engines",
            "torch",
            "monai.",
            "ultralytics",
        ),
    ),
    ("networks", ("monai_smalldet.data", "monai_smalldet.transforms", "monai_smalldet.inference")),
    ("inference", ("monai_smalldet.engines", "monai_smalldet.cli", "apps", "ultralytics")),
    ("batch", ("monai_smalldet.engines", "monai_smalldet.cli", "apps")),
    ("engines", ("monai_smalldet.cli", "apps")),
    # the atomic-write helper under every layer: nothing of the package, nothing heavy
    ("files", ("monai_smalldet.", "torch", "monai", "numpy", "ultralytics")),
    ("spacing", ("monai_smalldet.", "torch", "monai", "ultralytics")),
]


@pytest.mark.parametrize(("sub", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_import_rules(sub, forbidden):
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in files(sub)
        for name in imports_of(path)
        if name.startswith(forbidden)
    ]
    assert offenders == []


def test_only_networks_imports_ultralytics():
    allowed = {PACKAGE / "runtime.py"}  # turns telemetry off, called only from networks/
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "networks" not in path.parts
        and path not in allowed
        and any(name.split(".")[0] == "ultralytics" for name in imports_of(path))
    ]
    assert offenders == []


def test_the_app_uses_the_library_layers_only():
    apps = PACKAGE.parent / "apps"
    offenders = []
    for path in sorted(apps.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            offenders += [
                f"{path.relative_to(apps)} imports {n}"
                for n in names
                if n.startswith(("monai_smalldet.engines", "monai_smalldet.cli"))
            ]
    assert offenders == []


def test_the_checker_sees_relative_imports():
    assert "monai_smalldet.networks" in imports_of(PACKAGE / "inference.py")
    assert "monai_smalldet.fusion" in imports_of(PACKAGE / "inference.py")
