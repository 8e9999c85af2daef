#!/bin/sh
# Undo docker-prune-up.sh: stop and remove the timer and service (or the cron file), the
# pruning script and its settings, then the directories up created (listed in
# forgeway/docker-prune/dirs), when empty. Nothing else. Safe to run any number of
# times; with nothing installed it prints "ok ..." and succeeds.
#
#   docker-prune-down.sh
#
# Environment: FORGEWAY_ETC=/etc (as docker-prune-up.sh). systemctl is used only when
# systemd is PID 1 (stop the timer, daemon-reload after the units went).
set -eu

fail() {
  echo "docker-prune-down: $*" >&2
  exit 1
}

[ $# -eq 0 ] || fail "usage: docker-prune-down.sh"
etc=${FORGEWAY_ETC:-/etc}
name=forgeway-docker-prune
home=$etc/forgeway/docker-prune
units=$etc/systemd/system
timer=$units/$name.timer
service=$units/$name.service
wants=$units/timers.target.wants/$name.timer
dirs=$home/dirs
booted=no
[ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null 2>&1 || booted=yes

removed=
remove() { # remove PATH...: those that exist
  for _f in "$@"; do
    if [ -e "$_f" ] || [ -L "$_f" ]; then
      rm -f "$_f"
      removed=yes
      echo "changed docker-prune: removed $_f"
    fi
  done
}

units_present=no
if [ -e "$timer" ] || [ -e "$service" ] || [ -L "$wants" ]; then units_present=yes; fi
if [ "$booted" = yes ] && [ "$units_present" = yes ] && systemctl is-active --quiet "$name.timer"; then
  systemctl stop "$name.timer"
  echo "changed docker-prune: stopped $name.timer"
fi
remove "$wants" "$timer" "$service" "$etc/cron.d/$name" "$home/$name" "$home/settings"
if [ "$booted" = yes ] && [ "$units_present" = yes ]; then
  systemctl daemon-reload
  systemctl reset-failed "$name.service" >/dev/null 2>&1 || true
fi

if [ -f "$dirs" ]; then
  list=$(LC_ALL=C sort -r "$dirs") # deepest first
  rm -f "$dirs"
  printf '%s\n' "$list" | while read -r d; do
    case $d in
      /*) rmdir "$d" 2>/dev/null || true ;; # one with files of others in it stays
    esac
  done
  removed=yes
fi

[ -n "$removed" ] || echo "ok docker-prune: nothing installed ($home is absent or empty)"
