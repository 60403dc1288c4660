#!/usr/bin/env bash
# The product image computeserver/compute-server:<version>, made here on a locally built base,
# since no container registry is reachable:
#
#   computeserver/runtime-base:local   (stands in for the Dockerfile's RUNTIME_IMAGE) glibc and
#                                      libgcc (the shared libraries the binary links), iptables
#                                      (the agent's firewall for the servers' networks) and the CA
#                                      certificates of Debian 12, from debootstrap
#   computeserver/rust-builder:local   (stands in for rust:1-bookworm; `image.sh dockerfile` only)
#                                      Debian 12 minbase with gcc and libc6-dev, plus this
#                                      machine's Rust toolchain (rustc and cargo as rustup installed them)
#
#   image.sh build [--release]   the image from the binary cargo builds on this machine (the tests'
#                     own build, target/debug; --release: target/release, as `make image`;
#                     COMPUTE_SERVER_BINARY=PATH: that one, no cargo), put on the runtime base by
#                     the Dockerfile's last stage: no second compile of every crate inside
#                     `docker build`. Prints the image's tag last
#   image.sh dockerfile  the image from source with the Dockerfile itself, as anywhere else
#                     (`docker build .`; a release build of every crate, 10-20 min on 2 cores)
#   image.sh bases    make the bases if missing or out of date
#
# The debootstrap rootfs is cached in $CS_CACHE/images; nothing depends on that cache.
source "$(dirname "$0")/docker.sh"

BUILDER_BASE=computeserver/rust-builder:local
RUNTIME_BASE=computeserver/runtime-base:local
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO_DIR/Cargo.toml" | head -n1)"
IMAGE="computeserver/compute-server:$VERSION"
# The Dockerfile's build stage, tagged so that the compiled dependencies stay cached and a
# superseded one (after a Cargo.lock change) can be removed instead of piling up.
BUILD_STAGE=computeserver/compute-server-build:local
TOOLCHAIN="$(rustc --print sysroot)"

# Debian 12 minbase with a C toolchain (ring and other crates compile C), written as a tar.gz.
# debootstrap keeps the .debs it installed in var/cache/apt/archives: the runtime base takes
# glibc and libgcc from there, so both bases hold the same library versions.
build_bookworm_rootfs() {
  local out="$1" mirror
  mirror="$(debian_mirror)"
  local tmp; tmp="$(mktemp -d "$(dirname "$out")/build.XXXXXX")"; TMP_DIRS+=("$tmp")
  info "Debian mirror (from the apt configuration): $mirror"
  with_progress "debootstrap" debootstrap_logged "$tmp/debootstrap.log" \
    --variant=minbase --include=gcc,libc6-dev,ca-certificates,iptables bookworm "$tmp/rootfs" "$mirror"
  rm -rf "$tmp"/rootfs/var/lib/apt/lists/* "$tmp"/rootfs/usr/share/doc/* "$tmp"/rootfs/usr/share/man/*
  findmnt -rn -o TARGET | grep -qF "$tmp/rootfs/" && die "something is still mounted under $tmp/rootfs"
  with_progress "tar.gz of the rootfs" tar -C "$tmp/rootfs" --numeric-owner -czf "$tmp/rootfs.tar.gz" .
  mv "$tmp/rootfs.tar.gz" "$out"
}

# The cached rootfs tarball (made once), its path printed.
bookworm_rootfs() {
  local cache="$CS_CACHE/images" tarball
  tarball="$cache/bookworm-build-$(declare -f build_bookworm_rootfs | sha256sum | cut -c1-16).tar.gz"
  mkdir -p "$cache"
  if [[ ! -f $tarball ]]; then
    step "Building a Debian 12 rootfs with gcc for the image bases (debootstrap, 1-2 min, once)"
    build_bookworm_rootfs "$tarball"
    find "$cache" -maxdepth 1 -name 'bookworm-build-*.tar.gz' ! -name "${tarball##*/}" -delete
  fi
  echo "$tarball"
}

# The bases are labelled with what they were made from: the functions that make them and the
# Rust version. (Not the whole script: a new base means compiling every crate again.)
base_recipe() {
  { declare -f build_bookworm_rootfs build_builder_base import_builder build_runtime_base; rustc --version; } |
    sha256sum | cut -c1-16
}

