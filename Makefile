# The two commands: `make up` and `make test`. Everything they need is installed by
# tests/support/ on first use and cached in ~/.cache/compute-server.
STACK := tests/support/stack.sh
# The browser libraries the binary embeds (src/web/static/vendor/, from web/package-lock.json):
# every target that compiles runs it first (stack.sh and image.sh do too). Quick when present.
WEB_ASSETS := tests/support/web-assets.sh

.PHONY: up down reset test bench install crds manifests image lint

## up: start the local stack (Docker, kube-apiserver + etcd, Keycloak, compute-server) on its kept state; Ctrl-C stops it
up:
	@bash $(STACK) local

## down: stop a local stack left running (its state is kept)
down:
	@bash $(STACK) down

## reset: delete the local stack's state and its servers' containers and volumes (says what, asks; YES=1 does not ask)
reset:
	@bash $(STACK) reset $(if $(YES),--yes)

## test: the whole suite against real components (what CI runs)
test:
	@bash $(STACK) test

## bench: the benchmarks (release build) against real components; BENCH=scheduler for one
bench:
	@bash $(STACK) bench $(BENCH)

## install: install and build the real components only
install:
	@bash $(STACK) install

## crds: regenerate crds/ (and the Helm chart's and Terraform module's copies, then manifests/) from the Rust types
crds:
	@bash $(WEB_ASSETS)
	cargo run --quiet -- crd --out-dir crds
	cargo run --quiet -- crd --out-dir charts/compute-server/files/crds
	cargo run --quiet -- crd --out-dir terraform/modules/compute-server/crds
	@bash tests/support/manifests.sh write

## manifests: regenerate manifests/ (plain YAML for kubectl apply -k) from the Helm chart
manifests:
	@bash tests/support/manifests.sh write

## image: build the container image computeserver/compute-server:VERSION on local base images
image:
	@bash tests/support/image.sh build

## lint: rustfmt and clippy as CI would want them
lint:
	@bash $(WEB_ASSETS)
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

.PHONY: bench-web
## bench-web: wrk against "My servers" with 10,000 servers in the cluster (release build; BENCH_SECONDS, default 20)
bench-web:
	@bash $(STACK) test --release --test web -- --ignored --nocapture bench_my_servers

.PHONY: bench-browser
## bench-browser: a keystroke's echo in the browser terminal vs ssh -J, and an app page through the front vs ssh -L (BENCH_RUNS, default 200)
bench-browser:
	@bash $(STACK) test --release --test browser -- --ignored --nocapture bench_terminal_echo

.PHONY: bench-bastion
## bench-bastion: time to first byte through the bastion vs direct (BENCH_RUNS, default 30)
bench-bastion:
	@bash $(STACK) test --test bastion -- --ignored --nocapture bench_time_to_first_byte
