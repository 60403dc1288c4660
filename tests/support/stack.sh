#!/usr/bin/env bash
# The whole local stack, for `make up` and `make test`: Docker engine and the local images,
# etcd + kube-apiserver with the CRDs, and Keycloak with the `compute` realm.
#
#   stack.sh install          install and build everything (cached in $CS_CACHE)
#   stack.sh up STATE_DIR     start it all on the state STATE_DIR keeps (etcd, certificates,
#                             ports, Keycloak's database, keys); STATE_DIR/env lists where each
#                             part answers. NODES=N: N local nodes, each a dockerd of its own
#                             (default 1). ROLES=1: also compute-server's roles, as `make up` runs
#                             them (agent per node, scheduler, bastion, web front; LOCAL_NODE,
#                             WEB_PORT, BASTION_PORT: their node name and ports, else kept ones)
#   stack.sh down [STATE_DIR] stop what `up` started, keeping the state (idempotent; default:
#                             make up's state, $CS_STATE)
#   stack.sh reset [STATE_DIR] [--yes]  stop, then delete the state and what compute-server made
#                             in Docker for its nodes; says what it deletes and asks first
#   stack.sh local            `make up`: install, start on $CS_STATE, stay up until Ctrl-C
#   stack.sh test [ARGS]      `make test`: install, start afresh in target/test, cargo test ARGS, stop
#   stack.sh bench [NAME]     `make bench`: the benchmarks (release build) on a stack in target/bench:
#                             agent, scheduler, web, bastion, browser; NAME for one
#   stack.sh chaos            `make chaos`: tests/chaos.rs on the test stack (CHAOS_SECONDS, CHAOS_SEED)
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
  bash "$SUPPORT_DIR/install-tofu.sh"
  bash "$SUPPORT_DIR/keycloak.sh" install
  bash "$SUPPORT_DIR/seaweedfs.sh" install
  info "everything installed ($((SECONDS - t0)) s)"
}

up() {
  local state="$1" t0=$SECONDS
  mkdir -p "$state"; state="$(cd "$state" && pwd -P)"
  rm -f "$state/env"
  # Leftovers of a run that was killed before it could stop them.
  bash "$SUPPORT_DIR/keycloak.sh" stop "$state"
  bash "$SUPPORT_DIR/pki.sh" ensure "$state"
  bash "$SUPPORT_DIR/docker.sh" start "$state"
  # Keycloak's ports first: the apiserver's authentication configuration names its https issuer.
  local kc_port kc_https_port
  kc_port="$(state_port "$state" KEYCLOAK_PORT "${KEYCLOAK_PORT:-}")"
  kc_https_port="$(state_port "$state" KEYCLOAK_HTTPS_PORT "${KEYCLOAK_HTTPS_PORT:-}")"
  # Keycloak takes longest: start it alongside the rest and wait for it last.
  KEYCLOAK_PORT="$kc_port" KEYCLOAK_HTTPS_PORT="$kc_https_port" \
    bash "$SUPPORT_DIR/keycloak.sh" start "$state" >"$state/keycloak-start.log" 2>&1 &
  local keycloak=$!
  # All three local images on the main daemon (jupyter too); the node daemons get busybox and
  # debian-ssh (only busybox with NODE_IMAGES=busybox, as in `make test`).
  bash "$SUPPORT_DIR/docker.sh" images all
  local n
  for ((n = 2; n <= ${NODES:-1}; n++)); do bash "$SUPPORT_DIR/docker.sh" node-start "$state" "$n"; done
  OIDC_ISSUER="https://127.0.0.1:$kc_https_port/realms/compute" bash "$SUPPORT_DIR/kube.sh" start "$state"
  # The S3-compatible store that snapshots are kept in.
  bash "$SUPPORT_DIR/seaweedfs.sh" start "$state"

  local kubectl=("$CS_BIN/kubectl" --kubeconfig "$state/kubeconfig")
  step "Installing the CRDs and the local profiles"
  "${kubectl[@]}" apply --server-side -f "$REPO_DIR/crds/" >/dev/null
  "${kubectl[@]}" wait --for condition=Established --timeout=60s -f "$REPO_DIR/crds/" >/dev/null
  "${kubectl[@]}" create namespace compute --dry-run=client -o yaml | "${kubectl[@]}" apply -f - >/dev/null
  "${kubectl[@]}" apply -f "$REPO_DIR/manifests/examples/profiles.yaml" >/dev/null
  # Who may do what to ComputeServers (docs/admin-guide.md, "Identity and access"): the chart's admission
  # policies and user role; the local roles run as admin.
  bash "$SUPPORT_DIR/manifests.sh" identity | "${kubectl[@]}" apply -f - >/dev/null

  if ! wait "$keycloak"; then
    cat "$state/keycloak-start.log" >&2
    die "Keycloak did not start"
  fi
  cat "$state/keycloak-start.log" >&2
  set_env "$state" KUBECTL "$CS_BIN/kubectl"
  set_env "$state" HELM "$CS_BIN/helm"
  set_env "$state" KUBELOGIN "$CS_BIN/kubectl-oidc_login"
  [[ ${ROLES:-} != 1 ]] || start_roles "$state"
  info "stack up in $((SECONDS - t0)) s; its addresses are in $state/env"
}

