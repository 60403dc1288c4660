#!/usr/bin/env bash
# Builds Kubernetes from the Go module proxy (tests/support/kube/go.mod) and helm with
# `go install`, cached in $CS_CACHE/bin per version; only what the caller needs:
#
#   install-kube.sh            kube-apiserver, kubectl, etcd, helm, kubelogin (`make up`, the tests)
#   install-kube.sh node       also what a node of a real cluster runs (`make cluster`, its test):
#                              kubelet, kube-controller-manager, kube-scheduler, kube-proxy, and
#                              CoreDNS (tests/support/coredns/go.mod), the cluster's DNS
#
# Every Kubernetes binary comes from the one module, so a second `go build` reuses the first one's
# packages from Go's build cache and only compiles what is new.
source "$(dirname "$0")/lib.sh"

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"

stamp="$CS_BIN/.kube-$K8S_VERSION-etcd-$ETCD_VERSION"
if [[ -f $stamp && -x $CS_BIN/kube-apiserver && -x $CS_BIN/kubectl && -x $CS_BIN/etcd ]]; then
  info "kube-apiserver, kubectl, etcd $K8S_VERSION/$ETCD_VERSION: cached"
else
  step "Building kube-apiserver, kubectl ($K8S_VERSION) and etcd ($ETCD_VERSION) from the Go module proxy (10-20 min on 2 cores, once)"
  ( cd "$SUPPORT_DIR/kube" && \
    with_progress "go build" go build -trimpath -ldflags "$ldflags" -o "$CS_BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl go.etcd.io/etcd/server/v3 )
  # go names the etcd binary after the element before /v3
  mv "$CS_BIN/server" "$CS_BIN/etcd"
  touch "$stamp"
fi

if [[ -x $CS_BIN/helm && -f $CS_BIN/.helm-$HELM_VERSION ]]; then
  info "helm $HELM_VERSION: cached"
else
  step "Building helm $HELM_VERSION from the Go module proxy (a few minutes, once)"
  with_progress "go install helm" env GOBIN="$CS_BIN" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  touch "$CS_BIN/.helm-$HELM_VERSION"
fi

# kubelogin: kubectl's credential plugin for people signing in through Keycloak (device
# authorization grant; see kube.sh write_oidc_kubeconfig). Its module pins it by hash.
KUBELOGIN_VERSION="$(sed -n 's/^require github.com\/int128\/kubelogin //p' "$SUPPORT_DIR/kubelogin/go.mod")"
if [[ -x $CS_BIN/kubectl-oidc_login && -f $CS_BIN/.kubelogin-$KUBELOGIN_VERSION ]]; then
  info "kubelogin $KUBELOGIN_VERSION: cached"
else
  step "Building kubelogin $KUBELOGIN_VERSION (kubectl oidc-login) from the Go module proxy (a few minutes, once)"
  ( cd "$SUPPORT_DIR/kubelogin" && \
    with_progress "go build kubelogin" go build -mod=readonly -trimpath -ldflags "-s -w -X main.version=$KUBELOGIN_VERSION" \
      -o "$CS_BIN/kubectl-oidc_login" github.com/int128/kubelogin )
  touch "$CS_BIN/.kubelogin-$KUBELOGIN_VERSION"
fi

[[ ${1:-} == node ]] || exit 0

NODE_BINARIES=(kubelet kube-controller-manager kube-scheduler kube-proxy)
node_stamp="$CS_BIN/.kube-node-$K8S_VERSION"
all_built() { local b; for b in "$@"; do [[ -x $CS_BIN/$b ]] || return 1; done; }
if [[ -f $node_stamp ]] && all_built "${NODE_BINARIES[@]}"; then
  info "${NODE_BINARIES[*]} $K8S_VERSION: cached"
else
  step "Building ${NODE_BINARIES[*]} ($K8S_VERSION) from the Go module proxy (5-10 min on 2 cores, once; the API server's packages are reused)"
  ( cd "$SUPPORT_DIR/kube" && \
    with_progress "go build" go build -trimpath -ldflags "$ldflags" -o "$CS_BIN/" \
      "${NODE_BINARIES[@]/#/k8s.io/kubernetes/cmd/}" )
  touch "$node_stamp"
fi

COREDNS_VERSION="$(sed -n 's/^\(require \)\{0,1\}[[:space:]]*github\.com\/coredns\/coredns \(v[0-9][^ ]*\)$/\2/p' "$SUPPORT_DIR/coredns/go.mod")"
if [[ -x $CS_BIN/coredns && -f $CS_BIN/.coredns-$COREDNS_VERSION ]]; then
  info "coredns $COREDNS_VERSION: cached"
else
  step "Building CoreDNS $COREDNS_VERSION from the Go module proxy (2-4 min on 2 cores, once)"
  # Static: it runs alone in an image of its own (cluster.sh).
  ( cd "$SUPPORT_DIR/coredns" && \
    with_progress "go build coredns" env CGO_ENABLED=0 go build -mod=readonly -trimpath \
      -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" -o "$CS_BIN/coredns" . )
  touch "$CS_BIN/.coredns-$COREDNS_VERSION"
fi