import_builder() {
  local root="$1" recipe="$2"
  tar -C "$root" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV CARGO_HTTP_CAINFO=/usr/local/share/ca-certificates-host/ca-certificates.crt' \
    --change "LABEL $RECIPE_LABEL=$recipe" - "$BUILDER_BASE" >/dev/null
}

build_builder_base() {
  local tarball="$1" recipe="$2"
  local tmp; tmp="$(mktemp -d)"; TMP_DIRS+=("$tmp")
  local root="$tmp/rootfs"
  mkdir -p "$root/usr/local/rust/bin" "$root/usr/local/share/ca-certificates-host"
  tar -C "$root" -xzf "$tarball"
  # rustc finds its standard library relative to itself: bin/ and lib/ are enough (no docs).
  cp -a "$TOOLCHAIN/bin/cargo" "$TOOLCHAIN/bin/rustc" "$root/usr/local/rust/bin/"
  cp -a "$TOOLCHAIN/lib" "$root/usr/local/rust/"
  # Cargo inside the build reaches crates.io the way this machine does, so it trusts what this
  # machine trusts. Kept apart from the image's own bundle, which is what the product copies.
  cp /etc/ssl/certs/ca-certificates.crt "$root/usr/local/share/ca-certificates-host/ca-certificates.crt"
  with_progress "docker import $BUILDER_BASE" import_builder "$root" "$recipe"
}

build_runtime_base() {
  local tarball="$1" recipe="$2"
  local tmp; tmp="$(mktemp -d)"; TMP_DIRS+=("$tmp")
  local root="$tmp/rootfs" deb
  mkdir -p "$tmp/debs" "$root"/{etc,tmp}
  chmod 1777 "$root/tmp"
  local archives=./var/cache/apt/archives package
  # iptables and what it links, for the agent's firewall; netbase for /etc/protocols.
  local packages=(libc6 libgcc-s1 iptables libip4tc2 libip6tc2 libxtables12 libnftnl11 libmnl0
    libnetfilter-conntrack3 libnfnetlink0 netbase)
  tar -C "$tmp/debs" -xzf "$tarball" --wildcards \
    $(for package in "${packages[@]}"; do printf '%s ' "$archives/${package}_*.deb"; done)
  # The CA certificates Debian 12 trusts (its ca-certificates package, as installed by debootstrap).
  tar -C "$root" -xzf "$tarball" ./etc/ssl/certs/ca-certificates.crt
  for deb in "$tmp"/debs/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$root"; done
  # What update-alternatives would do: the nf_tables backend, as Debian 12's default.
  for package in iptables iptables-restore iptables-save; do
    ln -sf xtables-nft-multi "$root/usr/sbin/$package"
  done
  rm -rf "$root"/usr/share/{doc,lintian,locale}
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$root/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$root/etc/group"
  tar -C "$root" --numeric-owner -c . |
    docker import --change "LABEL $RECIPE_LABEL=$recipe" - "$RUNTIME_BASE" >/dev/null
}

image_recipe() { docker image inspect -f "{{index .Config.Labels \"$RECIPE_LABEL\"}}" "$1" 2>/dev/null || true; }

# The runtime base; with `builder`, the builder base too.
cmd_bases() {
  docker_answers || die "no Docker daemon answers at ${DOCKER_HOST:-unix://$SOCK}"
  local recipe tarball old
  recipe="$(base_recipe)"
  if [[ "$(image_recipe "$RUNTIME_BASE")" == "$recipe" ]] &&
    [[ ${1:-} != builder || "$(image_recipe "$BUILDER_BASE")" == "$recipe" ]]; then
    info "$RUNTIME_BASE${1:+, $BUILDER_BASE}: present"
    return
  fi
  tarball="$(bookworm_rootfs)"
  if [[ ${1:-} == builder && "$(image_recipe "$BUILDER_BASE")" != "$recipe" ]]; then
    step "Making $BUILDER_BASE (Debian 12 + gcc + $(rustc --version | cut -d' ' -f1-2))"
    old="$(image_id "$BUILDER_BASE")"
    build_builder_base "$tarball" "$recipe"
    drop_old_image "$old" "$BUILDER_BASE"
  fi
  if [[ "$(image_recipe "$RUNTIME_BASE")" != "$recipe" ]]; then
    step "Making $RUNTIME_BASE (glibc, libgcc, iptables and CA certificates)"
    old="$(image_id "$RUNTIME_BASE")"
    build_runtime_base "$tarball" "$recipe"
    drop_old_image "$old" "$RUNTIME_BASE"
  fi
}

