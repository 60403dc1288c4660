#!/usr/bin/env bash
# A real one-node Kubernetes for `make cluster` and tests/cluster.rs: the chart's pods run on a
# kubelet, as they do for admins who install compute-server.
#
# The node is a network namespace of its own (compute-cluster-N), joined to this machine by a
# veth pair: the node at 10.241.N.2, this machine at 10.241.N.1. Everything a kubeadm node runs
# runs in it, as processes: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd (Debian's, CRI) with runc and Debian's CNI plugins, the kubelet and kube-proxy, and
# the node's own Docker engine, the one its agent drives. CoreDNS runs as a Deployment. Keycloak
# runs beside the node, on 10.241.N.1, as an organisation's Keycloak would. Its iptables rules,
# bridges and ports are the namespace's own, so it does not touch `make up`'s stack or another
# cluster. Every image is built here and imported (nothing is pulled).
#
#   cluster.sh install          what a node needs: kubelet & co. and CoreDNS (install-kube.sh node),
#                               Debian's containernetworking-plugins
#   cluster.sh up STATE_DIR     start the node on the state STATE_DIR keeps, import the images
#                               (computeserver/compute-server:VERSION must be built: image.sh build),
#                               wait until the Node is Ready and CoreDNS answers; STATE_DIR/env
#                               lists where each part answers (KUBECONFIG, NODE_IP, KEYCLOAK_URL, ...)
#   cluster.sh install-chart STATE_DIR [HELM ARGS]
#                               helm upgrade --install compute-server from charts/ into namespace
#                               compute, with the values this cluster needs (install_values)
#   cluster.sh import-image STATE_DIR IMAGE
#                               an image of the Docker engine into the node's containerd (a new tag)
#   cluster.sh down [STATE_DIR] stop it all, keeping the state (its servers stop; `up` brings them back)
#   cluster.sh reset [STATE_DIR] stop, then delete the state: the cluster's etcd, its node's
#                               containers, volumes and images, its Keycloak database
#   cluster.sh local            `make cluster`: install, build, up on target/cluster, install the
#                               chart, print where everything is, stay up until Ctrl-C
source "$(dirname "$0")/kube.sh"

CLUSTER_STATE="$REPO_DIR/target/cluster"
CHART="$REPO_DIR/charts/compute-server"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO_DIR/Cargo.toml" | head -n1)"
IMAGE="computeserver/compute-server:$VERSION"
# The sandbox image name kubeadm 1.36 uses; built here from the module's build/pause/linux/pause.c.
PAUSE_IMAGE="registry.k8s.io/pause:3.10.2"
COREDNS_IMAGE="computeserver/coredns:local"
NODE_NAME="${CLUSTER_NODE_NAME:-node-1}"
# Inside the node's namespace, so the same for every cluster.
POD_SUBNET=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_IP=10.96.0.10
API_PORT=6443
WEB_NODE_PORT=30080
BASTION_NODE_PORT=30022
NAMESPACE=compute

# The names of the cluster in STATE_DIR (global: the traps and the other functions use them).
# Its number N is kept in the state's settings: the first one free when it was made.
cluster_names() {
  STATE="$1"
  local n
  n="$(sed -n 's/^CLUSTER_INDEX=//p' "$STATE/settings" 2>/dev/null | tail -n 1 || true)"
  if [[ -z $n ]]; then
    for ((n = 1; n <= 9; n++)); do
      ip link show "csc$n" >/dev/null 2>&1 || [[ -e /run/netns/compute-cluster-$n ]] || break
    done
    ((n <= 9)) || die "nine clusters already run on this machine: stop one (cluster.sh down STATE_DIR)"
    setting "$STATE" CLUSTER_INDEX "$n" >/dev/null
  fi
  INDEX="$n"
  NETNS="compute-cluster-$n"
  HOST_IF="csc$n"
  HOST_IP="10.241.$n.1"
  NODE_IP="10.241.$n.2"
  # Sockets, pid files and containerd's state: short paths (a socket path has 108 bytes at most).
  RUN="/run/compute-cluster-$n"
  CGROUP_ROOT="/compute-cluster-$n"
  KUBE="$STATE/kube"
  PKI="$STATE/pki"
  NODE_DOCKER_HOST="unix://$RUN/docker.sock"
  CONTAINERD_SOCK="$RUN/containerd.sock"
  # Keycloak's ports at this machine's end of the link: fixed, for people to remember.
  KC_PORT="$(setting "$STATE" KEYCLOAK_PORT "" 8180)"
  KC_HTTPS_PORT="$(setting "$STATE" KEYCLOAK_HTTPS_PORT "" 8443)"
}

