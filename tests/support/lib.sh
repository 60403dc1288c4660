# Shared helpers for the scripts under tests/support. Source it; do not run it.
# Everything slow is built once into $CS_CACHE and reused; nothing here needs the cache to exist.

set -euo pipefail

SUPPORT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SUPPORT_DIR/../.." && pwd)"
CS_CACHE="${CS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/compute-server}"
CS_BIN="$CS_CACHE/bin"
mkdir -p "$CS_BIN"
# Where `make up` keeps its state (etcd, certificates, Keycloak's database, keys): user data, so
# not in target/ (which `cargo clean` wipes) but in the XDG data folder, or $CS_STATE.
CS_STATE="${CS_STATE:-${XDG_DATA_HOME:-$HOME/.local/share}/compute-server/local}"

# Versions of the real components. Bump here; the cache keys on them.
K8S_VERSION="v1.36.3"
ETCD_VERSION="v3.6.16"
HELM_VERSION="v3.19.5"
KEYCLOAK_VERSION="26.5.6"
JAVA_HOME="${JAVA_HOME_25:-$(ls -d /usr/lib/jvm/temurin-25* 2>/dev/null | head -n1)}"
export JAVA_HOME

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a slow command, printing a dot every 10 s so nobody wonders if it hung.
with_progress() {
  local label="$1"; shift
  local start=$SECONDS n=0
  "$@" &
  local pid=$!
  # Poll every second (so quick commands return quickly), report every tenth.
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    (( ++n % 10 )) || info "$label: still working ($((SECONDS - start)) s)"
  done
  wait "$pid"
  info "$label: done in $((SECONDS - start)) s"
}

# A command from PyPI: PACKAGE at VERSION in a virtualenv of its own in $CS_CACHE, made once per
# version (FIRST_TIME: how long that takes, for the message). Prints the command's path last.
pypi_tool() {
  local package="$1" version="$2" first_time="$3"
  local venv="$CS_CACHE/$package-$version"
  if [[ -f $venv/.installed ]]; then
    info "$package $version: cached"
  else
    step "Installing $package $version from PyPI into $venv ($first_time, once)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    with_progress "pip install $package" "$venv/bin/pip" install -q --disable-pip-version-check "$package==$version"
    touch "$venv/.installed"
  fi
  echo "$venv/bin/$package"
}

# A free TCP port on the loopback interface (or on address $BIND_HOST).
free_port() {
  python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' \
    "${BIND_HOST:-127.0.0.1}"
}

# Whether TCP port $1 on the loopback interface (or on address $BIND_HOST) is free to listen on.
port_is_free() {
  python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[2], int(sys.argv[1])))' "$1" "${BIND_HOST:-127.0.0.1}" 2>/dev/null
}

# What STATE_DIR keeps across starts under NAME (a port, a node name), so that addresses in
# kubeconfigs, token issuers and browser sessions stay valid: $3 when given (then kept), else
# the kept value, else $4 (then kept). Kept in STATE_DIR/settings, one NAME=VALUE a line.
setting() {
  local state="$1" name="$2" given="${3:-}" default="${4:-}" file="$1/settings" value
  value="$given"
  [[ -n $value ]] || value="$(sed -n "s/^$name=//p" "$file" 2>/dev/null | tail -n 1)"
  [[ -n $value ]] || value="$default"
  [[ -n $value ]] || die "no value for $name"
  if [[ "$(sed -n "s/^$name=//p" "$file" 2>/dev/null | tail -n 1)" != "$value" ]]; then
    touch "$file"
    sed -i "/^$name=/d" "$file"
    printf '%s=%s\n' "$name" "$value" >>"$file"
  fi
  printf '%s\n' "$value"
}

# The port STATE_DIR keeps for NAME ($3 when given, else the kept one, else a free one), after
# checking that nothing else listens there.
state_port() {
  local state="$1" name="$2" port
  port="$(setting "$state" "$name" "${3:-}" "$(free_port)")"
  port_is_free "$port" || die "port $port ($name, kept in $state/settings) is in use by another program: \
stop that program, or choose another port with $name=PORT"
  printf '%s\n' "$port"
}

# Waits until a command succeeds, up to $2 seconds.
wait_for() {
  local what="$1" timeout="$2"; shift 2
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    (( SECONDS - start < timeout )) || die "$what did not become ready within ${timeout}s"
    sleep 0.5
  done
}

# Starts a long-running service in a session of its own (so Ctrl-C in this terminal does not
# reach it and stop can end its whole process group), logging to $2 and writing its pid to $1.
start_group() {
  local pidfile="$1" log="$2"; shift 2
  setsid "$@" </dev/null >>"$log" 2>&1 &
  echo $! >"$pidfile"
}

# Ends the process group led by $1 (TERM, then KILL after $3 seconds, default 30) and waits.
kill_group() {
  local pid="$1" label="$2" timeout="${3:-30}" i
  kill -TERM -- "-$pid" 2>/dev/null || return 0
  for ((i = 0; i < timeout * 2; i++)); do
    kill -0 -- "-$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  info "$label did not stop within ${timeout} s; killing it"
  kill -KILL -- "-$pid" 2>/dev/null || true
}

# Stops the service whose pid file is $1, if it still runs a command line containing $3
# (a pid may have been reused since). Idempotent.
stop_group() {
  local pidfile="$1" label="$2" marker="$3" pid
  [[ -f $pidfile ]] || return 0
  pid="$(<"$pidfile")"
  if pgrep -a -g "$pid" 2>/dev/null | grep -qF -- "$marker"; then
    step "Stopping $label (pid $pid)"
    kill_group "$pid" "$label"
  fi
  rm -f "$pidfile"
}

# Waits until a command succeeds, printing progress every 10 s. Gives up when the service
# (pid $2) exits or after $4 seconds, showing the end of its log $3.
await_ready() {
  local label="$1" pid="$2" log="$3" timeout="$4" start=$SECONDS next=10 why=""; shift 4
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || why="exited"
    ((SECONDS - start < timeout)) || why="was not ready within ${timeout} s"
    if [[ -n $why ]]; then
      printf '\n--- last lines of %s ---\n' "$log" >&2
      tail -n 40 "$log" >&2
      kill_group "$pid" "$label"
      die "$label $why (full log: $log)"
    fi
    if ((SECONDS - start >= next)); then
      info "waiting for $label ($((SECONDS - start)) s)"
      next=$((next + 10))
    fi
    sleep 0.5
  done
}

# Sets KEY=VALUE in STATE_DIR/env (the file the tests and `make up` read), replacing an old value.
set_env() {
  local state="$1" key="$2" value="$3"
  touch "$state/env"
  sed -i "/^$key=/d" "$state/env"
  printf '%s=%s\n' "$key" "$value" >>"$state/env"
}
