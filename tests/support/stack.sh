#!/usr/bin/env bash
# The whole local stack, for `make up` and `make test`: Docker engine and the local images,
# etcd + kube-apiserver with the CRDs, and Keycloak with the `compute` realm.
#
#   stack.sh install          install and build everything (cached in $CS_CACHE)
#   stack.sh up STATE_DIR     start it all; STATE_DIR/env lists where each part answers
#                             (NODES=N: N local nodes, each a dockerd of its own; default 1)
#   stack.sh down STATE_DIR   stop what `up` started (idempotent)
#   stack.sh local            `make up`: install, start in target/local, stay up until Ctrl-C
#   stack.sh test [ARGS]      `make test`: install, start in target/test, cargo test ARGS, stop
#   stack.sh bench [NAME]     `make bench`: the same in target/bench, cargo bench (release build)
source "$(dirname "$0")/lib.sh"

install() {
  local t0=$SECONDS
  bash "$SUPPORT_DIR/docker.sh" install
  command -v openssl >/dev/null && command -v curl >/dev/null && command -v ssh >/dev/null || {
    step "Installing openssl, curl and openssh-client from the Debian archive"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl curl openssh-client
  }
  command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v wrk >/dev/null || {
    step "Installing chromium, chromium-driver (browser tests) and wrk (web benchmark) from the Debian archive"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver wrk
  }
  bash "$SUPPORT_DIR/kube.sh" install
  bash "$SUPPORT_DIR/keycloak.sh" install
  info "everything installed ($((SECONDS - t0)) s)"
}

up() {
  local state="$1" t0=$SECONDS
  mkdir -p "$state"; state="$(cd "$state" && pwd -P)"
  rm -f "$state/env"
  # Leftovers of a run that was killed before it could stop them.
  bash "$SUPPORT_DIR/keycloak.sh" stop "$state"
  bash "$SUPPORT_DIR/docker.sh" start "$state"
  # Keycloak takes longest: start it alongside the rest and wait for it last.
  bash "$SUPPORT_DIR/keycloak.sh" start "$state" >"$state/keycloak-start.log" 2>&1 &
  local keycloak=$!
  bash "$SUPPORT_DIR/docker.sh" images
  local n
  for ((n = 2; n <= ${NODES:-1}; n++)); do bash "$SUPPORT_DIR/docker.sh" node-start "$state" "$n"; done
  bash "$SUPPORT_DIR/kube.sh" start "$state"

  local kubectl=("$CS_BIN/kubectl" --kubeconfig "$state/kubeconfig")
  step "Installing the CRDs and the local profiles"
  "${kubectl[@]}" apply --server-side -f "$REPO_DIR/crds/" >/dev/null
  "${kubectl[@]}" wait --for condition=Established --timeout=60s -f "$REPO_DIR/crds/" >/dev/null
  "${kubectl[@]}" create namespace compute --dry-run=client -o yaml | "${kubectl[@]}" apply -f - >/dev/null
  "${kubectl[@]}" apply -f "$REPO_DIR/manifests/examples/profiles.yaml" >/dev/null
  # Who may do what to ComputeServers (README "Identity and access"): the chart's admission
  # policies and user role; the local roles run as admin.
  bash "$SUPPORT_DIR/manifests.sh" identity | "${kubectl[@]}" apply -f - >/dev/null

  if ! wait "$keycloak"; then
    cat "$state/keycloak-start.log" >&2
    die "Keycloak did not start"
  fi
  cat "$state/keycloak-start.log" >&2
  set_env "$state" KUBECTL "$CS_BIN/kubectl"
  set_env "$state" HELM "$CS_BIN/helm"
  info "stack up in $((SECONDS - t0)) s; its addresses are in $state/env"
}

