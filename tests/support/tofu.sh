#!/usr/bin/env bash
# OpenTofu with the providers of the local mirror only (tests/support/install-tofu.sh builds both):
#   bash tests/support/tofu.sh -chdir=terraform/examples/local init
# The machine's own TF_CLI_CONFIG_FILE, if any, is replaced: it could point at a registry.
source "$(dirname "$0")/lib.sh"

[[ -x $CS_BIN/tofu && -f $CS_CACHE/tofurc ]] || die "tofu is not built: run bash tests/support/install-tofu.sh (or make install)"
export TF_CLI_CONFIG_FILE="$CS_CACHE/tofurc"
exec "$CS_BIN/tofu" "$@"
