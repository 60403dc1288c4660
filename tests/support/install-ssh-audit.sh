#!/usr/bin/env bash
# ssh-audit (PyPI), the peer check of the bastion's SSH door (tests/bastion.rs): what it offers
# and whether it throttles a flood of connections (DHEat). In a virtualenv of its own in
# $CS_CACHE, made once per version. Prints the path of its ssh-audit command last.
source "$(dirname "$0")/lib.sh"

SSH_AUDIT_VERSION=3.9.0
venv="$CS_CACHE/ssh-audit-$SSH_AUDIT_VERSION"
if [[ -f $venv/.installed ]]; then
  info "ssh-audit $SSH_AUDIT_VERSION: cached"
else
  step "Installing ssh-audit $SSH_AUDIT_VERSION from PyPI into $venv (seconds, once)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  with_progress "pip install ssh-audit" "$venv/bin/pip" install -q --disable-pip-version-check "ssh-audit==$SSH_AUDIT_VERSION"
  touch "$venv/.installed"
fi
echo "$venv/bin/ssh-audit"