# Runs a command in the node's network namespace (only that: the mount namespace stays this
# machine's, so the kubelet's mounts are containerd's too, as on a real node).
in_node() { nsenter --net="/run/netns/$NETNS" -- "$@"; }

install() {
  bash "$SUPPORT_DIR/install-kube.sh" node
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/firewall && -x /usr/bin/containerd && -x /usr/bin/ctr ]] && command -v nsenter >/dev/null || {
    step "Installing containernetworking-plugins (the node's CNI plugins) from the Debian archive"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      containernetworking-plugins containerd util-linux
  }
  info "CNI plugins, containerd $(containerd --version | awk '{print $3}'): installed"
}

# The node: a network namespace and the veth pair that joins it to this machine.
node_network_up() {
  if [[ ! -e /run/netns/$NETNS ]]; then
    ip netns add "$NETNS"
  fi
  if ! ip link show "$HOST_IF" >/dev/null 2>&1; then
    ip link add "$HOST_IF" type veth peer name "${HOST_IF}n"
    ip link set "${HOST_IF}n" netns "$NETNS"
    in_node ip link set "${HOST_IF}n" name eth0
    ip addr add "$HOST_IP/24" dev "$HOST_IF"
    in_node ip addr add "$NODE_IP/24" dev eth0
  fi
  ip link set "$HOST_IF" up
  in_node ip link set lo up
  in_node ip link set eth0 up
  in_node ip route replace default via "$HOST_IP"
  # What a Kubernetes node needs of its kernel (per network namespace).
  in_node sysctl -q -w net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 \
    net.bridge.bridge-nf-call-ip6tables=1
  mkdir -p "$RUN"
}

node_network_down() {
  ip link show "$HOST_IF" >/dev/null 2>&1 && ip link delete "$HOST_IF"
  [[ ! -e /run/netns/$NETNS ]] || ip netns delete "$NETNS"
  return 0
}

# Certificates: the cluster's CA signs the API server's (reached at the node's address and as the
# Service kubernetes), Keycloak's (at this machine's end of the link), one client certificate per
# component (named as Kubernetes' default RBAC expects) and the kubelet's serving certificate.
cluster_pki() {
  PKI_APISERVER_SANS="IP:$NODE_IP,IP:$API_SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc.cluster.local" \
    PKI_KEYCLOAK_SANS="IP:$HOST_IP" bash "$SUPPORT_DIR/pki.sh" ensure "$STATE"
  local client="extendedKeyUsage=clientAuth"
  bash "$SUPPORT_DIR/pki.sh" cert "$STATE" kube-controller-manager "/CN=system:kube-controller-manager" "$client"
  bash "$SUPPORT_DIR/pki.sh" cert "$STATE" kube-scheduler "/CN=system:kube-scheduler" "$client"
  bash "$SUPPORT_DIR/pki.sh" cert "$STATE" kube-proxy "/CN=system:kube-proxy" "$client"
  bash "$SUPPORT_DIR/pki.sh" cert "$STATE" kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
  bash "$SUPPORT_DIR/pki.sh" cert "$STATE" kubelet-serving "/CN=$NODE_NAME" \
    "extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
  bash "$SUPPORT_DIR/pki.sh" cert "$STATE" apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
}

# Starts NAME in the node (pid and log in $KUBE), unless it already runs there.
start_in_node() {
  local name="$1"; shift
  if [[ -f $KUBE/$name.pid ]] && pgrep -g "$(<"$KUBE/$name.pid")" >/dev/null 2>&1; then
    info "$name: already running"
    return
  fi
  start_group "$KUBE/$name.pid" "$KUBE/$name.log" nsenter --net="/run/netns/$NETNS" -- "$@"
}

