#!/usr/bin/env bash
# The local stack's certificates and keys, made once per state folder and kept, so that
# kubeconfigs, known CAs and service-account tokens stay valid across restarts:
#   - a CA (10 years) that signs the kube-apiserver's and Keycloak's serving certificates and the
#     admin's client certificate (group system:masters, like envtest's admin), 1 year each and
#     renewed on start when less than 30 days are left (the CA stays, so nothing else changes);
#   - the service-account signing key pair.
#
#   pki.sh ensure STATE_DIR    make what is missing in STATE_DIR/pki, renew what runs out.
#                              PKI_APISERVER_SANS, PKI_KEYCLOAK_SANS: more subjectAltName entries
#                              (IP:10.241.1.2,DNS:kubernetes), for a cluster reached at another address
#   pki.sh cert STATE_DIR NAME SUBJECT EXTENSIONS
#                              one more certificate NAME signed by that CA (after ensure), made
#                              again when missing, running out or asked with other EXTENSIONS
source "$(dirname "$0")/lib.sh"

CA_DAYS=3650
LEAF_DAYS=365
RENEW_SECONDS=$((30 * 24 * 3600))

# Whether certificate $1 exists, is signed by ca.crt and lasts at least 30 more days (and, given
# $2, was made with those extensions).
current() {
  [[ -f $1.crt && -f $1.key ]] &&
    openssl x509 -checkend "$RENEW_SECONDS" -noout -in "$1.crt" >/dev/null 2>&1 &&
    { [[ $1 == ca ]] || openssl verify -CAfile ca.crt "$1.crt" >/dev/null 2>&1; } &&
    { [[ -z ${2:-} ]] || [[ "$(cat "$1.ext" 2>/dev/null)" == "$2" ]]; }
}

# Signs a new key pair NAME for SUBJECT with EXTENSIONS (openssl extfile lines), kept in NAME.ext.
sign() {
  local name="$1" subject="$2" extensions="$3"
  printf '%s\n' "$extensions" >"$name.ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$name.key" \
    -out "$name.csr" -subj "$subject" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$LEAF_DAYS" \
    -out "$name.crt" -extfile <(printf '%s\n' "$extensions") 2>/dev/null
  rm "$name.csr"
  chmod 600 "$name.key"
}

ensure() {
  local pki="$1/pki" made=""
  mkdir -p "$pki"
  (
    cd "$pki"
    umask 077
    if ! current ca; then
      [[ -f ca.crt ]] && info "the local CA in $pki runs out: making a new one (copies of the kubeconfigs and of ca.crt must be taken again)"
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$CA_DAYS" \
        -keyout ca.key -out ca.crt -subj "/CN=compute-server local CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
      chmod 644 ca.crt
      made+=" CA"
    fi
    local server="extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost" apiserver keycloak
    apiserver="$server,IP:10.0.0.1,DNS:kubernetes.default.svc${PKI_APISERVER_SANS:+,$PKI_APISERVER_SANS}"
    keycloak="$server${PKI_KEYCLOAK_SANS:+,$PKI_KEYCLOAK_SANS}"
    current apiserver "$apiserver" || { sign apiserver "/CN=kube-apiserver" "$apiserver"; made+=" kube-apiserver"; }
    current keycloak "$keycloak" || { sign keycloak "/CN=keycloak" "$keycloak"; made+=" Keycloak"; }
    current admin || { sign admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"; made+=" admin"; }
    if [[ ! -f sa.key ]]; then
      openssl genrsa -out sa.key 2048 2>/dev/null
      openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
      made+=" service-account-keys"
    fi
    [[ -z $made ]] || info "certificates made:$made (in $pki; the CA lasts $CA_DAYS days, the others $LEAF_DAYS and are renewed on start)"
  )
}

# One more certificate (see the usage above).
cert() {
  local pki="$1/pki" name="$2" subject="$3" extensions="$4"
  [[ -f $pki/ca.key ]] || die "no CA in $pki: run $0 ensure first"
  (cd "$pki" && umask 077 && { current "$name" "$extensions" || sign "$name" "$subject" "$extensions"; })
}

case "${1:-}" in
  cert) [[ $# -eq 5 ]] || die "usage: $0 cert STATE_DIR NAME SUBJECT EXTENSIONS"; cert "$(cd "$2" && pwd -P)" "$3" "$4" "$5" ;;
  ensure) [[ $# -eq 2 ]] || die "usage: $0 ensure STATE_DIR"; mkdir -p "$2"; ensure "$(cd "$2" && pwd -P)" ;;
  *) die "usage: $0 ensure STATE_DIR | cert STATE_DIR NAME SUBJECT EXTENSIONS" ;;
esac