# dockerd 20.10 without the buildx plugin: the classic builder, whose layer cache keeps the
# compiled dependencies (see the Dockerfile). It warns that it is deprecated.
docker_build() {
  local log="$1" args=(--build-arg BUILDER_IMAGE="$BUILDER_BASE" --build-arg RUNTIME_IMAGE="$RUNTIME_BASE")
  { DOCKER_BUILDKIT=0 docker build "${args[@]}" --target build -t "$BUILD_STAGE" "$REPO_DIR" &&
    DOCKER_BUILDKIT=0 docker build "${args[@]}" -t "$IMAGE" "$REPO_DIR"; } >"$log" 2>&1 ||
    { tail -n 40 "$log" >&2; die "docker build failed (full log: $log)"; }
}

cmd_dockerfile() {
  # The build context's src/ carries the browser libraries the binary embeds (.dockerignore).
  bash "$SUPPORT_DIR/web-assets.sh"
  cmd_bases builder
  local log="$REPO_DIR/target/image-build.log"
  mkdir -p "$REPO_DIR/target"
  step "Building $IMAGE (docker build; a release build of every crate the first time, 10-20 min on 2 cores; log: $log)"
  local old_stage old_image
  old_stage="$(image_id "$BUILD_STAGE")"
  old_image="$(image_id "$IMAGE")"
  with_progress "docker build" docker_build "$log"
  drop_old_image "$old_stage" "$BUILD_STAGE"
  drop_old_image "$old_image" "$IMAGE"
  echo "$IMAGE"
}

# The Dockerfile's last stage (from `FROM ${RUNTIME_IMAGE}` on: labels, user, entrypoint), with
# the binary and certificates from the build context instead of the build stage.
runtime_stage() {
  echo 'ARG RUNTIME_IMAGE'
  sed -n '/^FROM \${RUNTIME_IMAGE}$/,$p' "$REPO_DIR/Dockerfile" | sed 's#^COPY --from=build /out/ /$#COPY out/ /#'
}

cmd_build() {
  local profile=debug flags=() binary="${COMPUTE_SERVER_BINARY:-}"
  if [[ ${1:-} == --release ]]; then profile=release; flags=(--release); fi
  if [[ -z $binary ]]; then
    bash "$SUPPORT_DIR/web-assets.sh"
    step "Building compute-server ($profile; cargo, a no-op when the tests' build is current)"
    (cd "$REPO_DIR" && with_progress "cargo build" cargo build --locked --quiet "${flags[@]}" --bin compute-server)
    binary="$REPO_DIR/target/$profile/compute-server"
  fi
  cmd_bases
  runtime_stage | grep -q '^COPY out/ /$' || die "the Dockerfile's last stage no longer copies /out/ from the build stage"
  local context; context="$(mktemp -d)"; TMP_DIRS+=("$context")
  mkdir -p "$context/out/usr/local/bin"
  # Debug information is for the tests' own backtraces; the image carries the code alone.
  strip -o "$context/out/usr/local/bin/compute-server" "$binary"
  runtime_stage >"$context/Dockerfile"
  step "Making $IMAGE from ${binary#"$REPO_DIR/"} on $RUNTIME_BASE"
  local old log="$REPO_DIR/target/image-build.log"
  old="$(image_id "$IMAGE")"
  DOCKER_BUILDKIT=0 docker build --build-arg RUNTIME_IMAGE="$RUNTIME_BASE" -t "$IMAGE" "$context" >"$log" 2>&1 ||
    { tail -n 40 "$log" >&2; die "docker build failed (full log: $log)"; }
  drop_old_image "$old" "$IMAGE"
  echo "$IMAGE"
}

case "${1:-}" in
  bases) cmd_bases builder ;;
  build) cmd_build "${2:-}" ;;
  dockerfile) cmd_dockerfile ;;
  *) die "usage: image.sh build [--release] | dockerfile | bases" ;;
esac
