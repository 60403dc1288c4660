#!/usr/bin/env bash
# A real S3-compatible store for snapshots: SeaweedFS (`weed`, Apache-2.0) built from the Go module
# proxy (tests/support/seaweedfs/go.mod pins it), one process on loopback with its data in the state.
#   seaweedfs.sh install           build weed into $CS_CACHE/bin (once per version)
#   seaweedfs.sh start STATE_DIR   start master, volume, filer and S3 gateway on 127.0.0.1 with the
#                                  data and credentials STATE_DIR keeps, create the bucket, and append
#                                  S3_ENDPOINT, S3_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY and
#                                  SNAPSHOT_STORE to STATE_DIR/env. Port: $S3_PORT, else the kept one.
#   seaweedfs.sh stop STATE_DIR    stop it (idempotent)
source "$(dirname "$0")/lib.sh"

SEAWEEDFS_VERSION="$(sed -n 's/^require github.com\/seaweedfs\/seaweedfs //p' "$SUPPORT_DIR/seaweedfs/go.mod")"
BUCKET="snapshots"

install() {
  if [[ -x $CS_BIN/weed && -f $CS_BIN/.weed-$SEAWEEDFS_VERSION ]]; then
    info "SeaweedFS $SEAWEEDFS_VERSION: cached"
    return 0
  fi
  step "Building SeaweedFS $SEAWEEDFS_VERSION from the Go module proxy (about 8 min on 2 cores, once)"
  ( cd "$SUPPORT_DIR/seaweedfs" && \
    with_progress "go build weed" go build -mod=readonly -trimpath -ldflags "-s -w" \
      -o "$CS_BIN/weed" github.com/seaweedfs/seaweedfs/weed )
  rm -f "$CS_BIN"/.weed-*
  touch "$CS_BIN/.weed-$SEAWEEDFS_VERSION"
}

start() {
  local state="$1" dir="$1/seaweedfs" port key secret
  mkdir -p "$dir/data"
  stop "$state"
  port="$(state_port "$state" S3_PORT "${S3_PORT:-}")"
  # Its other ports (master, volume, filer and their gRPC ports) are kept too: the master keeps
  # its state in a folder named after its port, and a master that restarts with another one has
  # lost its state (then SeaweedFS freezes volume growth, and uploads fail once volumes fill).
  local -A p
  local name
  for name in master master_grpc volume volume_grpc filer filer_grpc s3_grpc iceberg lance; do
    p[$name]="$(state_port "$state" "S3_${name^^}_PORT")"
  done
  # Credentials made once per state and kept in it (mode 0600); never printed.
  key="$(setting "$state" S3_ACCESS_KEY "" "cs$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')")"
  [[ -s $dir/secret ]] || (umask 077; head -c 24 /dev/urandom | base64 -w0 | tr '+/' '-_' >"$dir/secret")
  secret="$(<"$dir/secret")"
  (umask 077; cat >"$dir/s3.json" <<JSON
{"identities": [{"name": "compute-server", "credentials": [{"accessKey": "$key", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON
  )
  step "Starting SeaweedFS on 127.0.0.1:$port (S3; log: $dir/weed.log)"
  start_group "$dir/weed.pid" "$dir/weed.log" "$CS_BIN/weed" server -dir="$dir/data" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="${p[master]}" -master.port.grpc="${p[master_grpc]}" -master.volumeSizeLimitMB=256 \
    -volume.port="${p[volume]}" -volume.port.grpc="${p[volume_grpc]}" -volume.max=64 \
    -filer -filer.port="${p[filer]}" -filer.port.grpc="${p[filer_grpc]}" \
    -s3 -s3.port="$port" -s3.port.grpc="${p[s3_grpc]}" -s3.port.iceberg="${p[iceberg]}" \
    -s3.port.lance="${p[lance]}" -s3.config="$dir/s3.json"
  await_ready SeaweedFS "$(<"$dir/weed.pid")" "$dir/weed.log" 120 \
    curl -sf -o /dev/null "http://127.0.0.1:$port/healthz"
  # The bucket (an S3 request signed with the keys; "already yours" is fine).
  local code
  for _ in $(seq 1 60); do
    code="$(curl -s -o "$dir/bucket.out" -w '%{http_code}' -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" \
      --user "$key:$secret" "http://127.0.0.1:$port/$BUCKET" || true)"
    [[ $code == 200 || $code == 409 ]] && break
    sleep 1
  done
  [[ $code == 200 || $code == 409 ]] || { cat "$dir/bucket.out" >&2; die "could not create bucket $BUCKET (HTTP $code)"; }
  info "bucket $BUCKET ready"
  set_env "$state" S3_ENDPOINT "http://127.0.0.1:$port"
  set_env "$state" S3_BUCKET "$BUCKET"
  set_env "$state" S3_ACCESS_KEY "$key"
  set_env "$state" S3_SECRET_KEY "$secret"
  set_env "$state" SNAPSHOT_STORE "s3://$BUCKET"
}

stop() {
  local state="$1"
  stop_group "$state/seaweedfs/weed.pid" SeaweedFS weed
}

case "${1:-}" in
  install) install ;;
  start) [[ $# -eq 2 ]] || die "usage: $0 start STATE_DIR"; start "$2" ;;
  stop) [[ $# -eq 2 ]] || die "usage: $0 stop STATE_DIR"; stop "$2" ;;
  *) die "usage: $0 install | start STATE_DIR | stop STATE_DIR" ;;
esac
