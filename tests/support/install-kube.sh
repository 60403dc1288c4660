#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from the Go module proxy (tests/support/kube/go.mod),
# and helm with `go install`. Cached in $CS_CACHE/bin per version.
source "$(dirname "$0")/lib.sh"

stamp="$CS_BIN/.kube-$K8S_VERSION-etcd-$ETCD_VERSION"
if [[ -f $stamp && -x $CS_BIN/kube-apiserver && -x $CS_BIN/kubectl && -x $CS_BIN/etcd ]]; then
  info "kube-apiserver, kubectl, etcd $K8S_VERSION/$ETCD_VERSION: cached"
else
  step "Building kube-apiserver, kubectl ($K8S_VERSION) and etcd ($ETCD_VERSION) from the Go module proxy (10-20 min on 2 cores, once)"
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
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
