"""`python -m alert_jax.cli …` — the same as the `alert-jax` entry point."""
import sys

from alert_jax.cli import main

sys.exit(main())
