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
me=docker-prune-down tag=docker-prune
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

[ $# -eq 0 ] || fail "usage: docker-prune-down.sh"
name=forgeway-docker-prune
home=$etc/forgeway/docker-prune
dirs=$home/dirs

remove_timer "$name"
remove "$home/$name" "$home/settings"
remove_saved_dirs "$dirs"

[ -n "$changes" ] || ok "nothing installed ($home is absent or empty)"
