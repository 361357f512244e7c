"""Where the YAML files shipped with alert_jax live, in a checkout and in an installed wheel alike.

The truth is `configs/` at the top of the repository (experiments, studies, suites), edited in place.
`alert_jax/configs` is a link to it, and pyproject's package-data copies what it reaches into the wheel, so
`CONFIGS_DIR` names the same files whether alert_jax runs from a checkout, an editable install or a regular
install — no second copy to keep in step.
"""
from __future__ import annotations

from pathlib import Path

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
