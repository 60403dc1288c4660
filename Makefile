# The two commands: `make up` and `make test`. Everything they need is installed by
# tests/support/ on first use and cached in ~/.cache/compute-server.
STACK := tests/support/stack.sh
# The browser libraries the binary embeds (src/web/static/vendor/, from web/package-lock.json):
# every target that compiles runs it first (stack.sh and image.sh do too). Quick when present.
WEB_ASSETS := tests/support/web-assets.sh

.PHONY: up down reset test check bench chaos install crds manifests image lint cluster cluster-down cluster-reset

## up: start the local stack (Docker, kube-apiserver + etcd, Keycloak, compute-server) on its kept state; Ctrl-C stops it
up:
	@bash $(STACK) local

## cluster: a real one-node Kubernetes (kubelet, containerd, CoreDNS) with compute-server installed by Helm from charts/, kept in target/cluster; Ctrl-C stops it
cluster:
	@bash tests/support/cluster.sh local

## cluster-down: stop a cluster left running (its state is kept); cluster-reset: delete it
cluster-down:
	@bash tests/support/cluster.sh down

cluster-reset:
	@bash tests/support/cluster.sh reset

## down: stop a local stack left running (its state is kept)
down:
	@bash $(STACK) down

## reset: delete the local stack's state and its servers' containers and volumes (says what, asks; YES=1 does not ask)
reset:
	@bash $(STACK) reset $(if $(YES),--yes)

## test: the whole suite against real components (what CI runs)
test:
	@bash $(STACK) test

## check: what needs no real component, in minutes: rustfmt, clippy, the unit and seam tests (src/, on src/mock_api.rs), the architecture invariants, the docs' links and the CRD files (tests/invariants.rs, docs.rs, crds.rs)
check:
	@bash $(WEB_ASSETS)
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings
	cargo test --locked --lib --bins --test invariants --test docs --test crds

## bench: every benchmark (release build) against real components, with a summary line each; BENCH=NAME for one (agent, scheduler, web, bastion, browser, snapshot)
bench:
	@bash $(STACK) bench $(BENCH)

## chaos: faults on purpose on the real stack with 3 nodes for CHAOS_SECONDS (default 300), then the invariants; CHAOS_SEED=N replays a run
chaos:
	@CHAOS_SECONDS=$(or $(CHAOS_SECONDS),300) CHAOS_SEED=$(or $(CHAOS_SEED),$(shell od -An -N4 -tu4 /dev/urandom | tr -d " ")) bash $(STACK) chaos

## install: install and build the real components only
install:
	@bash $(STACK) install

## crds: regenerate crds/ (and the Helm chart's and Terraform module's copies, then manifests/) from the Rust types
crds:
	@bash $(WEB_ASSETS)
	cargo run --quiet -- crd --out-dir crds
	cargo run --quiet -- crd --out-dir charts/compute-server/crds
	cargo run --quiet -- crd --out-dir terraform/modules/compute-server/crds
	@bash tests/support/manifests.sh write

## manifests: regenerate manifests/ (plain YAML for kubectl apply -k) from the Helm chart
manifests:
	@bash tests/support/manifests.sh write

## image: the container image computeserver/compute-server:VERSION from a release build, on a locally made base
image:
	@bash tests/support/image.sh build --release

## lint: rustfmt and clippy as CI would want them
lint:
	@bash $(WEB_ASSETS)
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

.PHONY: bench-web bench-browser bench-bastion
## bench-web, bench-browser, bench-bastion: one benchmark, as make bench BENCH=web (browser, bastion)
bench-web bench-browser bench-bastion:
	@bash $(STACK) bench $(@:bench-%=%)
