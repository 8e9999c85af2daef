#!/bin/sh
# Undo docker-client-up.sh: remove exactly the files and the (then empty) directories
# it recorded in $FORGEWAY_ETC/forgeway/docker-client.state, nothing else. Safe to run
# any number of times; with nothing recorded it prints "ok ..." and succeeds.
#
#   docker-client-down.sh
#
# Afterwards, as up does: update-ca-certificates when the trust-store file went (only
# when FORGEWAY_ETC is /etc and the command exists), systemctl daemon-reload and
# try-restart docker.service when the proxy drop-in went (systemd as PID 1, or
# FORGEWAY_SYSTEMD=yes; else a note says what the caller must do).
#
# Environment: FORGEWAY_ETC=/etc, FORGEWAY_SYSTEMD=auto|yes|no (see docker-client-up.sh)
set -eu
me=docker-client-down tag=docker-client
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

[ $# -eq 0 ] || fail "usage: docker-client-down.sh"
state=$etc/forgeway/docker-client.state

if [ ! -f "$state" ]; then
  echo "ok docker-client: nothing installed ($state is absent)"
  exit 0
fi

trust_removed=no
dropin_removed=no
while read -r kind file; do
  case $kind in
    dir) continue ;;
    cert | plain | trust | dropin) ;;
    *) fail "bad line in $state: $kind $file" ;;
  esac
  case $file in
    /*) ;;
    *) fail "bad path in $state: $file" ;;
  esac
  if [ -e "$file" ] || [ -L "$file" ]; then
    rm -f "$file"
    echo "changed docker-client: removed $file"
    [ "$kind" != trust ] || trust_removed=yes
    [ "$kind" != dropin ] || dropin_removed=yes
  else
    echo "ok docker-client: $file is already gone"
  fi
  # update-ca-certificates linked the trust file into $etc/ssl/certs; without --fresh it
  # leaves that link behind, dangling: it goes with the file, as up made it.
  link="$etc/ssl/certs/$(basename "$file" .crt).pem"
  if [ "$kind" = trust ] && [ -L "$link" ] && [ "$(readlink "$link")" = "$file" ]; then
    rm -f "$link"
    echo "changed docker-client: removed $link"
    trust_removed=yes
  fi
done <"$state"

dirs=$(sed -n "s/^dir //p" "$state" | LC_ALL=C sort -r)
rm -f "$state"
# Deepest first; a directory someone else put files in (the stage directory) stays.
printf '%s\n' "$dirs" | while read -r d; do
  [ -n "$d" ] || continue
  rmdir "$d" 2>/dev/null || true
done

[ "$trust_removed" = no ] || update_ca
[ "$dropin_removed" = no ] || restart_docker "or restart dockerd without the forgeway proxy environment"
