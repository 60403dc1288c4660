#!/usr/bin/env bash
# Real Keycloak for tests and `make up`: keycloak-quarkus-dist from Maven Central, run on the
# Temurin 25 JDK, realm `compute` from tests/support/keycloak/realm-compute.json.
#   keycloak.sh install            fetch, unpack and prepare into $CS_CACHE (once per version)
#   keycloak.sh start STATE_DIR    start-dev on 127.0.0.1 (or $KEYCLOAK_HOST) with the database STATE_DIR keeps (the
#                                  realm is imported on the first start only), over http and https
#                                  (certificate from pki.sh); appends KEYCLOAK_URL, KEYCLOAK_ISSUER
#                                  (http), KEYCLOAK_HTTPS_ISSUER and KEYCLOAK_CA to STATE_DIR/env.
#                                  Ports: $KEYCLOAK_PORT and $KEYCLOAK_HTTPS_PORT, else the kept ones.
#   keycloak.sh stop STATE_DIR     stop it (idempotent)
source "$(dirname "$0")/lib.sh"

KC_HOME="$CS_CACHE/keycloak-$KEYCLOAK_VERSION"
REALM_FILE="$SUPPORT_DIR/keycloak/realm-compute.json"
START_TIMEOUT="${KEYCLOAK_START_TIMEOUT:-240}"

# Small heap for a 2-core test machine (these are also kc.sh's defaults outside containers).
export JAVA_OPTS_KC_HEAP="-Xms64m -Xmx512m"
# Java 24+: jboss-threads needs java.lang opened (else a stack trace at shutdown), and netty's
# sun.misc.Unsafe use would print deprecation warnings into the log.
export JAVA_OPTS_APPEND="--add-opens=java.base/java.lang=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow"
export KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD=admin

# A Keycloak home keeps its state (data/, conf/, providers/, themes/) next to bin/, and kc.sh finds
# its home from its own real path. So each state folder gets its own home with copies of bin/ and
# conf/ (small, laid anew on each start) and the dist's lib/ shared through a symlink; its data/
# (the H2 database) is kept. (-Dkc.home.dir=... instead makes every start-dev re-augment Quarkus,
# ~30 s.)
make_home() {
  local dist="$1" home="$2"
  rm -rf "$home/bin" "$home/conf" "$home/lib"
  mkdir -p "$home/data/import" "$home/providers" "$home/themes"
  cp -R "$dist/bin" "$dist/conf" "$home/"
  ln -s "$dist/lib" "$home/lib"
}

# Starts kc.sh in its own session, so that stop can kill the process group (kc.sh and java).
# Only runtime options here: a build-time one (db, features, health, ...) would re-augment on
# every start and rewrite the shared lib/. Writes the pid file $4 and sets KC_PID.
run_kc() {
  local home="$1" log="$2" port="$3" pidfile="$4"; shift 4
  start_group "$pidfile" "$log" "$home/bin/kc.sh" start-dev --http-host="${KEYCLOAK_HOST:-127.0.0.1}" \
    --http-port="$port" "$@"
  KC_PID="$(<"$pidfile")"
}

install() {
  if [[ -d $KC_HOME/seed-h2 ]]; then
    info "keycloak $KEYCLOAK_VERSION: cached in $KC_HOME"
    return
  fi
  # Prepare everything next to the final place and rename at the end, so a half-done install
  # never counts as installed.
  # (not local: the EXIT trap needs them)
  tmp="$CS_CACHE/.keycloak-$KEYCLOAK_VERSION.tmp.$$" dist="$tmp/keycloak-$KEYCLOAK_VERSION" KC_PID=""
  trap '[[ -n $KC_PID ]] && kill_group "$KC_PID" Keycloak; rm -rf "$tmp"' EXIT
  rm -rf "$tmp"; mkdir -p "$tmp"

  step "Fetching keycloak-quarkus-dist $KEYCLOAK_VERSION with mvn (about 200 MB, once)"
  # mvn's own configuration supplies the repository; no host is named here.
  MAVEN_OPTS="${MAVEN_OPTS:-} --sun-misc-unsafe-memory-access=allow" \
    with_progress "mvn dependency:copy" mvn -B -q -Dstyle.color=never \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
    -Dartifact="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:tar.gz" \
    -DoutputDirectory="$tmp"
  tar -C "$tmp" -xzf "$tmp/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz"
  rm "$tmp/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz"

  # One start-dev now, so that later starts are quicker: it re-augments Quarkus for the dev
  # profile into lib/ (~30 s; `kc.sh build` refuses the dev profile), and it creates the
  # database schema and the master realm with the admin user (~20 s), kept as seed-h2 for
  # each start to copy. Also a smoke test of the JDK and the dist.
  step "Preparing Keycloak (augmentation for start-dev and a seed database; 1-2 min, once)"
  local port; port=$(free_port)
  rm -rf "$tmp/seed"; make_home "$dist" "$tmp/seed"
  run_kc "$tmp/seed" "$tmp/seed.log" "$port" "$tmp/seed.pid"
  await_ready Keycloak "$KC_PID" "$tmp/seed.log" 300 \
    curl -sf --max-time 5 -o /dev/null "http://127.0.0.1:$port/realms/master/.well-known/openid-configuration"
  kill_group "$KC_PID" Keycloak; KC_PID=""  # a clean shutdown closes the H2 database
  mv "$tmp/seed/data/h2" "$dist/seed-h2"

  [[ -d $KC_HOME/seed-h2 ]] || rm -rf "$KC_HOME"  # an unfinished install, not a concurrent one
  mv -T "$dist" "$KC_HOME" 2>/dev/null || [[ -d $KC_HOME/seed-h2 ]] \
    || die "could not move $dist to $KC_HOME"
  rm -rf "$tmp"; trap - EXIT
  info "keycloak $KEYCLOAK_VERSION installed in $KC_HOME"
}

