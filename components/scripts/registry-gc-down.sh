#!/bin/sh
# Undo registry-gc-up.sh: stop and remove the timer and service (or the cron file), the
# script and settings, the state directory's files (status.json, the lock), then the
# directories up created, when empty. Never touches the registry or its images. Does not
# wait for a running collection. Safe to run any number of times; with nothing installed
# it prints "ok ..." and succeeds.
#
#   registry-gc-down.sh
#
# Environment: FORGEWAY_ETC=/etc (as registry-gc-up.sh).
set -eu
me=registry-gc-down tag=registry-gc
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

[ $# -eq 0 ] || fail "usage: registry-gc-down.sh"
name=forgeway-registry-gc
home=$etc/forgeway/registry-gc
state=/var/lib/forgeway/registry-gc
[ "$etc" = /etc ] || state=$(dirname "$etc")/var/lib/forgeway/registry-gc

remove_timer "$name"
remove "$home/$name" "$home/settings" "$state/status.json" "$state/status.json.new" "$state/lock"
remove_saved_dirs "$home/dirs"

[ -n "$changes" ] || ok "nothing installed ($home is absent or empty)"
