#!/usr/bin/env bash
# The product image computeserver/compute-server:<version>, built with the repository's
# Dockerfile on base images made here, since no container registry is reachable:
#
#   computeserver/rust-builder:local   (stands in for rust:1-bookworm) Debian 12 minbase with gcc
#                                      and libc6-dev from debootstrap, plus this machine's Rust
#                                      toolchain (rustc and cargo as rustup installed them)
#   computeserver/runtime-base:local   (stands in for debian:bookworm-slim) glibc and libgcc
#                                      (the shared libraries the binary links) and iptables
#                                      (the agent's firewall for the servers' networks)
#
#   image.sh bases    make both bases if missing or out of date
#   image.sh build    web-assets.sh (src/web/static/vendor/), bases, then `docker build` the
#                     product image; prints its tag last
#
# The debootstrap rootfs is cached in $CS_CACHE/images; nothing depends on that cache.
# Elsewhere, build with the public bases: `docker build -t computeserver/compute-server:TAG .`
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

cmd_bases() {
  docker_answers || die "no Docker daemon answers at ${DOCKER_HOST:-unix://$SOCK}"
  local recipe tarball old
  recipe="$(base_recipe)"
  if [[ "$(docker image inspect -f "{{index .Config.Labels \"$RECIPE_LABEL\"}}" "$BUILDER_BASE" 2>/dev/null)" == "$recipe" ]] &&
    [[ "$(docker image inspect -f "{{index .Config.Labels \"$RECIPE_LABEL\"}}" "$RUNTIME_BASE" 2>/dev/null)" == "$recipe" ]]; then
    info "$BUILDER_BASE, $RUNTIME_BASE: present"
    return
  fi
  tarball="$(bookworm_rootfs)"
  step "Making $BUILDER_BASE (Debian 12 + gcc + $(rustc --version | cut -d' ' -f1-2))"
  old="$(image_id "$BUILDER_BASE")"
  build_builder_base "$tarball" "$recipe"
  drop_old_image "$old" "$BUILDER_BASE"
  step "Making $RUNTIME_BASE (glibc, libgcc and iptables)"
  old="$(image_id "$RUNTIME_BASE")"
  build_runtime_base "$tarball" "$recipe"
  drop_old_image "$old" "$RUNTIME_BASE"
}

# dockerd 20.10 without the buildx plugin: the classic builder, whose layer cache keeps the
# compiled dependencies (see the Dockerfile). It warns that it is deprecated.
docker_build() {
  local log="$1" args=(--build-arg BUILDER_IMAGE="$BUILDER_BASE" --build-arg RUNTIME_IMAGE="$RUNTIME_BASE")
  { DOCKER_BUILDKIT=0 docker build "${args[@]}" --target build -t "$BUILD_STAGE" "$REPO_DIR" &&
    DOCKER_BUILDKIT=0 docker build "${args[@]}" -t "$IMAGE" "$REPO_DIR"; } >"$log" 2>&1 ||
    { tail -n 40 "$log" >&2; die "docker build failed (full log: $log)"; }
}

cmd_build() {
  # The build context's src/ carries the browser libraries the binary embeds (.dockerignore).
  bash "$SUPPORT_DIR/web-assets.sh"
  cmd_bases
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

case "${1:-}" in
  bases) cmd_bases ;;
  build) cmd_build ;;
  *) die "usage: image.sh bases | build" ;;
esac
