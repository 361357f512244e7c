# Helpers sourced by the launch scripts (not run directly).
#
# ALERT_JAX is the command that runs alert_jax; it defaults to the installed `alert-jax` entry
# point and falls back to `python -m alert_jax.cli` when that is not on PATH.

if [[ -z "${ALERT_JAX:-}" ]]; then
  if command -v alert-jax >/dev/null 2>&1; then ALERT_JAX="alert-jax"; else ALERT_JAX="python -m alert_jax.cli"; fi
fi

die() {  # MESSAGE: print a one-line error and the hint to --help, exit 2
  echo "error: $1 (see --help)" >&2
  exit 2
}

need_value() {  # FLAG VALUE: a flag that takes a value must have one
  [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die "$1 needs a value"
}

require_config_and_workdir() {  # CONFIG WORKDIR: both given, and the config file exists
  [[ -n "$1" ]] || die "--config is required"
  [[ -n "$2" ]] || die "--workdir is required"
  [[ -f "$1" ]] || die "--config $1: no such file"
}
