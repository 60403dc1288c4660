#!/usr/bin/env bash
# Docker engine and local images for the tests and `make up`.
#
#   docker.sh install            apt-get install what is missing (nothing when all is there)
#   docker.sh start STATE_DIR    reuse the daemon on /var/run/docker.sock, or start one;
#                                appends DOCKER_HOST=... to STATE_DIR/env
#   docker.sh stop STATE_DIR     stop that daemon, only if `start` started it (idempotent)
#   docker.sh images [busybox|all]  build/import the local images if missing (never pulls):
#                                busybox and debian-ssh; `busybox` only busybox; `all` also
#                                jupyter (Debian's Jupyter Notebook, 400+ MB: only the main
#                                daemon of `stack.sh up` gets it, not the node daemons)
#   docker.sh node-start STATE_DIR N   a dockerd of its own for local node number N (2, 3, ...):
#                                own data root, exec root, socket and bridge; loads the local
#                                images (only busybox with NODE_IMAGES=busybox); appends
#                                DOCKER_HOST_N=... to STATE_DIR/env. NODE_GPU_HOOK=N: node N's
#                                dockerd has the stand-in NVIDIA hook (GPU_HOOK_LOG_N in env)
#   docker.sh node-halt STATE_DIR N    stop it, keeping its data and bridge (node-start restarts it)
#   docker.sh node-stop STATE_DIR N    stop it and remove its bridge, keeping its data (idempotent)
#   docker.sh node-remove STATE_DIR N  stop it and remove its bridge and data: its containers,
#                                      volumes and images (idempotent)
#   docker.sh stop-ours NODE...        stop the containers labelled app.kubernetes.io/managed-by=
#                                      compute-server of those nodes on the main daemon (local node 1)
#   docker.sh remove-ours NODE...      remove those containers and their volumes
#
# `images` talks to $DOCKER_HOST if set, so it can load the images into each local node's daemon.
source "$(dirname "$0")/lib.sh"

SOCK=/var/run/docker.sock
BUSYBOX_IMAGE=computeserver/busybox:local
SSH_IMAGE=computeserver/debian-ssh:local
JUPYTER_IMAGE=computeserver/jupyter:local
# The images are labelled with a hash of this script: edit it and they are re-imported. The
# debootstrap rootfs tarballs are keyed on their own recipes only (see debootstrap_image), so
# that costs seconds.
RECIPE="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
RECIPE_LABEL=io.computeserver.recipe

# Debian's dockerd 20.10 serves API 1.41; the machine's docker CLI is newer but negotiates down
# by itself (checked with CLI 28.2), so DOCKER_API_VERSION is not forced here.

# Temp dirs removed on exit, whatever happens. debootstrap mounts /proc and /sys inside its
# target: unmount before deleting, and never let rm cross into another file system.
TMP_DIRS=()
cleanup() {
  local d
  for d in "${TMP_DIRS[@]}"; do
    findmnt -rn -o TARGET | grep -F "$d/" | sort -r | xargs -r umount -l 2>/dev/null || true
    rm -rf --one-file-system "$d"
  done
}
trap cleanup EXIT

docker_answers() { DOCKER_HOST="${DOCKER_HOST:-unix://$SOCK}" docker version >/dev/null 2>&1; }

