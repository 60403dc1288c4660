#!/usr/bin/env bash
# A real Kubernetes control plane for the tests and `make up`: etcd and kube-apiserver built
# from the Go module proxy (install-kube.sh), started envtest-style on free loopback ports
# with TLS, a client-certificate admin, service-account keys and RBAC.
#
#   kube.sh install            build (once) kube-apiserver, kubectl, etcd and helm
#   kube.sh start STATE_DIR    start etcd + kube-apiserver on the data, certificates (pki.sh) and
#                              ports that STATE_DIR keeps; writes STATE_DIR/kubeconfig and
#                              appends KUBECONFIG=... to STATE_DIR/env. ETCD_NO_FSYNC=1: etcd
#                              without fsync (throwaway test state). OIDC_ISSUER=https://...: the
#                              apiserver also trusts that Keycloak realm's tokens (see authentication_config)
#   kube.sh stop STATE_DIR     stop both (idempotent)
source "$(dirname "$0")/lib.sh"

# A kubeconfig at PATH for SERVER, as the client certificate USER of the PKI folder (default: the
# admin), for the cluster named NAME (default compute-server-local).
write_kubeconfig() {
  local path="$1" server="$2" pki="$3" user="${4:-admin}" name="${5:-compute-server-local}"
  cat >"$path" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: $name
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$pki/$user.crt")
    client-key-data: $(base64 -w0 "$pki/$user.key")
contexts:
- name: $name
  context: {cluster: $name, user: $user, namespace: default}
current-context: $name
KUBECONFIG
  chmod 600 "$path"
}

# People sign in to the apiserver through Keycloak: a JWT authenticator for the realm's https
# issuer (the apiserver accepts no other), whose ID tokens for the client `kubernetes` carry
# preferred_username and groups. Both get the prefix `oidc:`, so that no Keycloak user can pass
# for a Kubernetes one (system:..., a service account); the admission policy strips it again.
authentication_config() {
  local issuer="$1" ca="$2"
  cat <<CONFIG
apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
jwt:
- issuer:
    url: $issuer
    audiences: [kubernetes]
    certificateAuthority: |
$(sed 's/^/      /' "$ca")
  claimMappings:
    username: {claim: preferred_username, prefix: "oidc:"}
    groups: {claim: groups, prefix: "oidc:"}
CONFIG
}

# A kubeconfig for people: the same cluster, and a user whose token comes from kubelogin
# (`kubectl oidc-login`): the device authorization grant against Keycloak (it prints the address
# to open), tokens cached in ~/.kube/cache/oidc-login and refreshed there.
write_oidc_kubeconfig() {
  local path="$1" server="$2" pki="$3" issuer="$4" name="${5:-compute-server-local}"
  cat >"$path" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: $name
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: keycloak
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: $CS_BIN/kubectl-oidc_login
      args:
      - get-token
      - --oidc-issuer-url=$issuer
      - --oidc-client-id=kubernetes
      - --grant-type=device-code
      - --certificate-authority=$pki/ca.crt
      - --skip-open-browser
      interactiveMode: IfAvailable
      provideClusterInfo: false
contexts:
- name: $name
  context: {cluster: $name, user: keycloak, namespace: compute}
current-context: $name
KUBECONFIG
}

start() {
  [[ -x $CS_BIN/kube-apiserver && -x $CS_BIN/etcd ]] || die "the control plane is not built: run $0 install"
  mkdir -p "$1"
  local state; state="$(cd "$1" && pwd -P)"
  local dir="$state/kube" pki="$state/pki" t0=$SECONDS
  stop "$state" 2>/dev/null
  # Before state was kept, kube/ held throwaway data and certificates of its own.
  [[ ! -d $dir/pki ]] || { info "removing the throwaway control plane state of an older layout in $dir"; rm -rf "$dir"; }
  mkdir -p "$dir"
  bash "$SUPPORT_DIR/pki.sh" ensure "$state"

  local etcd_port peer_port api_port
  etcd_port="$(state_port "$state" ETCD_PORT)"
  peer_port="$(state_port "$state" ETCD_PEER_PORT)"
  api_port="$(state_port "$state" APISERVER_PORT "${APISERVER_PORT:-}")"
  local etcd_url="http://127.0.0.1:$etcd_port" fsync=()
  [[ ${ETCD_NO_FSYNC:-} != 1 ]] || fsync=(--unsafe-no-fsync)
  step "Starting etcd on $etcd_url (data: $dir/etcd${fsync:+, no fsync}; log: $dir/etcd.log)"
  start_group "$dir/etcd.pid" "$dir/etcd.log" "$CS_BIN/etcd" --name=default --data-dir="$dir/etcd" \
    --listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="default=http://127.0.0.1:$peer_port" \
    "${fsync[@]}" --log-level=warn
  await_ready etcd "$(<"$dir/etcd.pid")" "$dir/etcd.log" 60 curl -sf --max-time 2 "$etcd_url/health"

  local authn=()
  if [[ -n ${OIDC_ISSUER:-} ]]; then
    authentication_config "$OIDC_ISSUER" "$pki/ca.crt" >"$dir/authentication.yaml"
    authn=(--authentication-config="$dir/authentication.yaml")
  fi
  local server="https://127.0.0.1:$api_port"
  step "Starting kube-apiserver on $server (log: $dir/apiserver.log)"
  start_group "$dir/apiserver.pid" "$dir/apiserver.log" "$CS_BIN/kube-apiserver" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --etcd-servers="$etcd_url" --cert-dir="$pki" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" "${authn[@]}" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true \
    --authorization-mode=RBAC --disable-admission-plugins=ServiceAccount
  local kubeconfig="$state/kubeconfig"
  write_kubeconfig "$kubeconfig" "$server" "$pki"
  await_ready kube-apiserver "$(<"$dir/apiserver.pid")" "$dir/apiserver.log" 120 \
    "$CS_BIN/kubectl" --kubeconfig "$kubeconfig" get --raw /readyz
  set_env "$state" KUBECONFIG "$kubeconfig"
  if [[ -n ${OIDC_ISSUER:-} ]]; then
    write_oidc_kubeconfig "$state/kubeconfig-oidc" "$server" "$pki" "$OIDC_ISSUER"
    set_env "$state" KUBECONFIG_OIDC "$state/kubeconfig-oidc"
  fi
  info "kube-apiserver ready in $((SECONDS - t0)) s (kubeconfig: $kubeconfig)"
}

stop() {
  local state; state="$(cd "$1" 2>/dev/null && pwd -P)" || return 0
  # Its command line names the state by its certificates (the kube/ folder only with OIDC).
  stop_group "$state/kube/apiserver.pid" kube-apiserver "$state/pki"
  stop_group "$state/kube/etcd.pid" etcd "$state/kube"
}

# Sourced (by cluster.sh) for its functions only.
[[ ${BASH_SOURCE[0]} == "$0" ]] || return 0

case "${1:-}" in
  install) exec "$SUPPORT_DIR/install-kube.sh" ;;
  start) [[ $# -eq 2 ]] || die "usage: $0 start STATE_DIR"; start "$2" ;;
  stop) [[ $# -eq 2 ]] || die "usage: $0 stop STATE_DIR"; stop "$2" ;;
  *) die "usage: $0 install | start STATE_DIR | stop STATE_DIR" ;;
esac