# The local node names of STATE_DIR's roles (local, local-2, ...: kept once roles ran there).
local_nodes() {
  local state="$1" first dir
  first="$(sed -n 's/^LOCAL_NODE=//p' "$state/settings" 2>/dev/null | tail -n 1)"
  [[ -n $first ]] || return 0
  echo "$first"
  for dir in "$state"/nodes/*/; do
    [[ -d $dir ]] && echo "$first-$(basename "$dir")"
  done
  return 0
}

# Stops compute-server's own processes (make up): role-<name>.pid, all at once.
stop_roles() {
  local state="$1" pidf stopping=()
  for pidf in "$state"/role-*.pid; do
    [[ -e $pidf ]] || continue
    stop_group "$pidf" "$(basename "$pidf" .pid | cut -d- -f2-)" compute-server &
    stopping+=($!)
  done
  ((${#stopping[@]} == 0)) || wait "${stopping[@]}" || true
}

# Removes the servers' networks and their firewall rules from each engine of the stack, once its
# servers' containers are gone (`compute-server agent uninstall`; the main engine keeps them
# while another stack's servers use them).
remove_networks() {
  local state="$1" bin="$REPO_DIR/target/debug/compute-server" host
  [[ -x $bin ]] || return 0
  local ids
  for host in "unix:///var/run/docker.sock" $(sed -n 's/^DOCKER_HOST_[0-9]*=//p' "$state/env" 2>/dev/null); do
    if [[ $host != unix:///var/run/docker.sock ]]; then
      ids="$(DOCKER_HOST="$host" docker ps -aq --filter label=app.kubernetes.io/managed-by=compute-server 2>/dev/null || true)"
      [[ -z $ids ]] || DOCKER_HOST="$host" docker rm -f $ids >/dev/null 2>&1 || true
    fi
    "$bin" agent uninstall --docker-host "$host" 2>&1 | sed 's/^/    /' || true
  done
}

down() {
  local state="${1:-$CS_STATE}"
  [[ -d $state ]] || return 0
  state="$(cd "$state" && pwd -P)"
  local dir nodes=() stopping=()
  stop_roles "$state"
  # Then the rest side by side. The servers of node 1 (on the main Docker engine, which stays up)
  # stop too, as those of the other nodes do with their engines; the agent starts them again
  # (the same containers) on `up`.
  stopping=()
  mapfile -t nodes < <(local_nodes "$state")
  if ((${#nodes[@]})); then bash "$SUPPORT_DIR/docker.sh" stop-ours "${nodes[0]}" & stopping+=($!); fi
  for dir in "$state"/nodes/*/; do
    [[ -d $dir ]] || continue
    bash "$SUPPORT_DIR/docker.sh" node-stop "$state" "$(basename "$dir")" & stopping+=($!)
  done
  bash "$SUPPORT_DIR/keycloak.sh" stop "$state" & stopping+=($!)
  bash "$SUPPORT_DIR/kube.sh" stop "$state" & stopping+=($!)
  bash "$SUPPORT_DIR/seaweedfs.sh" stop "$state" & stopping+=($!)
  wait "${stopping[@]}" || true
  bash "$SUPPORT_DIR/docker.sh" stop "$state"
}