cmd_install() {
  # file that proves it is installed -> package (busybox must be the static one: it goes into
  # an image without libc). ca-certificates and the keyring are for debootstrap (https mirrors,
  # Release signatures), as we install without recommends.
  local -A need=(
    [/usr/sbin/dockerd]=docker.io
    [/usr/sbin/debootstrap]=debootstrap
    [/usr/share/doc/busybox-static]=busybox-static
    [/usr/sbin/ip]=iproute2
    [/usr/share/keyrings/debian-archive-keyring.gpg]=debian-archive-keyring
    [/etc/ssl/certs/ca-certificates.crt]=ca-certificates
  )
  local f missing=()
  for f in "${!need[@]}"; do [[ -e $f ]] || missing+=("${need[$f]}"); done
  if ((${#missing[@]} == 0)); then info "docker.io, debootstrap, busybox-static, iproute2: installed"; return; fi
  step "Installing ${missing[*]} from the Debian archive"
  export DEBIAN_FRONTEND=noninteractive
  with_progress "apt-get update" apt-get update -q
  with_progress "apt-get install" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

cmd_start() {
  local state="${1:?usage: docker.sh start STATE_DIR}"
  mkdir -p "$state"
  local pidf="$state/dockerd.pid" log="$state/dockerd.log"
  if docker_answers_default; then
    # A pid file that names a live dockerd means an earlier `start` of ours; else it is not ours.
    if ! our_dockerd "$pidf" >/dev/null; then
      rm -f "$pidf"
      info "dockerd: reusing the daemon already answering on $SOCK (not started by us; stop leaves it)"
    else
      info "dockerd: already running (started by us, pid $(<"$pidf"))"
    fi
  else
    step "Starting dockerd (log $log)"
    local start=$SECONDS
    start_group "$pidf" "$log" dockerd -H "unix://$SOCK"
    await_ready dockerd "$(<"$pidf")" "$log" 60 docker_answers_default
    info "dockerd: ready in $((SECONDS - start)) s (pid $(<"$pidf"))"
  fi
  set_env "$state" DOCKER_HOST "unix://$SOCK"
}

docker_answers_default() { DOCKER_HOST="unix://$SOCK" docker version >/dev/null 2>&1; }

# Prints the pid from the pid file if it is a running dockerd (guards against a reused pid).
our_dockerd() {
  local pid
  [[ -f $1 ]] || return 1
  pid="$(<"$1")"
  [[ $pid =~ ^[0-9]+$ && "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 1
  echo "$pid"
}

cmd_stop() {
  local state="${1:?usage: docker.sh stop STATE_DIR}" pid
  local pidf="$state/dockerd.pid"
  if pid="$(our_dockerd "$pidf")"; then
    step "Stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    # dockerd gives its containers 15 s to stop before it exits itself.
    local start=$SECONDS
    while kill -0 "$pid" 2>/dev/null && ((SECONDS - start < 40)); do sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { info "dockerd still running after 40 s: SIGKILL"; kill -KILL "$pid"; }
  else
    info "dockerd: no daemon of ours to stop"
  fi
  rm -f "$pidf"
}

# The Debian mirror this machine's apt is configured with, for bookworm. Read at run time:
# only the configured archive is reachable, and no mirror name belongs in the repository.
debian_mirror() {
  local uri=""
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    # deb822: blank-line separated stanzas; the first URI of a stanza whose Suites has bookworm.
    uri="$(grep -v '^[[:space:]]*#' /etc/apt/sources.list.d/debian.sources | awk 'BEGIN { RS = "" }
      { u = ""; s = 0; k = ""
        for (i = 1; i <= NF; i++) {
          if ($i == "URIs:") { u = $(i + 1); k = "" }
          else if ($i == "Suites:") k = "s"
          else if ($i ~ /:$/) k = ""
          else if (k == "s" && $i == "bookworm") s = 1
        }
        if (s && u != "") { print u; exit } }')"
  fi
  if [[ -z $uri && -f /etc/apt/sources.list ]]; then
    # one-line format: deb [options] URI SUITE COMPONENTS...
    uri="$(awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) == "bookworm") { print $i; exit } }' /etc/apt/sources.list)"
  fi
  [[ -n $uri ]] || die "no bookworm entry in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
  echo "$uri"
}

image_is_current() {
  [[ "$(docker image inspect -f "{{index .Config.Labels \"$RECIPE_LABEL\"}}" "$1" 2>/dev/null)" == "$RECIPE" ]]
}

# After a re-import the previous image of that name is left untagged: remove it, unless a
# container still uses it (then docker refuses, which is fine).
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
drop_old_image() { [[ -z $1 || $1 == "$(image_id "$2")" ]] || docker rmi "$1" >/dev/null 2>&1 || true; }

# busybox-static with a symlink per applet: a 2 MB image that starts in a fraction of a second.
build_busybox() {
  local tmp; tmp="$(mktemp -d)"; TMP_DIRS+=("$tmp")
  local root="$tmp/rootfs" applet
  mkdir -p "$root"/{bin,etc,root,tmp}
  chmod 1777 "$root/tmp"
  chmod 0700 "$root/root"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [[ -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
  done
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$root/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$root/etc/group"
  tar -C "$root" --numeric-owner -c . |
    docker import --change 'CMD ["/bin/sh"]' --change "LABEL $RECIPE_LABEL=$RECIPE" - "$BUSYBOX_IMAGE" >/dev/null
}

# Runs debootstrap with its chatter in a log, shown only when it fails.
debootstrap_logged() {
  local log="$1"; shift
  debootstrap "$@" >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "debootstrap failed (log above)"; }
}

# What both Debian images share: hardened sshd and the entrypoint ($2 names the image in its
# comment), written into the rootfs $1.
write_sshd_setup() {
  local root="$1" image="$2"
  # Host keys made at package install would be shared by every container: each container
  # makes its own at first start instead (entrypoint).
  rm -f "$root"/etc/ssh/ssh_host_*
  # Debian's sshd_config includes sshd_config.d first, and the first value of a keyword wins.
  # UsePAM no: pam_loginuid needs CAP_AUDIT_CONTROL, which the agent drops.
  cat >"$root/etc/ssh/sshd_config.d/compute-server.conf" <<'EOF'
# compute-server: keys only; root may log in with a key (the user owns the whole container).
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
X11Forwarding no
EOF
  # Without PAM, sshd refuses accounts whose password is locked with "!"; "*" = no password,
  # not locked, so key login works.
  sed -i 's/^root:[^:]*:/root:*:/' "$root/etc/shadow"

  {
    printf '#!/bin/sh\n# Entrypoint of %s. SSH_AUTHORIZED_KEYS (newline separated)\n' "$image"
    cat <<'EOF'
# becomes root's authorized_keys; then the given command runs, or sshd in the foreground.
set -eu
mkdir -p /run/sshd
chmod 0755 /run/sshd
ssh-keygen -A >/dev/null   # this container's own host keys, once
if [ -n "${SSH_AUTHORIZED_KEYS:-}" ]; then
  umask 077
  mkdir -p /root/.ssh
  printf '%s\n' "$SSH_AUTHORIZED_KEYS" >/root/.ssh/authorized_keys
  chmod 0700 /root/.ssh
  chmod 0600 /root/.ssh/authorized_keys
  umask 022
fi
if [ "$#" -gt 0 ]; then exec "$@"; fi
exec /usr/sbin/sshd -D -e
EOF
  } >"$root/usr/local/bin/compute-server-entrypoint"
  chmod 0755 "$root/usr/local/bin/compute-server-entrypoint"
}

# Slims the rootfs $1 (package caches and lists, docs, manuals) and writes it as the tar.gz $2.
pack_rootfs() {
  local root="$1" out="$2"
  rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
  findmnt -rn -o TARGET | grep -qF "$root/" && die "something is still mounted under $root"
  with_progress "tar.gz of the rootfs" tar -C "$root" --numeric-owner -czf "$root.tar.gz" .
  mv "$root.tar.gz" "$out"   # same file system: atomic, no half-written cache entry
}

# Debian bookworm minbase with the packages $2 (comma separated) in ROOTFS, a new folder in a
# temp dir next to $1 (not printed: in a $(...) subshell TMP_DIRS would not reach cleanup).
debootstrap_rootfs() {
  local out="$1" packages="$2" mirror
  mirror="$(debian_mirror)"
  local tmp; tmp="$(mktemp -d "$(dirname "$out")/build.XXXXXX")"; TMP_DIRS+=("$tmp")
  info "Debian mirror (from the apt configuration): $mirror"
  with_progress "debootstrap" debootstrap_logged "$tmp/debootstrap.log" \
    --variant=minbase "--include=$packages" bookworm "$tmp/rootfs" "$mirror"
  ROOTFS="$tmp/rootfs"
}

# Debian bookworm minbase + openssh-server, hardened sshd, entrypoint; written as a tar.gz.
build_debian_rootfs() {
  local out="$1" root
  debootstrap_rootfs "$out" openssh-server,ca-certificates
  root="$ROOTFS"
  write_sshd_setup "$root" "$SSH_IMAGE"
  pack_rootfs "$root" "$out"
}

# debian-ssh plus Debian's Jupyter Notebook 6.4 and the Python 3 kernel, and its default
# command compute-server-jupyter: sshd in the background, the notebook server in the foreground.
build_jupyter_rootfs() {
  local out="$1" root
  # debootstrap does not resolve virtual packages: python3-zmq and python3-argon2 need
  # python3-cffi-backend-api-*, libsource-highlight4v5 (gdb, for debugpy) libboost-regex1.74.0-icu72.
  debootstrap_rootfs "$out" openssh-server,ca-certificates,jupyter-notebook,python3-ipykernel,python3-cffi-backend,libboost-regex1.74.0
  root="$ROOTFS"
  write_sshd_setup "$root" "$JUPYTER_IMAGE"
  cat >"$root/usr/local/bin/compute-server-jupyter" <<'EOF'
#!/bin/sh
# Default command of computeserver/jupyter:local (after compute-server-entrypoint has set up
# root's SSH keys and the host keys): sshd in the background, Jupyter Notebook in the foreground.
# COMPUTE_SERVER_BASE_URL: the path the web front serves it under (/servers/NAME/apps/jupyter/).
set -eu
base="${COMPUTE_SERVER_BASE_URL:-/}"
/usr/sbin/sshd -D -e &
# No token and no password: the notebook listens on the container's loopback only, which
# nothing outside the container reaches; the web front comes in through an SSH tunnel into the
# container, after its own sign-in has checked that the user owns this server.
# allow_remote_access: the web front forwards the browser's Host header (compute.example.org,
# 127.0.0.1:8080), which notebook 6 refuses when listening on localhost without it.
# POSTs still need the _xsrf cookie echoed in X-XSRFToken (the notebook's own pages do that);
# its cookie is scoped to this server's path, not / (the web front's and other servers'). The
# dict as JSON makes traitlets 5 print a FutureWarning; its key=value form would give a string.
exec jupyter notebook --no-browser --allow-root --ip=127.0.0.1 --port=8888 \
  --NotebookApp.base_url="$base" \
  --NotebookApp.token='' --NotebookApp.password='' \
  --NotebookApp.allow_remote_access=True \
  --NotebookApp.tornado_settings="{\"xsrf_cookie_kwargs\": {\"path\": \"$base\"}}" \
  --NotebookApp.notebook_dir=/home
EOF
  chmod 0755 "$root/usr/local/bin/compute-server-jupyter"
  pack_rootfs "$root" "$out"
}

# Imports IMAGE from the rootfs that BUILD_FUNCTION makes (cached in $CS_CACHE/images as
# NAME-bookworm-KEY.tar.gz, KEY from the text of the functions that make it, heredocs
# included, not the whole script), with the `docker import --change`s that follow.
debootstrap_image() {
  local image="$1" name="$2" build="$3" slow="$4"; shift 4
  if image_is_current "$image"; then
    info "$image: present"
    return
  fi
  local cache="$CS_CACHE/images" tarball old
  tarball="$cache/$name-bookworm-$(declare -f "$build" debootstrap_rootfs write_sshd_setup pack_rootfs | sha256sum | cut -c1-16).tar.gz"
  mkdir -p "$cache"
  if [[ -f $tarball ]]; then
    info "$image: rootfs cached at $tarball"
  else
    step "Building the $image rootfs with debootstrap ($slow, once)"
    local t0=$SECONDS
    "$build" "$tarball"
    info "$image: rootfs built in $((SECONDS - t0)) s ($(du -h "$tarball" | cut -f1) compressed)"
    # Rootfs tarballs of older recipes are dead weight now.
    find "$cache" -maxdepth 1 -name "$name-bookworm-*.tar.gz" ! -name "${tarball##*/}" -delete
  fi
  step "Importing $image"
  old="$(image_id "$image")"
  local changes=() change
  for change in "$@"; do changes+=(--change "$change"); done
  # Seconds for debian-ssh, under a minute for jupyter: with_progress reports past 10 s only.
  with_progress "docker import" docker import "${changes[@]}" --change "LABEL $RECIPE_LABEL=$RECIPE" \
    "$tarball" "$image" >/dev/null
  drop_old_image "$old" "$image"
}

cmd_images() {
  docker_answers || die "no Docker daemon answers at ${DOCKER_HOST:-unix://$SOCK} (run: docker.sh start STATE_DIR)"
  local old only="${1:-}"
  [[ -z $only || $only == busybox || $only == all ]] || die "usage: docker.sh images [busybox|all]"

  if image_is_current "$BUSYBOX_IMAGE"; then
    info "$BUSYBOX_IMAGE: present"
  else
    step "Building $BUSYBOX_IMAGE from busybox-static"
    old="$(image_id "$BUSYBOX_IMAGE")"
    build_busybox   # a second or two: no progress needed
    drop_old_image "$old" "$BUSYBOX_IMAGE"
  fi
  [[ $only != busybox ]] || return 0

  debootstrap_image "$SSH_IMAGE" debian-ssh build_debian_rootfs "1-2 min" \
    'ENTRYPOINT ["/usr/local/bin/compute-server-entrypoint"]' 'EXPOSE 22'
  [[ $only == all ]] || return 0

  debootstrap_image "$JUPYTER_IMAGE" jupyter build_jupyter_rootfs "about 2 min" \
    'ENTRYPOINT ["/usr/local/bin/compute-server-entrypoint"]' \
    'CMD ["/usr/local/bin/compute-server-jupyter"]' 'EXPOSE 22 8888'
}

# Names of local node N's daemon. Several stacks (state dirs) may run at once, so the
# socket, exec root, bridge and subnet carry a short key of the state dir; sockets and exec
# roots live under /run, whose short paths stay within the 108 bytes a socket path may have.
node_paths() {
  local state="$1" n="$2" key
  key="$(printf '%s' "$state" | sha256sum | cut -c1-6)"
  NODE_DIR="$state/nodes/$n"
  NODE_RUN="/run/compute-server/$key-$n"
  NODE_SOCK="$NODE_RUN/docker.sock"
  NODE_BRIDGE="cs$key-$n"
  # 10.214.0.0/16 split in /24s: one per (stack, node), from the key.
  NODE_SUBNET="10.214.$(((16#$key % 50) * 5 + n % 5)).1/24"
}

cmd_node_start() {
  local state="${1:?usage: docker.sh node-start STATE_DIR N}" n="${2:?usage: docker.sh node-start STATE_DIR N}"
  [[ $n =~ ^[2-9]$ ]] || die "local node numbers are 2 to 9 (1 is the main daemon), not $n"
  state="$(cd "$state" && pwd -P)"
  node_paths "$state" "$n"
  local pidf="$NODE_DIR/dockerd.pid" log="$NODE_DIR/dockerd.log" host="unix://$NODE_SOCK"
  mkdir -p "$NODE_DIR" "$NODE_RUN"
  if our_dockerd "$pidf" >/dev/null && DOCKER_HOST="$host" docker version >/dev/null 2>&1; then
    info "node $n dockerd: already running"
  else
    # Its own bridge: a second daemon on the default docker0 would tear down the first's.
    ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || {
      ip link add "$NODE_BRIDGE" type bridge
      ip addr add "$NODE_SUBNET" dev "$NODE_BRIDGE"
    }
    ip link set "$NODE_BRIDGE" up
    local gpu=()
    if [[ $n == "${NODE_GPU_HOOK:-}" ]]; then
      # Docker's "nvidia" device driver, with a stand-in hook that records what it is asked.
      gpu=(env "PATH=$SUPPORT_DIR/nvidia:$PATH" "NVIDIA_HOOK_LOG=$NODE_DIR/nvidia-hook.log")
      : >"$NODE_DIR/nvidia-hook.log"
    fi
    step "Starting dockerd for local node $n (log $log${gpu:+; with a stand-in NVIDIA hook})"
    # No iptables of its own: the main daemon owns the DOCKER chains, and published ports
    # reach containers through docker-proxy anyway.
    start_group "$pidf" "$log" "${gpu[@]}" dockerd -H "$host" --data-root "$NODE_DIR/data" --exec-root "$NODE_RUN/exec" \
      --pidfile "$NODE_RUN/dockerd.pid" --bridge "$NODE_BRIDGE" --iptables=false --ip-masq=false
    # (No --default-address-pool: with one, this daemon deletes the main daemon's docker0 when
    # it starts. The servers' networks get subnets Docker finds free among the host's routes.)
    local start=$SECONDS
    await_ready "dockerd (node $n)" "$(<"$pidf")" "$log" 60 env DOCKER_HOST="$host" docker version
    info "node $n dockerd: ready in $((SECONDS - start)) s"
  fi
  DOCKER_HOST="$host" cmd_images "${NODE_IMAGES:-}"
  set_env "$state" "DOCKER_HOST_$n" "$host"
  [[ $n != "${NODE_GPU_HOOK:-}" ]] || set_env "$state" "GPU_HOOK_LOG_$n" "$NODE_DIR/nvidia-hook.log"
}

cmd_node_halt() {
  local state="${1:?usage: docker.sh node-halt STATE_DIR N}" n="${2:?usage: docker.sh node-halt STATE_DIR N}" pid
  [[ -d $state ]] || return 0
  state="$(cd "$state" && pwd -P)"
  node_paths "$state" "$n"
  if pid="$(our_dockerd "$NODE_DIR/dockerd.pid")"; then
    step "Stopping dockerd of local node $n (pid $pid)"
    kill_group "$pid" "dockerd (node $n)" 40
  fi
  rm -f "$NODE_DIR/dockerd.pid"
}

cmd_node_stop() {
  local state="${1:?usage: docker.sh node-stop STATE_DIR N}" n="${2:?usage: docker.sh node-stop STATE_DIR N}"
  [[ -d $state ]] || return 0
  cmd_node_halt "$state" "$n"
  state="$(cd "$state" && pwd -P)"
  node_paths "$state" "$n"
  if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then ip link delete "$NODE_BRIDGE"; fi
  # Containers' mounts are gone with the daemon; never cross into another file system.
  findmnt -rn -o TARGET | grep -F "$NODE_DIR/" | sort -r | xargs -r umount -l 2>/dev/null || true
  rm -rf --one-file-system "$NODE_RUN"
}

cmd_node_remove() {
  local state="${1:?usage: docker.sh node-remove STATE_DIR N}" n="${2:?usage: docker.sh node-remove STATE_DIR N}"
  [[ -d $state ]] || return 0
  cmd_node_stop "$state" "$n"
  state="$(cd "$state" && pwd -P)"
  node_paths "$state" "$n"
  rm -rf --one-file-system "$NODE_DIR"
}

# What compute-server made for NODE on the main daemon: `docker ps` or `docker volume ls` ARGS.
ours_on_main() {
  local what="$1" node="$2"; shift 2
  DOCKER_HOST="unix://$SOCK" docker "$what" "$@" --filter label=app.kubernetes.io/managed-by=compute-server \
    --filter "label=computeserver.io/node=$node"
}

cmd_stop_ours() {
  local node ids
  docker_answers_default || return 0
  for node in "$@"; do
    ids="$(ours_on_main ps "$node" -q)"
    [[ -z $ids ]] || DOCKER_HOST="unix://$SOCK" docker stop $ids >/dev/null
  done
}

cmd_remove_ours() {
  local node ids
  docker_answers_default || return 0
  for node in "$@"; do
    ids="$(ours_on_main ps "$node" -aq)"
    [[ -z $ids ]] || DOCKER_HOST="unix://$SOCK" docker rm -f $ids >/dev/null
    ids="$(ours_on_main volume "$node" ls -q)"
    [[ -z $ids ]] || DOCKER_HOST="unix://$SOCK" docker volume rm $ids >/dev/null
  done
}

# Sourced (by image.sh) for its functions only.
[[ ${BASH_SOURCE[0]} == "$0" ]] || return 0

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  images) cmd_images "${2:-}" ;;
  node-start) cmd_node_start "${2:-}" "${3:-}" ;;
  node-halt) cmd_node_halt "${2:-}" "${3:-}" ;;
  node-stop) cmd_node_stop "${2:-}" "${3:-}" ;;
  node-remove) cmd_node_remove "${2:-}" "${3:-}" ;;
  stop-ours) shift; cmd_stop_ours "$@" ;;
  remove-ours) shift; cmd_remove_ours "$@" ;;
  *) die "usage: docker.sh install | start STATE_DIR | stop STATE_DIR | images [busybox|all] | node-start STATE_DIR N | node-halt STATE_DIR N | node-stop STATE_DIR N | node-remove STATE_DIR N | stop-ours NODE... | remove-ours NODE..." ;;
esac
