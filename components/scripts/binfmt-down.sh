#!/bin/sh
# Undo binfmt-up.sh: unregister the handlers it registered (forgeway/binfmt/ours), remove
# the forgeway-binfmt container, the boot unit or cron line, the launcher, then the
# directories up created (forgeway/binfmt/dirs), when empty. Nothing else: a handler
# the host had before stays. Safe to run any number of times.
#
#   binfmt-down.sh
#
# Environment: FORGEWAY_ETC=/etc, DOCKER_HOST (as binfmt-up.sh). systemctl is used only
# when systemd is PID 1.
set -eu
me=binfmt-down tag=binfmt
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

[ $# -eq 0 ] || fail "usage: binfmt-down.sh"
name=forgeway-binfmt
home=$etc/forgeway/binfmt
service=$units/$name.service
wants=$units/multi-user.target.wants/$name.service
command -v systemctl >/dev/null 2>&1 || booted=no

# as binfmt-up.sh (see there)
binfmt_docker() { # binfmt_docker run|create ARGS...: with what registering needs, not --privileged
  _verb=$1
  shift
  docker "$_verb" --cap-add SYS_ADMIN --security-opt apparmor=unconfined --security-opt systempaths=unconfined "$@"
}


image=$(docker container inspect --format '{{.Image}}' "$name" 2>/dev/null || true)
if [ -f "$home/ours" ]; then
  [ -n "$image" ] || fail "$home/ours lists handlers but the $name container (their image) is gone"
  while read -r emulator; do
    case $emulator in
      qemu-aarch64 | qemu-x86_64) ;;
      *) fail "bad line in $home/ours: '$emulator'" ;;
    esac
    binfmt_docker run --rm "$image" --uninstall "$emulator" >/dev/null ||
      fail "could not unregister $emulator"
    changed "unregistered $emulator"
  done <"$home/ours"
  rm -f "$home/ours"
fi
if [ -n "$image" ]; then
  docker rm -f "$name" >/dev/null
  changed "removed container $name"
fi
remove "$wants" "$service" "$etc/cron.d/$name" "$home/$name"
[ "$booted" = no ] || [ -z "$changes" ] || systemctl daemon-reload
binfmt_misc=/proc/sys/fs/binfmt_misc
if [ -f "$home/mounted" ]; then
  # up mounted it: unmount it, unless a handler (someone else's now) still needs it
  left=$(find "$binfmt_misc" -mindepth 1 -maxdepth 1 ! -name register ! -name status 2>/dev/null | head -n 1)
  if [ -z "$left" ] && [ -e "$binfmt_misc/register" ]; then
    umount "$binfmt_misc"
    changed "unmounted binfmt_misc from $binfmt_misc"
  fi
  rm -f "$home/mounted"
fi
remove_saved_dirs "$home/dirs"
[ -n "$changes" ] || ok "nothing installed ($home is absent)"
