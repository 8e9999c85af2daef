#!/bin/sh
# Refuse to configure a host whose CPU is not the architecture the stack says:
# images are chosen per architecture, and a wrong one fails late and obscurely.
# Usage: check-arch.sh EXPECTED_ARCH HOST_NAME   (read-only: changes nothing)
# Prints the arch, then `cores N`.
set -eu
expected=$1 host=$2
machine=$(uname -m)
case "$machine" in
  aarch64 | arm64) actual=arm64 ;;
  x86_64 | amd64) actual=amd64 ;;
  *) actual=$machine ;;
esac
if [ "$actual" != "$expected" ]; then
  echo "host '$host' is $machine ($actual), but the stack config says arch: $expected" >&2
  exit 1
fi
echo "$actual"
# Its CPU count: a runner's default concurrency (components/runners.py reads this line).
echo "cores $(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)"
