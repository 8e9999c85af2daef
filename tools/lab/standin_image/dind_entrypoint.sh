#!/bin/sh
# Entrypoint of the lab's dind stand-in (tools/lab/images.py DIND_STANDIN): what docker:dind's
# dockerd-entrypoint.sh does with DOCKER_TLS_CERTDIR (docker-library/docker), with Debian's
# docker.io. Set: a CA, a server certificate (docker, localhost, the hostname, its addresses)
# and a client certificate, made at start in $DOCKER_TLS_CERTDIR/{ca,server,client} (client
# holds ca.pem, cert.pem, key.pem, the job's DOCKER_CERT_PATH), then dockerd on
# tcp://0.0.0.0:2376 with --tlsverify (the client must show a certificate of that CA) and on
# its unix socket. Empty or unset: dockerd on tcp://0.0.0.0:2375 without TLS, as the image does.
# Differences, on purpose: EC P-256 keys (the image makes RSA 4096: seconds here), and the
# nested daemon uses vfs and no iptables or bridge (it runs no containers in the lab, only
# imports and pushes). Arguments are passed on to dockerd (the service's `command`).
set -eu
dir=${DOCKER_TLS_CERTDIR:-}

certificate() { # certificate NAME CN USAGE [SAN]
  openssl ecparam -genkey -name prime256v1 -noout -out "$dir/$1/key.pem" 2>/dev/null
  openssl req -new -key "$dir/$1/key.pem" -subj "/CN=$2" -out "$dir/$1/csr.pem"
  {
    echo "extendedKeyUsage = $3"
    [ -z "${4:-}" ] || echo "subjectAltName = $4"
  } >"$dir/$1/openssl.cnf"
  openssl x509 -req -in "$dir/$1/csr.pem" -CA "$dir/ca/cert.pem" -CAkey "$dir/ca/key.pem" -CAcreateserial \
    -days 825 -extfile "$dir/$1/openssl.cnf" -out "$dir/$1/cert.pem" 2>/dev/null
  cp "$dir/ca/cert.pem" "$dir/$1/ca.pem"
  rm -f "$dir/$1/csr.pem" "$dir/$1/openssl.cnf"
  chmod 0644 "$dir/$1/cert.pem" "$dir/$1/ca.pem"
}

if [ -n "$dir" ]; then
  mkdir -p "$dir/ca" "$dir/server" "$dir/client"
  if [ ! -s "$dir/ca/cert.pem" ]; then
    openssl ecparam -genkey -name prime256v1 -noout -out "$dir/ca/key.pem" 2>/dev/null
    openssl req -new -x509 -key "$dir/ca/key.pem" -subj "/CN=docker:dind CA" -days 825 -out "$dir/ca/cert.pem"
  fi
  san="DNS:$(hostname),DNS:docker,DNS:localhost,IP:127.0.0.1"
  for ip in $(hostname -i); do san="$san,IP:$ip"; done
  certificate server "docker:dind server" serverAuth "$san"
  certificate client "docker:dind client" clientAuth
  # the client's key is readable by the job's user, as the image leaves it
  chmod 0644 "$dir/client/key.pem"
  set -- --host=tcp://0.0.0.0:2376 --tlsverify --tlscacert="$dir/server/ca.pem" \
    --tlscert="$dir/server/cert.pem" --tlskey="$dir/server/key.pem" "$@"
else
  set -- --host=tcp://0.0.0.0:2375 "$@"
fi
exec dockerd --host=unix:///var/run/docker.sock --storage-driver=vfs --iptables=false --ip6tables=false \
  --bridge=none "$@"
