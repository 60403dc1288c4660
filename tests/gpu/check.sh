#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, its driver, Docker and the NVIDIA Container Toolkit: runs a
# GPU server the way compute-server does (a real agent on a throwaway local stack) and
# nvidia-smi inside it. Not part of `make test` (CI has no GPU).
#
#   bash tests/gpu/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: install the NVIDIA driver first" >&2; exit 1; }
docker run --rm --gpus all computeserver/busybox:local true 2>/dev/null ||
  echo "note: docker run --gpus all fails here; the agent will say what to install" >&2
state=target/gpu-check
bash tests/support/stack.sh up "$state" >/dev/null
trap 'kill "${agent:-0}" 2>/dev/null; bash tests/support/stack.sh down "$state" >/dev/null' EXIT
# shellcheck disable=SC1091
set -a; source "$state/env"; set +a
kubectl() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }
cargo build --quiet
echo "==> nvidia-smi on the host"
nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader
target/debug/compute-server agent --node gpu-check --label gpu=true --metrics-address 127.0.0.1:0 \
  >"$state/agent.log" 2>&1 &
agent=$!
kubectl apply -f - <<'YAML' >/dev/null
apiVersion: computeserver.io/v1alpha1
kind: ComputeProfile
metadata: {name: gpu-check}
spec: {image: computeserver/debian-ssh:local, command: [sleep, infinity], maxResources: {gpus: 1}}
---
apiVersion: computeserver.io/v1alpha1
kind: ComputeServer
metadata: {name: gpu-check, namespace: compute, labels: {computeserver.io/node: gpu-check}}
spec: {owner: admin, profile: gpu-check, resources: {gpus: 1}}
YAML
echo "==> waiting for the server"
for _ in $(seq 60); do
  phase="$(kubectl get csrv -n compute gpu-check -o jsonpath='{.status.phase}')"
  [[ $phase == Running || $phase == Failed ]] && break
  sleep 2
done
kubectl get csrv -n compute gpu-check -o jsonpath='{.status.phase}: {.status.message} (GPUs {.status.gpuDevices}){"\n"}'
kubectl get computenode gpu-check -o jsonpath='{.status.gpus}{"\n"}'
echo "==> nvidia-smi in the server"
DOCKER_HOST="$DOCKER_HOST" docker exec csrv.compute.gpu-check nvidia-smi
kubectl delete csrv -n compute gpu-check --wait=true >/dev/null
kubectl delete computeprofile gpu-check >/dev/null
echo "==> done: the server saw its GPU"
