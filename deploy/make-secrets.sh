#!/usr/bin/env bash
# Generate the keys Confidant's pods mount and write them as Kubernetes objects:
#
#   deploy/make-secrets.sh [--dev] [--namespace NS] DIR
#   kubectl apply -f DIR/secrets.yaml     # then keep DIR somewhere safe, or delete it
#
# Written to DIR (created, mode 0700; it must not exist yet):
#   keys/<service>.key, keys/<service>.pub   Ed25519 service-token keys (auth.key is also auth's
#                                            first signing key for people's tokens)
#   keys/auth-mfa.key                        encrypts TOTP secrets at rest (32 bytes, base64)
#   --dev only: keys/messaging-data.key      wraps message data keys where there is no AWS KMS
#               web-tls.crt, web-tls.key     a self-signed certificate for https://confidant.test
#   secrets.yaml                             Secret confidant-<service>-token-key (x5),
#                                            ConfigMap confidant-token-public-keys, Secret
#                                            confidant-auth-mfa-key (+ the --dev ones)
# Needs openssl and kubectl (only to write the YAML: nothing is sent to a cluster).
# The other secrets of production are listed in deploy/README.md.
set -euo pipefail

usage() { echo "usage: $0 [--dev] [--namespace NS] DIR" >&2; exit 2; }

dev=false
namespace=confidant
out=""
while (($#)); do
    case "$1" in
        --dev) dev=true ;;
        --namespace) shift; (($#)) || usage; namespace=$1 ;;
        -h|--help) usage ;;
        -*) usage ;;
        *) [[ -z "$out" ]] || usage; out=$1 ;;
    esac
    shift
done
[[ -n "$out" ]] || usage
for tool in openssl kubectl; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is needed and not installed." >&2; exit 1; }
done
if [[ -e "$out" ]]; then
    echo "$0: $out exists; give a new directory (keys are never overwritten)." >&2
    exit 1
fi

umask 077
mkdir -p "$out/keys"
services=(auth messaging consent notify web)

for service in "${services[@]}"; do
    openssl genpkey -algorithm ed25519 -out "$out/keys/$service.key" 2>/dev/null
    openssl pkey -in "$out/keys/$service.key" -pubout -out "$out/keys/$service.pub"
done
openssl rand -base64 32 > "$out/keys/auth-mfa.key"

yaml() { kubectl create --dry-run=client -o yaml --namespace "$namespace" "$@"; echo "---"; }
{
    for service in "${services[@]}"; do
        yaml secret generic "confidant-$service-token-key" --from-file="$service.key=$out/keys/$service.key"
    done
    public=()
    for service in "${services[@]}"; do public+=(--from-file="$service.pub=$out/keys/$service.pub"); done
    yaml configmap confidant-token-public-keys "${public[@]}"
    yaml secret generic confidant-auth-mfa-key --from-file="auth-mfa.key=$out/keys/auth-mfa.key"
    if $dev; then
        openssl rand -base64 32 > "$out/keys/messaging-data.key"
        yaml secret generic confidant-messaging-data-key --from-file="messaging-data.key=$out/keys/messaging-data.key"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
            -subj "/CN=confidant.test" -addext "subjectAltName=DNS:confidant.test" \
            -keyout "$out/web-tls.key" -out "$out/web-tls.crt" 2>/dev/null
        yaml secret tls confidant-web-tls --cert="$out/web-tls.crt" --key="$out/web-tls.key"
    fi
} > "$out/secrets.yaml"

echo "Wrote $out/secrets.yaml: kubectl apply -f $out/secrets.yaml"
if ! $dev; then
    echo "Production also needs (deploy/README.md): confidant-<service>-database (url), confidant-database-ca"
    echo "(ca.crt), confidant-<service>-grpc-tls (tls.crt, tls.key, ca.crt) and confidant-web-tls."
fi
