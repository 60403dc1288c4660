#!/usr/bin/env bash
# The browser libraries the web front embeds (include_bytes!/include_str!), from the npm
# registry at the exact versions web/package-lock.json pins, never from a CDN:
#
#   web-assets.sh     make src/web/static/vendor/ (not committed: .gitignore) if missing or
#                     made from another lockfile; prints "present" otherwise
#
#   xterm.js        @xterm/xterm/lib/xterm.js         UMD, defines window.Terminal
#   xterm.css       @xterm/xterm/css/xterm.css
#   addon-fit.js    @xterm/addon-fit/lib/addon-fit.js UMD, defines window.FitAddon.FitAddon
#   LICENSE-xterm   @xterm/xterm/LICENSE              (MIT; addon-fit is the same project's)
#
# `npm ci` checks each package's tarball against the sha512 `integrity` in the lockfile. It
# installs into $CS_CACHE/web-assets/<hash of the lockfile>, outside the repository (no
# node_modules here); nothing depends on that cache. To change a version: edit web/package.json,
# then `cd web && npm install --package-lock-only` and commit both files.
source "$(dirname "$0")/lib.sh"

WEB_DIR="$REPO_DIR/web"
VENDOR="$REPO_DIR/src/web/static/vendor"
# vendor file <- file in the cache's node_modules
declare -A FILES=(
  [xterm.js]=@xterm/xterm/lib/xterm.js
  [xterm.css]=@xterm/xterm/css/xterm.css
  [addon-fit.js]=@xterm/addon-fit/lib/addon-fit.js
  [LICENSE-xterm]=@xterm/xterm/LICENSE
)

HASH="$(sha256sum "$WEB_DIR/package-lock.json" | cut -c1-16)"

vendor_is_current() {
  local f
  [[ "$(cat "$VENDOR/.lock-hash" 2>/dev/null)" == "$HASH" ]] || return 1
  for f in "${!FILES[@]}"; do [[ -s $VENDOR/$f ]] || return 1; done
}

if vendor_is_current; then
  info "web assets (xterm.js): present"
  exit 0
fi

command -v npm >/dev/null || {
  step "Installing npm from the Debian archive"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm
}

# Every package in the lockfile must carry a sha512 integrity, or npm ci would take any tarball.
node -e '
  const lock = require(process.argv[1]);
  if (lock.lockfileVersion !== 3) throw new Error("lockfileVersion " + lock.lockfileVersion + ", expected 3");
  for (const [path, p] of Object.entries(lock.packages))
    if (path !== "" && !/^sha512-/.test(p.integrity || "")) throw new Error(path + ": no sha512 integrity");
' "$WEB_DIR/package-lock.json" || die "web/package-lock.json: see above"

CACHE="$CS_CACHE/web-assets/$HASH"
if [[ -f $CACHE/.complete ]]; then
  info "web assets: npm packages cached in $CACHE"
else
  step "Fetching the web assets from the npm registry (npm ci, integrity-checked against web/package-lock.json)"
  mkdir -p "$CS_CACHE/web-assets"
  tmp="$(mktemp -d "$CS_CACHE/web-assets/build.XXXXXX")"
  trap 'rm -rf --one-file-system "$tmp"' EXIT
  cp "$WEB_DIR/package.json" "$WEB_DIR/package-lock.json" "$tmp/"
  (cd "$tmp" && with_progress "npm ci" npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  touch "$tmp/.complete"
  rm -rf --one-file-system "$CACHE"
  mv "$tmp" "$CACHE"   # same file system: atomic, no half-installed cache entry
  # Packages of older lockfiles are dead weight now.
  find "$CS_CACHE/web-assets" -mindepth 1 -maxdepth 1 ! -name "$HASH" -exec rm -rf --one-file-system {} +
fi

step "Copying xterm.js into src/web/static/vendor/"
mkdir -p "$VENDOR"
rm -f "$VENDOR/.lock-hash"   # written last: a copy cut short is not taken for a good one
for f in "${!FILES[@]}"; do
  src="$CACHE/node_modules/${FILES[$f]}"
  [[ -s $src ]] || die "$src is missing: does web/package-lock.json still pin the packages this script copies?"
  cp "$src" "$VENDOR/$f"
done
printf '%s\n' "$HASH" >"$VENDOR/.lock-hash"
info "web assets: $(cd "$VENDOR" && ls | tr '\n' ' ')(@xterm/xterm $(node -p 'require(process.argv[1]).version' \
  "$CACHE/node_modules/@xterm/xterm/package.json"), @xterm/addon-fit $(node -p 'require(process.argv[1]).version' \
  "$CACHE/node_modules/@xterm/addon-fit/package.json"))"
