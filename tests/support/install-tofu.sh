#!/usr/bin/env bash
# Builds OpenTofu and the Kubernetes provider from the Go module proxy (never from a Terraform
# registry) and lays the provider into a local filesystem mirror with a CLI config that uses only
# that mirror. Cached in $CS_CACHE per version. Use them through tests/support/tofu.sh.
source "$(dirname "$0")/lib.sh"

TOFU_VERSION="$(sed -n 's/^require github.com\/opentofu\/opentofu //p' "$SUPPORT_DIR/tofu/go.mod")"
# The provider is pinned by a commit's pseudo-version in its module (see its go.mod); the mirror
# calls it by the release it follows.
KUBERNETES_PROVIDER_VERSION="3.2.1"
KUBERNETES_PROVIDER_MODULE="$(sed -n 's/^require github.com\/hashicorp\/terraform-provider-kubernetes //p' "$SUPPORT_DIR/tofu-kubernetes/go.mod")"

TOFU_MIRROR="$CS_CACHE/tofu-providers"
TOFU_CLI_CONFIG="$CS_CACHE/tofurc"

if [[ -x $CS_BIN/tofu && -f $CS_BIN/.tofu-$TOFU_VERSION ]]; then
  info "tofu $TOFU_VERSION: cached"
else
  step "Building OpenTofu $TOFU_VERSION from the Go module proxy (5-10 min on 2 cores, once)"
  ( cd "$SUPPORT_DIR/tofu" && \
    with_progress "go build tofu" go build -mod=readonly -trimpath \
      -ldflags "-s -w -X github.com/opentofu/opentofu/version.dev=no" \
      -o "$CS_BIN/tofu" github.com/opentofu/opentofu/cmd/tofu )
  touch "$CS_BIN/.tofu-$TOFU_VERSION"
fi

provider_dir="$TOFU_MIRROR/registry.opentofu.org/hashicorp/kubernetes/$KUBERNETES_PROVIDER_VERSION/linux_amd64"
provider="$provider_dir/terraform-provider-kubernetes_v$KUBERNETES_PROVIDER_VERSION"
stamp="$provider_dir/.built-from-$KUBERNETES_PROVIDER_MODULE"
if [[ -x $provider && -f $stamp ]]; then
  info "Kubernetes provider $KUBERNETES_PROVIDER_VERSION: cached"
else
  step "Building the Kubernetes provider $KUBERNETES_PROVIDER_VERSION from the Go module proxy (5-10 min on 2 cores, once)"
  rm -rf "$provider_dir" && mkdir -p "$provider_dir"
  ( cd "$SUPPORT_DIR/tofu-kubernetes" && \
    with_progress "go build terraform-provider-kubernetes" go build -mod=readonly -trimpath \
      -ldflags "-s -w -X main.Version=$KUBERNETES_PROVIDER_VERSION" \
      -o "$provider" github.com/hashicorp/terraform-provider-kubernetes )
  touch "$stamp"
fi

# Only the mirror: a provider that is not in it fails at `tofu init` instead of being downloaded.
cat >"$TOFU_CLI_CONFIG.tmp" <<CONFIG
provider_installation {
  filesystem_mirror {
    path    = "$TOFU_MIRROR"
    include = ["registry.opentofu.org/hashicorp/kubernetes"]
  }
}
CONFIG
mv "$TOFU_CLI_CONFIG.tmp" "$TOFU_CLI_CONFIG"