# containerd for the kubelet (CRI), apart from the Docker engine's own: its root in the state,
# its sockets and its pods' network namespaces under $RUN.
start_containerd() {
  mkdir -p "$STATE/containerd" "$STATE/cni/net.d" "$STATE/cni/ipam"
  cat >"$STATE/containerd/config.toml" <<TOML
version = 2
root = "$STATE/containerd/root"
state = "$RUN/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  netns_mounts_under_state_dir = true
  # Root here lacks CAP_SYS_RESOURCE, so no process may lower its oom_score_adj below 0 (the
  # kubelet asks -998 for sandboxes, -997 for Guaranteed pods): keep them at containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
TOML
  # One bridge for the node's pods, masqueraded when they leave it; the firewall plugin lets them
  # through the FORWARD chain, whose policy the Docker engine beside them sets to DROP.
  cat >"$STATE/cni/net.d/10-compute-cluster.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "compute-cluster",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$STATE/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "firewall", "backend": "iptables"}
  ]
}
JSON
  step "Starting containerd in the node (log: $KUBE/containerd.log)"
  start_in_node containerd containerd --config "$STATE/containerd/config.toml"
  await_ready containerd "$(<"$KUBE/containerd.pid")" "$KUBE/containerd.log" 60 \
    ctr --address "$CONTAINERD_SOCK" version
}

# The node's Docker engine, the one its agent drives: iptables in the node's namespace, its data
# in the state (the servers' containers and volumes stay across `down` and `up`).
start_node_dockerd() {
  if DOCKER_HOST="$NODE_DOCKER_HOST" docker version >/dev/null 2>&1; then
    info "the node's dockerd: already running"
  else
    step "Starting the node's Docker engine (log: $KUBE/dockerd.log)"
    start_in_node dockerd dockerd -H "$NODE_DOCKER_HOST" --data-root "$STATE/docker" \
      --exec-root "$RUN/docker" --pidfile "$RUN/dockerd.pid"
    await_ready "the node's dockerd" "$(<"$KUBE/dockerd.pid")" "$KUBE/dockerd.log" 60 \
      env DOCKER_HOST="$NODE_DOCKER_HOST" docker version
  fi
}

start_control_plane() {
  local etcd_url="http://127.0.0.1:2379" fsync=()
  [[ ${ETCD_NO_FSYNC:-} != 1 ]] || fsync=(--unsafe-no-fsync)
  step "Starting etcd and kube-apiserver in the node (https://$NODE_IP:$API_PORT; logs in $KUBE)"
  start_in_node etcd "$CS_BIN/etcd" --name=default --data-dir="$KUBE/etcd" \
    --listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
    --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
    --initial-cluster=default=http://127.0.0.1:2380 "${fsync[@]}" --log-level=warn
  # Keycloak's https issuer: kubectl's sign-in (docs/user-guide.md, "kubectl through Keycloak").
  authentication_config "https://$HOST_IP:$KC_HTTPS_PORT/realms/compute" \
    "$PKI/ca.crt" >"$KUBE/authentication.yaml"
  start_in_node kube-apiserver "$CS_BIN/kube-apiserver" \
    --advertise-address="$NODE_IP" --bind-address=0.0.0.0 --secure-port="$API_PORT" \
    --etcd-servers="$etcd_url" --cert-dir="$PKI" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --authentication-config="$KUBE/authentication.yaml" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction
  write_kubeconfig "$STATE/kubeconfig" "https://$NODE_IP:$API_PORT" "$PKI" admin compute-server-cluster
  await_ready kube-apiserver "$(<"$KUBE/kube-apiserver.pid")" "$KUBE/kube-apiserver.log" 120 \
    "$CS_BIN/kubectl" --kubeconfig "$STATE/kubeconfig" get --raw /readyz
  local c
  for c in kube-controller-manager kube-scheduler kube-proxy kubelet; do
    write_kubeconfig "$KUBE/$c.kubeconfig" "https://$NODE_IP:$API_PORT" "$PKI" "$c" compute-server-cluster
  done
  start_in_node kube-controller-manager "$CS_BIN/kube-controller-manager" \
    --kubeconfig="$KUBE/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$KUBE/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$KUBE/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --cluster-cidr="$CLUSTER_CIDR"
  start_in_node kube-scheduler "$CS_BIN/kube-scheduler" \
    --kubeconfig="$KUBE/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$KUBE/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$KUBE/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false
}