down() {
  local state="$1"
  [[ -d $state ]] || return 0
  local pidf dir
  # compute-server's own processes (make up): role-<name>.pid
  for pidf in "$state"/role-*.pid; do
    [[ -e $pidf ]] && stop_group "$pidf" "$(basename "$pidf" .pid | cut -d- -f2-)" compute-server
  done
  for dir in "$state"/nodes/*/; do
    [[ -d $dir ]] && bash "$SUPPORT_DIR/docker.sh" node-stop "$state" "$(basename "$dir")"
  done
  bash "$SUPPORT_DIR/keycloak.sh" stop "$state"
  bash "$SUPPORT_DIR/kube.sh" stop "$state"
  bash "$SUPPORT_DIR/docker.sh" stop "$state"
}

# Builds the binary and the tests, with progress: a cold build takes several minutes.
cargo_build() {
  step "Building compute-server and its tests (cargo; several minutes the first time)"
  (cd "$REPO_DIR" && with_progress "cargo build" cargo build --locked --all-targets --quiet)
}

# Starts `compute-server ARGS` in the background as NAME (pid and log in the local state dir).
start_role() {
  local name="$1"; shift
  step "Starting $name (log: target/local/$name.log)"
  start_group "$state/role-$name.pid" "$state/$name.log" "$REPO_DIR/target/debug/compute-server" "$@"
}

# A value from STATE_DIR/env.
env_var() { sed -n "s/^$2=//p" "$1/env" | tail -n 1; }

local_stack() {
  state="$REPO_DIR/target/local"  # global: the traps read it
  export KEYCLOAK_PORT="${KEYCLOAK_PORT:-8180}"  # a fixed address for people to remember
  install
  cargo_build
  trap 'trap - INT TERM EXIT; echo; down "$state"; exit 0' INT TERM EXIT
  up "$state"
  # shellcheck disable=SC1091
  source "$state/env"
  export KUBECONFIG DOCKER_HOST
  local n node nodes=()
  for ((n = 1; n <= ${NODES:-1}; n++)); do
    node=local; ((n == 1)) || node="local-$n"
    nodes+=("$node")
    if ((n == 1)); then
      start_role "agent-$node" agent --node "$node" --metrics-address 127.0.0.1:0
    else
      DOCKER_HOST="$(env_var "$state" "DOCKER_HOST_$n")" start_role "agent-$node" agent --node "$node" \
        --metrics-address 127.0.0.1:0
    fi
  done
  start_role scheduler scheduler --metrics-address 127.0.0.1:0
  # The host key stays in target/local across runs, so known_hosts entries stay valid.
  start_role bastion bastion --listen 127.0.0.1:2222 --host-key-file "$state/bastion_host_key" \
    --metrics-address 127.0.0.1:0
  COMPUTE_SERVER_SESSION_KEY="$(head -c 64 /dev/urandom | base64 -w0)" start_role web web \
    --listen 127.0.0.1:8080 --public-url http://127.0.0.1:8080 --issuer-url "$KEYCLOAK_ISSUER" \
    --bastion-address 127.0.0.1:2222
  cat <<BANNER

  compute-server local stack is up.

  Kubernetes API  kubectl --kubeconfig target/local/kubeconfig get csrv -A
                  (kubectl $K8S_VERSION: $CS_BIN/kubectl)
  Keycloak        $KEYCLOAK_URL/realms/compute/account   (admin console: $KEYCLOAK_URL/admin, admin/admin)
  Demo logins     alice/alice, bob/bob (group students), carol/carol (staff), ops/ops (compute-admin)
  Docker          $DOCKER_HOST   images computeserver/busybox:local, computeserver/debian-ssh:local
  Examples        kubectl --kubeconfig target/local/kubeconfig apply -f manifests/examples/

  Nodes           ${nodes[*]}: kubectl --kubeconfig target/local/kubeconfig get computenodes
                  (one agent and one dockerd each; NODES=N make up for N nodes; logs: target/local/*.log)
  Scheduler       places unpinned servers on the least allocated Ready node that fits

  Bastion         ssh -J alice@127.0.0.1:2222 root@SERVER   (log: target/local/bastion.log)
                  reaches alice's own servers in namespace compute; her key must be in one of
                  their sshAuthorizedKeys. ProxyJump snippet and refusals: README "SSH access".
  Web front       http://127.0.0.1:8080   sign in as alice/alice, request a server, watch it start
                  JSON API: http://127.0.0.1:8080/api/v1/servers with a Keycloak access token
  Ctrl-C stops everything.

BANNER
  # sleep in the background: bash runs a trap only once the foreground command ends.
  while true; do sleep 3600 & wait $!; done
}

run_tests() {
  state="$REPO_DIR/target/test"  # global: the trap reads it
  local t0=$SECONDS
  # The scheduler's tests place busybox servers on three real Docker engines.
  export NODES=3 NODE_IMAGES=busybox
  install
  cargo_build
  trap 'down "$state"' EXIT
  up "$state"
  # Built here, not inside tests/image.rs, so the long first build does not compete with the
  # other tests for CPU; that test's own build is then a cache hit (and shows any failure).
  bash "$SUPPORT_DIR/image.sh" build >/dev/null || info "the image build failed: tests/image.rs says why"
  step "Running the tests against the real stack (cargo test)"
  (cd "$REPO_DIR" && COMPUTE_SERVER_TEST_ENV="$state/env" cargo test --locked --no-fail-fast "$@")
  info "tests finished in $((SECONDS - t0)) s in all"
}

run_benches() {
  state="$REPO_DIR/target/bench"  # global: the trap reads it
  install
  step "Building compute-server and the benchmarks in release mode (cargo; several minutes the first time)"
  (cd "$REPO_DIR" && with_progress "cargo bench --no-run" cargo bench --locked --no-run --quiet)
  trap 'down "$state"' EXIT
  up "$state"
  step "Running the benchmarks against the real stack (cargo bench${1:+ --bench $1})"
  (cd "$REPO_DIR" && COMPUTE_SERVER_TEST_ENV="$state/env" cargo bench --locked ${1:+--bench "$1"})
}

case "${1:-}" in
  local) local_stack ;;
  bench) shift; run_benches "$@" ;;
  test) shift; run_tests "$@" ;;
  install) install ;;
  up) [[ $# -eq 2 ]] || die "usage: $0 up STATE_DIR"; up "$2" ;;
  down) [[ $# -eq 2 ]] || die "usage: $0 down STATE_DIR"; down "$2" ;;
  *) die "usage: $0 install | up STATE_DIR | down STATE_DIR | local | test [CARGO TEST ARGS] | bench [NAME]" ;;
esac