start() {
  [[ -d $KC_HOME/seed-h2 ]] || die "Keycloak $KEYCLOAK_VERSION is not installed: run $0 install"
  mkdir -p "$1"
  local state; state="$(cd "$1" && pwd -P)"  # physical: kc.sh resolves its own path
  local home="$state/keycloak" log="$state/keycloak.log" pidfile="$state/keycloak.pid"
  if [[ -f $pidfile ]] && kill -0 "$(<"$pidfile")" 2>/dev/null; then
    die "Keycloak already runs for $state (pid $(<"$pidfile")); stop it first"
  fi
  local cert="$state/pki/keycloak.crt" key="$state/pki/keycloak.key" ca="$state/pki/ca.crt"
  [[ -f $cert && -f $key ]] || bash "$SUPPORT_DIR/pki.sh" ensure "$state"

  make_home "$KC_HOME" "$home"
  local import=() realm_sum
  realm_sum="$(sha256sum <"$REALM_FILE" | cut -c1-16)"
  rm -f "$home/data/import/"*
  if [[ ! -d $home/data/h2 || ! -f $home/realm.sha256 ]]; then
    # First start (or a database of the older layout, made afresh on every start): the seed
    # database, and the realm imported from the repository.
    rm -rf "$home/data/h2"
    cp -R "$KC_HOME/seed-h2" "$home/data/h2"
    cp "$REALM_FILE" "$home/data/import/"
    import=(--import-realm)
  elif [[ "$(cat "$home/realm.sha256" 2>/dev/null)" != "$realm_sum" ]]; then
    info "note: $REALM_FILE changed since this Keycloak database was made; its realm is kept as it is (make reset starts afresh with the new one)"
  fi

  local port https_port host="${KEYCLOAK_HOST:-127.0.0.1}"
  port="$(BIND_HOST="$host" state_port "$state" KEYCLOAK_PORT "${KEYCLOAK_PORT:-}")"
  https_port="$(BIND_HOST="$host" state_port "$state" KEYCLOAK_HTTPS_PORT "${KEYCLOAK_HTTPS_PORT:-}")"
  local url="http://$host:$port" https_url="https://$host:$https_port" t0=$SECONDS
  step "Starting Keycloak on $url and $https_url (log: $log)"
  : >"$log"
  # No --hostname: each URL (the issuer too) follows the address a client asked at. Browsers and
  # the web front use plain http on the loopback interface (no certificate to trust); the
  # apiserver accepts https issuers only, and kubectl's sign-in uses that one.
  run_kc "$home" "$log" "$port" "$pidfile" "${import[@]}" --https-port="$https_port" \
    --https-certificate-file="$cert" --https-certificate-key-file="$key"
  await_ready Keycloak "$KC_PID" "$log" "$START_TIMEOUT" \
    curl -sf --max-time 5 -o /dev/null "$url/realms/compute/.well-known/openid-configuration"
  await_ready "Keycloak (https)" "$KC_PID" "$log" 30 \
    curl -sf --max-time 5 --cacert "$ca" -o /dev/null "$https_url/realms/compute/.well-known/openid-configuration"
  # Marks the database as made (and with which realm) once the import is done.
  [[ -z ${import[*]} ]] || echo "$realm_sum" >"$home/realm.sha256"
  grep -q 'Updating the configuration' "$log" \
    && info "note: Keycloak re-augmented on this start (slower); was a build-time option added?"

  set_env "$state" KEYCLOAK_URL "$url"
  set_env "$state" KEYCLOAK_ISSUER "$url/realms/compute"
  set_env "$state" KEYCLOAK_HTTPS_ISSUER "$https_url/realms/compute"
  set_env "$state" KEYCLOAK_CA "$ca"
  info "Keycloak ready in $((SECONDS - t0)) s${import:+ (realm imported)}: issuer $url/realms/compute, and $https_url/realms/compute for kubectl (admin console: admin/admin)"
}

stop() {
  local state; state="$(cd "$1" 2>/dev/null && pwd -P)" || return 0
  stop_group "$state/keycloak.pid" Keycloak "$state/keycloak/bin"
}

case "${1:-}" in
  install) install ;;
  start) [[ $# -eq 2 ]] || die "usage: $0 start STATE_DIR"; start "$2" ;;
  stop) [[ $# -eq 2 ]] || die "usage: $0 stop STATE_DIR"; stop "$2" ;;
  *) die "usage: $0 install | start STATE_DIR | stop STATE_DIR" ;;
esac
