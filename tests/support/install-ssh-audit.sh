#!/usr/bin/env bash
# ssh-audit (PyPI), the peer check of the bastion's SSH door (tests/bastion.rs): what it offers
# and whether it throttles a flood of connections (DHEat). In a virtualenv of its own in
# $CS_CACHE, made once per version. Prints the path of its ssh-audit command last.
source "$(dirname "$0")/lib.sh"

pypi_tool ssh-audit 3.9.0 seconds