# The pods' cgroups live under a root of this cluster's own, so that `down` can end every process
# of its pods and two clusters never share one.
cgroup_root_up() {
  local ctl dir
  for ctl in /sys/fs/cgroup/*/; do
    [[ -f $ctl/cgroup.procs ]] || continue
    dir="$ctl${CGROUP_ROOT#/}"
    mkdir -p "$dir"
    # A new cpuset cgroup starts with no CPUs and no memory nodes: give it its parent's.
    if [[ -f $dir/cpuset.cpus && -z "$(<"$dir/cpuset.cpus")" ]]; then
      cat "${ctl}cpuset.cpus" >"$dir/cpuset.cpus"
      cat "${ctl}cpuset.mems" >"$dir/cpuset.mems"
    fi
  done
}

start_node_agents() {
  mkdir -p "$STATE/kubelet/root" "$STATE/kubelet/pod-logs"
  # The pods' DNS servers beyond the cluster's: none (nothing outside answers here).
  printf 'nameserver %s\n' "$HOST_IP" >"$STATE/kubelet/resolv.conf"
  cat >"$STATE/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
# This machine has cgroup v1 and no systemd; containerd 1.6 does not tell its cgroup driver.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $CGROUP_ROOT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
clusterDomain: cluster.local
clusterDNS: [$DNS_IP]
resolvConf: $STATE/kubelet/resolv.conf
podLogsDir: $STATE/kubelet/pod-logs
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
failSwapOn: false
# The images were imported, not pulled: never collect them (nothing could pull them back).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}
YAML
  cat >"$KUBE/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KUBE/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $CLUSTER_CIDR
mode: iptables
# A network namespace other than the first may not raise nf_conntrack_max.
conntrack: {maxPerCore: 0}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
YAML
  cgroup_root_up
  step "Starting the kubelet and kube-proxy in the node ($NODE_NAME at $NODE_IP; logs in $KUBE)"
  start_in_node kubelet "$CS_BIN/kubelet" --config="$STATE/kubelet/config.yaml" \
    --kubeconfig="$KUBE/kubelet.kubeconfig" --root-dir="$STATE/kubelet/root" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --node-labels=computeserver.io/agent=true
  start_in_node kube-proxy "$CS_BIN/kube-proxy" --config="$KUBE/kube-proxy.yaml"
}

# An image of the main Docker engine into the node's containerd, unless it holds that very image
# (the Docker image id imported last is kept beside containerd's store).
import_image() {
  local image="$1" id mark
  id="$(docker image inspect -f '{{.Id}}' "$image")" || die "no image $image on the Docker engine"
  mark="$STATE/containerd/imported/$(printf '%s' "$image" | tr '/:' '__')"
  [[ "$(cat "$mark" 2>/dev/null)" != "$id" ]] || return 0
  docker save "$image" | ctr --address "$CONTAINERD_SOCK" -n k8s.io images import - >/dev/null
  mkdir -p "${mark%/*}"
  echo "$id" >"$mark"
}

# The sandbox ("pause") image from Kubernetes' own pause.c, and CoreDNS, made on the main engine.
build_system_images() {
  local recipe tmp
  recipe="$(declare -f build_system_images | sha256sum | cut -c1-16)"
  if [[ "$(docker image inspect -f '{{index .Config.Labels "io.computeserver.recipe"}}' "$PAUSE_IMAGE" 2>/dev/null)" != "$recipe" ]]; then
    local src
    src="$(cd "$SUPPORT_DIR/kube" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
    tmp="$(mktemp -d)"
    gcc -Os -static -Wall -Werror -DVERSION="${PAUSE_IMAGE##*:}" -o "$tmp/pause" "$src"
    tar -C "$tmp" --owner=0 --group=0 -c pause | docker import --change 'ENTRYPOINT ["/pause"]' \
      --change 'USER 65535:65535' --change "LABEL io.computeserver.recipe=$recipe" - "$PAUSE_IMAGE" >/dev/null
    rm -rf "$tmp"
  fi
  if [[ "$(docker image inspect -f '{{index .Config.Labels "io.computeserver.recipe"}}' "$COREDNS_IMAGE" 2>/dev/null)" != "$recipe-$(sha256sum <"$CS_BIN/coredns" | cut -c1-16)" ]]; then
    tmp="$(mktemp -d)"
    cp "$CS_BIN/coredns" "$tmp/coredns"
    tar -C "$tmp" --owner=0 --group=0 -c coredns | docker import --change 'ENTRYPOINT ["/coredns"]' \
      --change 'USER 65532:65532' \
      --change "LABEL io.computeserver.recipe=$recipe-$(sha256sum <"$CS_BIN/coredns" | cut -c1-16)" - "$COREDNS_IMAGE" >/dev/null
    rm -rf "$tmp"
  fi
}

import_images() {
  step "Importing the images into the node: $PAUSE_IMAGE and $COREDNS_IMAGE (built here), $IMAGE; busybox and debian-ssh into its Docker engine"
  build_system_images
  import_image "$PAUSE_IMAGE"
  import_image "$COREDNS_IMAGE"
  docker image inspect "$IMAGE" >/dev/null 2>&1 || die "$IMAGE is not built: bash tests/support/image.sh build"
  import_image "$IMAGE"
  DOCKER_HOST="$NODE_DOCKER_HOST" bash "$SUPPORT_DIR/docker.sh" images
}

# CoreDNS as kubeadm deploys it: the Service kube-dns at $DNS_IP, a Deployment, and its RBAC.
coredns_manifest() {
  cat <<YAML
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
  - {apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}
  - {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:1053 {
        errors
        health {
            lameduck 5s
        }
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        cache 30
        loop
        reload
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      containers:
        - name: coredns
          image: $COREDNS_IMAGE
          imagePullPolicy: Never
          args: [-conf, /etc/coredns/Corefile]
          # An unprivileged port, as uid 65532 with no capability; the Service maps 53 to it.
          ports:
            - {name: dns, containerPort: 1053, protocol: UDP}
            - {name: dns-tcp, containerPort: 1053, protocol: TCP}
          securityContext:
            runAsNonRoot: true
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          livenessProbe: {httpGet: {path: /health, port: 8080}, initialDelaySeconds: 10}
          readinessProbe: {httpGet: {path: /ready, port: 8181}}
          resources: {requests: {cpu: 50m, memory: 32Mi}, limits: {memory: 128Mi}}
          volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes:
        - {name: config, configMap: {name: coredns, items: [{key: Corefile, path: Corefile}]}}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $DNS_IP
  selector: {k8s-app: kube-dns}
  ports:
    - {name: dns, port: 53, targetPort: dns, protocol: UDP}
    - {name: dns-tcp, port: 53, targetPort: dns-tcp, protocol: TCP}
YAML
}

# Keycloak as the organisation runs it, reached by browsers and by the web pods at this machine's
# end of the link; the web front's callback is allowed there (what an admin sets in Keycloak).
start_keycloak() {
  KEYCLOAK_HOST="$HOST_IP" KEYCLOAK_PORT="$KC_PORT" KEYCLOAK_HTTPS_PORT="$KC_HTTPS_PORT" \
    bash "$SUPPORT_DIR/keycloak.sh" start "$STATE"
}

allow_web_callback() {
  local kc="$1" web="$2" token
  token="$(curl -sf --data grant_type=password --data client_id=admin-cli --data username=admin \
    --data password=admin "$kc/realms/master/protocol/openid-connect/token" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
  curl -sf -H "Authorization: Bearer $token" "$kc/admin/realms/compute/clients?clientId=compute-server" |
    python3 -c '
import json, sys
client = json.load(sys.stdin)[0]
uri = sys.argv[1] + "/auth/callback"
if uri not in client["redirectUris"]:
    client["redirectUris"].append(uri)
print(client["id"]); print(json.dumps(client))' "$web" >"$STATE/keycloak-client.json"
  curl -sf -X PUT -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    --data "$(sed -n 2p "$STATE/keycloak-client.json")" \
    "$kc/admin/realms/compute/clients/$(sed -n 1p "$STATE/keycloak-client.json")"
  rm -f "$STATE/keycloak-client.json"
}

up() {
  mkdir -p "$1"
  cluster_names "$(cd "$1" && pwd -P)"
  local t0=$SECONDS
  rm -f "$STATE/env"
  mkdir -p "$KUBE"
  node_network_up
  cluster_pki
  # Keycloak takes longest: it starts alongside the rest and is waited for last.
  bash "$SUPPORT_DIR/keycloak.sh" stop "$STATE"
  start_keycloak >"$STATE/keycloak-start.log" 2>&1 &
  local keycloak=$!
  start_containerd
  start_node_dockerd
  start_control_plane
  start_node_agents
  import_images
  local kubectl=("$CS_BIN/kubectl" --kubeconfig "$STATE/kubeconfig")
  coredns_manifest | "${kubectl[@]}" apply -f - >/dev/null
  step "Waiting for the node to be Ready and for CoreDNS"
  await_ready "node $NODE_NAME" "$(<"$KUBE/kubelet.pid")" "$KUBE/kubelet.log" 180 \
    "${kubectl[@]}" wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
  await_ready CoreDNS "$(<"$KUBE/kubelet.pid")" "$KUBE/kubelet.log" 180 \
    "${kubectl[@]}" -n kube-system wait --for=condition=Available deployment/coredns --timeout=5s
  if ! wait "$keycloak"; then
    cat "$STATE/keycloak-start.log" >&2
    die "Keycloak did not start"
  fi
  cat "$STATE/keycloak-start.log" >&2
  local kc_url web_url="http://$NODE_IP:$WEB_NODE_PORT"
  kc_url="$(sed -n 's/^KEYCLOAK_URL=//p' "$STATE/env" | tail -n 1)"
  allow_web_callback "$kc_url" "$web_url"
  write_oidc_kubeconfig "$STATE/kubeconfig-oidc" "https://$NODE_IP:$API_PORT" "$PKI" \
    "https://$HOST_IP:$KC_HTTPS_PORT/realms/compute" compute-server-cluster
  set_env "$STATE" KUBECONFIG "$STATE/kubeconfig"
  set_env "$STATE" KUBECONFIG_OIDC "$STATE/kubeconfig-oidc"
  set_env "$STATE" KUBECTL "$CS_BIN/kubectl"
  set_env "$STATE" HELM "$CS_BIN/helm"
  set_env "$STATE" NODE_NAME "$NODE_NAME"
  set_env "$STATE" NODE_IP "$NODE_IP"
  set_env "$STATE" NODE_DOCKER_HOST "$NODE_DOCKER_HOST"
  set_env "$STATE" WEB_URL "$web_url"
  set_env "$STATE" BASTION_ADDRESS "$NODE_IP:$BASTION_NODE_PORT"
  set_env "$STATE" IMAGE "$IMAGE"
  info "cluster up in $((SECONDS - t0)) s; its addresses are in $STATE/env"
}

# What an install on this cluster needs besides the chart's defaults (docs/admin-guide.md, "Install on a
# cluster"): where Keycloak, the web front and the bastion are reached, and this node's Docker
# socket; then the demo's profiles and who may use kubectl.
install_values() {
  local kc_url
  kc_url="$(sed -n 's/^KEYCLOAK_URL=//p' "$STATE/env" | tail -n 1)"
  printf '%s\n' --values "$SUPPORT_DIR/cluster-values.yaml" \
    --set "keycloak.url=$kc_url" \
    --set "web.publicUrl=http://$NODE_IP:$WEB_NODE_PORT" \
    --set "bastion.externalAddress=$NODE_IP:$BASTION_NODE_PORT" \
    --set "agent.dockerSocket=$RUN/docker.sock" \
    --set "browserSessions.userCaSecret=compute-server-user-ca"
}

install_chart() {
  cluster_names "$(cd "$1" && pwd -P)"; shift
  local values kubectl=("$CS_BIN/kubectl" --kubeconfig "$STATE/kubeconfig")
  mapfile -t values < <(install_values)
  # The user CA of browser sessions, as the values' documentation tells admins to make it.
  [[ -s $STATE/user-ca ]] || ssh-keygen -q -t ed25519 -N '' -C compute-server-user-ca -f "$STATE/user-ca"
  "${kubectl[@]}" create namespace "$NAMESPACE" --dry-run=client -o yaml | "${kubectl[@]}" apply -f - >/dev/null
  "${kubectl[@]}" -n "$NAMESPACE" create secret generic compute-server-user-ca --from-file=ca="$STATE/user-ca" \
    --from-file=ca.pub="$STATE/user-ca.pub" --dry-run=client -o yaml | "${kubectl[@]}" apply -f - >/dev/null
  step "helm upgrade --install compute-server charts/compute-server -n $NAMESPACE (waits until every pod is Ready)"
  with_progress "helm" "$CS_BIN/helm" --kubeconfig "$STATE/kubeconfig" upgrade --install compute-server "$CHART" \
    --namespace "$NAMESPACE" --create-namespace "${values[@]}" --wait --timeout 5m "$@"
}

# The node's Docker engine stops its containers itself (as on a host's shutdown) before its
# process group goes.
stop_node_dockerd() {
  local pid i
  [[ -f $KUBE/dockerd.pid ]] || return 0
  pid="$(<"$KUBE/dockerd.pid")"
  if pgrep -a -g "$pid" 2>/dev/null | grep -qF -- "$RUN/docker.sock"; then
    step "Stopping the node's Docker engine (pid $pid; its containers stop with it)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 80 && $(kill -0 "$pid" 2>/dev/null && echo 1 || echo 0); i++)); do sleep 0.5; done
    kill_group "$pid" "the node's dockerd" 10
  fi
  rm -f "$KUBE/dockerd.pid"
}

# Ends every process of the node's pods (their cgroups are under $CGROUP_ROOT) and containerd's
# shims, then containerd itself.
stop_pods() {
  local procs pids tries
  for ((tries = 0; tries < 20; tries++)); do
    procs="$(find /sys/fs/cgroup/pids/"${CGROUP_ROOT#/}" -name cgroup.procs 2>/dev/null || true)"
    pids="$(cat $procs 2>/dev/null | sort -u | xargs)"
    [[ -n $pids ]] || break
    kill -KILL $pids 2>/dev/null || true
    sleep 0.5
  done
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null || true
}

down() {
  local state="${1:-$CLUSTER_STATE}"
  [[ -d $state ]] || return 0
  cluster_names "$(cd "$state" && pwd -P)"
  local c pid
  # A `make cluster` waiting in another terminal ends too (its own stop then finds nothing).
  pid="$(cat "$STATE/make-cluster.pid" 2>/dev/null || true)"
  if [[ -n $pid && $pid != "$$" ]] && ps -p "$pid" -o args= 2>/dev/null | grep -qF "cluster.sh local"; then
    kill -TERM "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/make-cluster.pid"
  for c in kubelet kube-proxy kube-scheduler kube-controller-manager; do
    stop_group "$KUBE/$c.pid" "$c" "$c"
  done
  stop_pods
  stop_group "$KUBE/containerd.pid" containerd "$STATE/containerd"
  stop_node_dockerd
  stop_group "$KUBE/kube-apiserver.pid" kube-apiserver kube-apiserver
  stop_group "$KUBE/etcd.pid" etcd "$KUBE/etcd"
  bash "$SUPPORT_DIR/keycloak.sh" stop "$STATE"
  # What the kubelet, containerd and the Docker engine mounted for their containers.
  findmnt -rn -o TARGET | grep -E "^($STATE|$RUN)/" | sort -r | xargs -r umount -l 2>/dev/null || true
  find "/sys/fs/cgroup/" -mindepth 2 -depth -type d -path "*${CGROUP_ROOT}*" -exec rmdir {} + 2>/dev/null || true
  node_network_down
  rm -rf --one-file-system "$RUN"
}

reset() {
  local state="${1:-$CLUSTER_STATE}"
  [[ -d $state ]] || { info "nothing to reset: $state does not exist"; return 0; }
  down "$state"
  state="$(cd "$state" && pwd -P)"
  findmnt -rn -o TARGET | grep -qF "$state/" && die "something is still mounted under $state"
  rm -rf --one-file-system "$state"
  info "deleted $state"
}

local_cluster() {
  state="$CLUSTER_STATE"  # global: the trap reads it
  if [[ -f $state/kube/kubelet.pid ]] && pgrep -g "$(<"$state/kube/kubelet.pid")" >/dev/null 2>&1; then
    die "the cluster already runs (state $state): use it, or stop it with make cluster-down"
  fi
  bash "$SUPPORT_DIR/stack.sh" install
  install
  bash "$SUPPORT_DIR/web-assets.sh"
  step "Building compute-server (cargo; several minutes the first time)"
  (cd "$REPO_DIR" && with_progress "cargo build" cargo build --locked --quiet --bin compute-server)
  mkdir -p "$state"
  bash "$SUPPORT_DIR/docker.sh" start "$state"
  bash "$SUPPORT_DIR/image.sh" build >/dev/null
  trap 'trap - INT TERM EXIT; trap "" PIPE; set +e; echo; down "$state"; exit 0' INT TERM EXIT
  echo $$ >"$state/make-cluster.pid"
  up "$state"
  install_chart "$state"
  # shellcheck disable=SC1091
  source "$state/env"
  cat <<BANNER

  compute-server runs on a one-node Kubernetes ($K8S_VERSION), installed with Helm from charts/.
  Its state is kept in target/cluster: Ctrl-C or make cluster-down stops it, make cluster starts
  it again as it was.

  Kubernetes API  kubectl --kubeconfig target/cluster/kubeconfig get pods -A       (admin)
                  (kubectl $K8S_VERSION: $CS_BIN/kubectl)
                  node $NODE_NAME at $NODE_IP; helm --kubeconfig target/cluster/kubeconfig -n $NAMESPACE status compute-server
  kubectl as      KUBECONFIG=target/cluster/kubeconfig-oidc kubectl get csrv   (signs in through Keycloak)
  Keycloak        $KEYCLOAK_URL/realms/compute/account   (admin console: $KEYCLOAK_URL/admin, admin/admin)
  Demo logins     alice/alice, bob/bob (group students), carol/carol (staff), ops/ops (compute-admins)
  Web front       $WEB_URL   sign in as alice/alice, request a server
  Bastion         ssh -J alice@$BASTION_ADDRESS root@SERVER
  Logs            target/cluster/kube/*.log; kubectl -n $NAMESPACE logs ds/compute-server-agent
  Ctrl-C stops everything.

BANNER
  while true; do sleep 3600 & wait $!; done
}

case "${1:-}" in
  install) install ;;
  up) [[ $# -eq 2 ]] || die "usage: $0 up STATE_DIR"; up "$2" ;;
  import-image) [[ $# -eq 3 ]] || die "usage: $0 import-image STATE_DIR IMAGE"
    cluster_names "$(cd "$2" && pwd -P)"; import_image "$3" ;;
  install-chart) [[ $# -ge 2 ]] || die "usage: $0 install-chart STATE_DIR [HELM ARGS]"; shift; install_chart "$@" ;;
  down) [[ $# -le 2 ]] || die "usage: $0 down [STATE_DIR]"; down "${2:-}" ;;
  reset) [[ $# -le 2 ]] || die "usage: $0 reset [STATE_DIR]"; reset "${2:-}" ;;
  local) local_cluster ;;
  *) die "usage: $0 install | up STATE_DIR | import-image STATE_DIR IMAGE | install-chart STATE_DIR [HELM ARGS] | down [STATE_DIR] | reset [STATE_DIR] | local" ;;
esac
