#!/usr/bin/env bash
# checkov (PyPI), the peer check of the chart's manifests (tests/helm.rs), in a virtualenv of its
# own in $CS_CACHE, made once per version. Prints the path of its checkov command last.
source "$(dirname "$0")/lib.sh"

CHECKOV_VERSION=3.3.30
venv="$CS_CACHE/checkov-$CHECKOV_VERSION"
if [[ -f $venv/.installed ]]; then
  info "checkov $CHECKOV_VERSION: cached"
else
  step "Installing checkov $CHECKOV_VERSION from PyPI into $venv (1-2 min, once)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  with_progress "pip install checkov" "$venv/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
  touch "$venv/.installed"
fi
echo "$venv/bin/checkov"
