#!/usr/bin/env bash
# checkov (PyPI), the peer check of the chart's manifests (tests/helm.rs), in a virtualenv of its
# own in $CS_CACHE, made once per version. Prints the path of its checkov command last.
source "$(dirname "$0")/lib.sh"

pypi_tool checkov 3.3.30 "1-2 min"