# Deletes STATE_DIR after saying what goes and asking (unless --yes): stops the stack, removes
# what compute-server made in Docker for its nodes, then the folder.
reset() {
  local state="${1:-$CS_STATE}" yes="${2:-}"
  if [[ ! -d $state ]]; then info "nothing to reset: $state does not exist"; return 0; fi
  state="$(cd "$state" && pwd -P)"
  local nodes=() node containers volumes dir
  mapfile -t nodes < <(local_nodes "$state")
  step "Resetting the local stack's state in $state ($(du -sh "$state" 2>/dev/null | cut -f1)); this deletes:"
  info "- its Kubernetes database (etcd): every ComputeServer, ComputeProfile, namespace and RBAC object"
  info "- its certificates and keys (pki/; copies of its kubeconfigs stop working), the web front's"
  info "  session key (everyone is signed out), the bastion's host key (known_hosts entries change),"
  info "  the user CA of browser terminals and apps"
  info "- Keycloak's database (users, passwords, sessions; the realm is imported afresh), the logs"
  if ((${#nodes[@]})); then
    node="${nodes[0]}"
    containers="$(DOCKER_HOST="unix:///var/run/docker.sock" docker ps -a --format '{{.Names}}' \
      --filter label=app.kubernetes.io/managed-by=compute-server --filter "label=computeserver.io/node=$node" 2>/dev/null | xargs)"
    volumes="$(DOCKER_HOST="unix:///var/run/docker.sock" docker volume ls -q \
      --filter label=app.kubernetes.io/managed-by=compute-server --filter "label=computeserver.io/node=$node" 2>/dev/null | xargs)"
    info "- on the main Docker engine, node $node's servers: containers: ${containers:-none}; data volumes: ${volumes:-none}"
  fi
  for dir in "$state"/nodes/*/; do
    [[ -d $dir ]] && info "- the Docker engine of local node $(basename "$dir") (${nodes[0]:-local}-$(basename "$dir")) with all its containers, volumes and images"
  done
  if [[ $yes != --yes ]]; then
    [[ -t 0 ]] || die "not deleting without a yes: run it in a terminal, or with YES=1 (make reset YES=1)"
    local answer
    read -r -p "Delete all of this? [y/N] " answer
    [[ $answer == [yY]* ]] || { info "nothing deleted"; return 0; }
  fi
  stop_roles "$state"
  ((${#nodes[@]} == 0)) || bash "$SUPPORT_DIR/docker.sh" remove-ours "${nodes[0]}"
  remove_networks "$state"
  down "$state"
  for dir in "$state"/nodes/*/; do
    [[ -d $dir ]] && bash "$SUPPORT_DIR/docker.sh" node-remove "$state" "$(basename "$dir")"
  done
  local link="$REPO_DIR/target/local"
  [[ ! -L $link || "$(readlink -f "$link")" != "$state" ]] || rm -f "$link"
  rm -rf --one-file-system "$state"
  info "deleted $state"
}

# Builds the binary and the tests, with progress: a cold build takes several minutes.
cargo_build() {
  # The browser libraries the binary embeds (include_bytes!), from web/package-lock.json.
  bash "$SUPPORT_DIR/web-assets.sh"
  step "Building compute-server and its tests (cargo; several minutes the first time)"
  (cd "$REPO_DIR" && with_progress "cargo build" cargo build --locked --all-targets --quiet)
}

# Starts `compute-server ARGS` in the background as NAME (pid and log in the state dir $state).
start_role() {
  local name="$1"; shift
  step "Starting $name (log: $state/$name.log)"
  start_group "$state/role-$name.pid" "$state/$name.log" "$REPO_DIR/target/debug/compute-server" "$@"
}

# A value from STATE_DIR/env.
env_var() { sed -n "s/^$2=//p" "$1/env" | tail -n 1; }

# compute-server's roles on the stack in STATE_DIR, as `make up` runs them: an agent per local
# node, the scheduler, the bastion and the web front. Node names and ports are kept in the state
# folder, so a restart adopts the same nodes' containers and keeps the same addresses.
start_roles() {
  local state="$1" first web_port bastion_port session_key="$1/web-session-key"
  [[ -x $REPO_DIR/target/debug/compute-server ]] || die "compute-server is not built: cargo build"
  first="$(setting "$state" LOCAL_NODE "${LOCAL_NODE:-}" local)"
  web_port="$(state_port "$state" WEB_PORT "${WEB_PORT:-}")"
  bastion_port="$(state_port "$state" BASTION_PORT "${BASTION_PORT:-}")"
  # The key that signs the web front's session cookies, made once: people stay signed in
  # across restarts. Never printed; passed in the environment only.
  [[ -s $session_key ]] || (umask 077; head -c 64 /dev/urandom | base64 -w0 >"$session_key")
  # The user CA of browser sessions (terminal, apps) and the bastion's host key, made once.
  [[ -s $state/user-ca ]] || ssh-keygen -q -t ed25519 -N '' -C compute-server-user-ca -f "$state/user-ca"
  [[ -s $state/bastion_host_key ]] || ssh-keygen -q -t ed25519 -N '' -C compute-server-bastion -f "$state/bastion_host_key"
  # shellcheck disable=SC1091
  source "$state/env"
  export KUBECONFIG DOCKER_HOST
  # The agents keep snapshots in the stack's S3 store (docs/admin-guide.md, "Snapshots").
  export COMPUTE_SERVER_SNAPSHOT_STORE="$SNAPSHOT_STORE" AWS_ENDPOINT="$S3_ENDPOINT" AWS_ALLOW_HTTP=true \
    AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY"
  local n node nodes=()
  for ((n = 1; n <= ${NODES:-1}; n++)); do
    node="$first"; ((n == 1)) || node="$first-$n"
    nodes+=("$node")
    if ((n == 1)); then
      start_role "agent-$node" agent --node "$node" --user-ca-keys "$state/user-ca.pub" --metrics-address 127.0.0.1:0
    else
      DOCKER_HOST="$(env_var "$state" "DOCKER_HOST_$n")" start_role "agent-$node" agent --node "$node" \
        --user-ca-keys "$state/user-ca.pub" --metrics-address 127.0.0.1:0
    fi
  done
  start_role scheduler scheduler --metrics-address 127.0.0.1:0
  # The host key stays in the state folder across runs, so known_hosts entries stay valid.
  start_role bastion bastion --listen "127.0.0.1:$bastion_port" --host-key-file "$state/bastion_host_key" \
    --user-ca-keys "$state/user-ca.pub" --admins ops --metrics-address 127.0.0.1:0
  # The web front signs browser sessions' certificates with the user CA and checks the
  # bastion's host key.
  COMPUTE_SERVER_SESSION_KEY="$(<"$session_key")" start_role web web \
    --listen "127.0.0.1:$web_port" --public-url "http://127.0.0.1:$web_port" --issuer-url "$KEYCLOAK_ISSUER" \
    --bastion-address "127.0.0.1:$bastion_port" --user-ca-key "$state/user-ca" \
    --bastion-host-key "$(ssh-keygen -y -f "$state/bastion_host_key")"
  set_env "$state" NODE_NAMES "$(IFS=,; echo "${nodes[*]}")"
  set_env "$state" WEB_URL "http://127.0.0.1:$web_port"
  set_env "$state" BASTION_ADDRESS "127.0.0.1:$bastion_port"
}

# target/local, where DESIGN and older notes point, links to make up's state folder. An older
# target/local (a folder whose state was made afresh on every start) is stopped and removed;
# its bastion host key moves over, so known_hosts entries stay valid.
link_target_local() {
  local link="$REPO_DIR/target/local"
  mkdir -p "$REPO_DIR/target" "$CS_STATE"
  if [[ -d $link && ! -L $link ]]; then
    info "target/local is the state folder of an older make up: stopping what runs there and moving to $CS_STATE"
    down "$link"
    [[ ! -f $link/bastion_host_key || -f $CS_STATE/bastion_host_key ]] || mv "$link/bastion_host_key" "$CS_STATE/"
    rm -rf --one-file-system "$link"
  fi
  ln -sfn "$CS_STATE" "$link"
}

local_stack() {
  state="$CS_STATE"  # global: the traps read it
  local pidf
  for pidf in "$state"/role-*.pid; do
    [[ -e $pidf ]] && pgrep -g "$(<"$pidf")" >/dev/null 2>&1 &&
      die "the local stack already runs (pid $(<"$pidf"), state $state): use it, or stop it with make down"
  done
  # Fixed addresses for people to remember (each may be changed, e.g. WEB_PORT=8081 make up).
  export KEYCLOAK_PORT="${KEYCLOAK_PORT:-8180}" KEYCLOAK_HTTPS_PORT="${KEYCLOAK_HTTPS_PORT:-8443}"
  export WEB_PORT="${WEB_PORT:-8080}" BASTION_PORT="${BASTION_PORT:-2222}"
  install
  cargo_build
  link_target_local
  # Stopping goes on even when the terminal's reader is gone (make up | tee, then Ctrl-C).
  trap 'trap - INT TERM EXIT; trap "" PIPE; set +e; echo; down "$state"; exit 0' INT TERM EXIT
  ROLES=1 up "$state"
  # shellcheck disable=SC1091
  source "$state/env"
  # Bound for group members: the roles exist once the user role is installed (docs/user-guide.md, "kubectl through Keycloak").
  "$CS_BIN/kubectl" --kubeconfig "$KUBECONFIG" apply -f "$SUPPORT_DIR/local-access.yaml" >/dev/null
  cat <<BANNER

  compute-server local stack is up. Its state (servers, users, keys) is kept in
  $state (target/local links there):
  Ctrl-C or make down stops it, make up starts it again as it was, make reset deletes it.

  Kubernetes API  kubectl --kubeconfig target/local/kubeconfig get csrv -A      (admin)
                  (kubectl $K8S_VERSION: $CS_BIN/kubectl)
  kubectl as      export KUBECONFIG=\$PWD/target/local/kubeconfig-oidc; kubectl auth whoami
    alice         kubectl prints a Keycloak address: open it, sign in as alice/alice, and kubectl
                  goes on as oidc:alice (tokens cached in ~/.kube/cache/oidc-login and refreshed).
                  The page is https with this stack's own CA (target/local/pki/ca.crt), which
                  your browser does not know: accept it once, or import that file.
  Keycloak        $KEYCLOAK_URL/realms/compute/account   (admin console: $KEYCLOAK_URL/admin, admin/admin)
  Snapshots       kept in SeaweedFS (S3) at $S3_ENDPOINT, bucket $S3_BUCKET; data in $state/seaweedfs
  Demo logins     alice/alice, bob/bob (group students), carol/carol (staff), ops/ops (compute-admins)
  Docker          $DOCKER_HOST   images computeserver/busybox:local, computeserver/debian-ssh:local,
                                 computeserver/jupyter:local (Jupyter Notebook 6.4)
  Examples        kubectl --kubeconfig target/local/kubeconfig apply -f manifests/examples/

  Nodes           ${NODE_NAMES//,/ }: kubectl --kubeconfig target/local/kubeconfig get computenodes
                  (one agent and one dockerd each; NODES=N make up for N nodes; logs: target/local/*.log)
  Scheduler       places unpinned servers on the least allocated Ready node that fits

  Bastion         ssh -J alice@$BASTION_ADDRESS root@SERVER   (log: target/local/bastion.log)
                  reaches alice's own servers in namespace compute; her key must be in one of
                  their sshAuthorizedKeys. ProxyJump snippet and refusals: docs/user-guide.md, "SSH access".
  Web front       $WEB_URL   sign in as alice/alice, request a server, watch it start
                  JSON API: $WEB_URL/api/v1/servers with a Keycloak access token
  Ctrl-C stops everything.

BANNER
  # sleep in the background: bash runs a trap only once the foreground command ends.
  while true; do sleep 3600 & wait $!; done
}

run_tests() {
  state="$REPO_DIR/target/test"  # global: the trap reads it
  local t0=$SECONDS
  # The scheduler's tests place busybox servers on three real Docker engines.
  # The GPU tests give node 3's engine a stand-in for the NVIDIA Container Toolkit's hook.
  export NODES=3 NODE_IMAGES=busybox NODE_GPU_HOOK=3
  install
  # What only the whole suite needs (not `make chaos`): a real node (tests/cluster.rs),
  # checkov (tests/helm.rs) and ssh-audit (tests/bastion.rs).
  local checkov="" ssh_audit=""
  if [[ ${CS_NO_IMAGE:-} != 1 ]]; then
    bash "$SUPPORT_DIR/cluster.sh" install
    checkov="$(bash "$SUPPORT_DIR/install-checkov.sh" | tail -n 1)"
    ssh_audit="$(bash "$SUPPORT_DIR/install-ssh-audit.sh" | tail -n 1)"
  fi
  cargo_build
  # Throwaway state: the servers' networks and firewall rules go too; and the tests' cluster.
  trap 'bash "$SUPPORT_DIR/cluster.sh" down "$REPO_DIR/target/test-cluster"; remove_networks "$state"; down "$state"' EXIT
  # Throwaway state: started afresh, etcd without fsync (also for the stacks tests start).
  reset "$state" --yes
  export ETCD_NO_FSYNC=1
  up "$state"
  [[ -z $checkov ]] || set_env "$state" CHECKOV "$checkov"
  [[ -z $ssh_audit ]] || set_env "$state" SSH_AUDIT "$ssh_audit"
  # Made here from the tests' own build (a `cargo build --bin` alone would compile again: without
  # the dev-dependencies, crates' features differ); tests/image.rs makes it again (and shows any
  # failure).
  # Not for `make chaos`, which needs no image.
  [[ ${CS_NO_IMAGE:-} == 1 ]] ||
    COMPUTE_SERVER_BINARY="$REPO_DIR/target/debug/compute-server" bash "$SUPPORT_DIR/image.sh" build >/dev/null ||
    info "the image build failed: tests/image.rs says why"
  step "Running the tests against the real stack (cargo test)"
  (cd "$REPO_DIR" && COMPUTE_SERVER_TEST_ENV="$state/env" cargo test --locked --no-fail-fast "$@")
  info "tests finished in $((SECONDS - t0)) s in all"
}

# The benchmarks by name: a cargo bench, or an ignored test run in a release build.
BENCHES="agent scheduler web bastion browser snapshot"
bench_command() {
  case "$1" in
    agent|scheduler) echo "cargo bench --locked --bench $1" ;;
    web) echo "cargo test --locked --release --test web -- --ignored --nocapture bench_my_servers" ;;
    bastion) echo "cargo test --locked --release --test bastion -- --ignored --nocapture bench_time_to_first_byte" ;;
    browser) echo "cargo test --locked --release --test browser -- --ignored --nocapture bench_terminal_echo" ;;
    snapshot) echo "cargo test --locked --release --test snapshot -- --ignored --nocapture bench_snapshot" ;;
    *) die "no benchmark named $1; there are: $BENCHES" ;;
  esac
}

run_benches() {
  state="$REPO_DIR/target/bench"  # global: the trap reads it
  local names="${*:-$BENCHES}" name log="$REPO_DIR/target/bench.log"
  for name in $names; do bench_command "$name" >/dev/null; done
  install
  bash "$SUPPORT_DIR/web-assets.sh"
  step "Building compute-server and the benchmarks in release mode (cargo; several minutes the first time)"
  (cd "$REPO_DIR" && with_progress "cargo bench --no-run" cargo bench --locked --no-run --quiet)
  trap 'down "$state"' EXIT
  reset "$state" --yes
  ETCD_NO_FSYNC=1 up "$state"
  : > "$log"
  for name in $names; do
    step "Benchmark $name: $(bench_command "$name")"
    (cd "$REPO_DIR" && COMPUTE_SERVER_TEST_ENV="$state/env" $(bench_command "$name")) 2>&1 | tee -a "$log" \
      || info "benchmark $name failed (its output is above and in $log)"
  done
  step "Summary (each ratio is against a floor measured in the same run; all output in $log)"
  grep -E '^(agent|scheduler|web|bastion|browser-terminal|browser-app|snapshot): ' "$log" || info "no summary lines: see $log"
}

case "${1:-}" in
  local) local_stack ;;
  bench) shift; run_benches "$@" ;;
  chaos) CS_NO_IMAGE=1 run_tests --test chaos -- --nocapture ;;
  test) shift; run_tests "$@" ;;
  install) install ;;
  up) [[ $# -eq 2 ]] || die "usage: $0 up STATE_DIR"; up "$2" ;;
  down) [[ $# -le 2 ]] || die "usage: $0 down [STATE_DIR]"; down "${2:-}" ;;
  reset) shift; [[ ${1:-} == --yes ]] && set -- "$CS_STATE" --yes; reset "${1:-}" "${2:-}" ;;
  *) die "usage: $0 install | up STATE_DIR | down [STATE_DIR] | reset [STATE_DIR] [--yes] | local | test [CARGO TEST ARGS] | bench [NAME] | chaos" ;;
esac
