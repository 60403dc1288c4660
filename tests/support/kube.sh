#!/usr/bin/env bash
# A real Kubernetes control plane for the tests and `make up`: etcd and kube-apiserver built
# from the Go module proxy (install-kube.sh), started envtest-style on free loopback ports
# with TLS, a client-certificate admin, service-account keys and RBAC.
#
#   kube.sh install            build (once) kube-apiserver, kubectl, etcd and helm
#   kube.sh start STATE_DIR    start etcd + kube-apiserver; writes STATE_DIR/kubeconfig and
#                              appends KUBECONFIG=... to STATE_DIR/env
#   kube.sh stop STATE_DIR     stop both (idempotent)
source "$(dirname "$0")/lib.sh"

# Certificates: one CA signs the apiserver's serving certificate and the admin's client
# certificate (group system:masters, like envtest's admin). Short-lived keys, made per start.
make_pki() {
  local pki="$1"
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
      -keyout ca.key -out ca.crt -subj "/CN=compute-server-test-ca" 2>/dev/null
    sign() { # name subject [extensions]
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
        -out "$1.csr" -subj "$2" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
        -out "$1.crt" ${3:+-extfile <(printf '%s' "$3")} 2>/dev/null
      rm "$1.csr"
    }
    sign apiserver "/CN=kube-apiserver" \
      "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth"
    sign admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

write_kubeconfig() {
  local path="$1" server="$2" pki="$3"
  cat >"$path" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: compute-server-local
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 "$pki/admin.crt")
    client-key-data: $(base64 -w0 "$pki/admin.key")
contexts:
- name: compute-server-local
  context: {cluster: compute-server-local, user: admin, namespace: default}
current-context: compute-server-local
KUBECONFIG
  chmod 600 "$path"
}

start() {
  [[ -x $CS_BIN/kube-apiserver && -x $CS_BIN/etcd ]] || die "the control plane is not built: run $0 install"
  mkdir -p "$1"
  local state; state="$(cd "$1" && pwd -P)"
  local dir="$state/kube" t0=$SECONDS
  stop "$state" 2>/dev/null
  rm -rf "$dir"; mkdir -p "$dir"
  make_pki "$dir/pki"

  local etcd_port peer_port api_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
  local etcd_url="http://127.0.0.1:$etcd_port"
  step "Starting etcd on $etcd_url (log: $dir/etcd.log)"
  start_group "$dir/etcd.pid" "$dir/etcd.log" "$CS_BIN/etcd" --name=default --data-dir="$dir/etcd" \
    --listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="default=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync --log-level=warn
  await_ready etcd "$(<"$dir/etcd.pid")" "$dir/etcd.log" 60 curl -sf --max-time 2 "$etcd_url/health"

  local server="https://127.0.0.1:$api_port"
  step "Starting kube-apiserver on $server (log: $dir/apiserver.log)"
  start_group "$dir/apiserver.pid" "$dir/apiserver.log" "$CS_BIN/kube-apiserver" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --etcd-servers="$etcd_url" --cert-dir="$dir/pki" \
    --tls-cert-file="$dir/pki/apiserver.crt" --tls-private-key-file="$dir/pki/apiserver.key" \
    --client-ca-file="$dir/pki/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$dir/pki/sa.pub" \
    --service-account-signing-key-file="$dir/pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true \
    --authorization-mode=RBAC --disable-admission-plugins=ServiceAccount
  local kubeconfig="$state/kubeconfig"
  write_kubeconfig "$kubeconfig" "$server" "$dir/pki"
  await_ready kube-apiserver "$(<"$dir/apiserver.pid")" "$dir/apiserver.log" 120 \
    "$CS_BIN/kubectl" --kubeconfig "$kubeconfig" get --raw /readyz
  set_env "$state" KUBECONFIG "$kubeconfig"
  info "kube-apiserver ready in $((SECONDS - t0)) s (kubeconfig: $kubeconfig)"
}

stop() {
  local state; state="$(cd "$1" 2>/dev/null && pwd -P)" || return 0
  stop_group "$state/kube/apiserver.pid" kube-apiserver "$state/kube"
  stop_group "$state/kube/etcd.pid" etcd "$state/kube"
}

case "${1:-}" in
  install) exec "$SUPPORT_DIR/install-kube.sh" ;;
  start) [[ $# -eq 2 ]] || die "usage: $0 start STATE_DIR"; start "$2" ;;
  stop) [[ $# -eq 2 ]] || die "usage: $0 stop STATE_DIR"; stop "$2" ;;
  *) die "usage: $0 install | start STATE_DIR | stop STATE_DIR" ;;
esac
