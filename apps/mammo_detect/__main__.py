"""Entry point: ``python -m apps.mammo_detect -i DICOM_DIR -o OUT_DIR -m MODEL_DIR``.

Also runs as ``python path/to/mammo_detect`` (a folder run as a script, how a MAP built by
``holoscan package`` starts a Python-module app: ``python3 /opt/holoscan/app``); the folder
is then imported as the package ``mammo_detect`` whatever its name.
"""

import sys

if __package__:
    from .app import main
else:  # run as a folder: no parent package
    import importlib.util
    from pathlib import Path

    _here = Path(__file__).resolve().parent
    _spec = importlib.util.spec_from_file_location(
        "mammo_detect", _here / "__init__.py", submodule_search_locations=[str(_here)]
    )
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["mammo_detect"] = _module
    _spec.loader.exec_module(_module)
    main = _module.main

if __name__ == "__main__":
    sys.exit(main())
