#!/bin/sh
# Undo docker-daemon-up.sh: put back the host's docker daemon.json exactly as it was
# before forgeway first changed it (the bytes and mode of daemon.json.orig, or no file
# when daemon.json.absent says there was none), restart docker only when that changed the
# file, then remove forgeway's state ($FORGEWAY_ETC/forgeway/docker-daemon). Safe to run
# any number of times, and without a prior up: with no state it prints "ok ..." and
# succeeds.
#
#   docker-daemon-down.sh
#
# When docker does not come back with the original file, the run fails with its
# complaint and keeps the state, so the failure is not forgotten.
#
# Environment: FORGEWAY_ETC=/etc, FORGEWAY_DOCKER_RESTART, FORGEWAY_SYSTEMD=auto|yes|no,
# DOCKER_HOST (see docker-daemon-up.sh)
set -eu

fail() {
  echo "docker-daemon-down: $*" >&2
  exit 1
}

[ $# -eq 0 ] || fail "usage: docker-daemon-down.sh"
etc=${FORGEWAY_ETC:-/etc}
systemd=${FORGEWAY_SYSTEMD:-auto}
case $systemd in
  auto | yes | no) ;;
  *) fail "FORGEWAY_SYSTEMD must be auto, yes or no, not '$systemd'" ;;
esac
file=$etc/docker/daemon.json
tmp=$file.forgeway-new
state=$etc/forgeway/docker-daemon
wait_s=60

if [ ! -d "$state" ]; then
  echo "ok docker-daemon: nothing to restore ($state is absent)"
  exit 0
fi

# What putting the original back takes: restore (its bytes), remove (there was none) or nothing.
if [ -f "$state/daemon.json.orig" ]; then
  if [ -f "$file" ] && cmp -s "$state/daemon.json.orig" "$file"; then
    action=none
  else
    action=restore
  fi
elif [ -e "$state/daemon.json.absent" ] && { [ -e "$file" ] || [ -L "$file" ]; }; then
  action=remove
else
  action=none # no original recorded (up never got that far), or already absent
fi

if [ "$action" != none ]; then
  if [ -n "${FORGEWAY_DOCKER_RESTART:-}" ]; then
    how=given
  elif [ "$etc" != /etc ]; then
    fail "FORGEWAY_ETC is $etc, not /etc: set FORGEWAY_DOCKER_RESTART to the command that restarts this host's dockerd"
  elif [ "$systemd" = yes ] || { [ "$systemd" = auto ] && [ -d /run/systemd/system ]; }; then # sd_booted()
    how=systemd
  else
    how=service
  fi
  command -v docker >/dev/null 2>&1 ||
    fail "this host needs the docker CLI to see the daemon answer after a restart (apt-get install -y docker.io)"
fi

restart_out=
restart() { # status 0 when docker restarted and answers; what it printed in $restart_out
  case $how in
    given) restart_out=$(sh -c "$FORGEWAY_DOCKER_RESTART" 2>&1) || return 1 ;;
    systemd) restart_out=$(systemctl restart docker 2>&1) || return 1 ;;
    service) restart_out=$(service docker restart 2>&1) || return 1 ;;
  esac
  waited=0
  until docker info >/dev/null 2>&1; do
    if [ "$waited" -ge "$wait_s" ]; then
      restart_out="${restart_out:+$restart_out
}the daemon did not answer 'docker info' within ${wait_s}s"
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

complaint() {
  if [ "$how" = systemd ] && command -v journalctl >/dev/null 2>&1; then
    journalctl -u docker --no-pager -n 15 -o cat 2>&1 || true
  else
    printf '%s\n' "$restart_out" | tail -n 15
  fi
}

case $action in
  restore)
    cp -p "$state/daemon.json.orig" "$tmp"
    mv -f "$tmp" "$file"
    ;;
  remove) rm -f "$file" ;;
esac
if [ "$action" != none ] && ! restart; then
  fail "$file is as it was before forgeway, but docker did not come back with it; the daemon said:
$(complaint)"
fi

made_dir=no
[ ! -e "$state/docker-dir.created" ] || made_dir=yes
rm -rf "$state"
rmdir "$etc/forgeway" 2>/dev/null || true # the stage directory may still be in it
[ "$made_dir" = no ] || rmdir "$etc/docker" 2>/dev/null || true

case $action in
  restore) echo "changed docker-daemon: $file restored (docker restarted)" ;;
  remove) echo "changed docker-daemon: $file removed, there was none before forgeway (docker restarted)" ;;
  none) echo "ok docker-daemon: $file is as it was before forgeway" ;;
esac
