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

fail() {
  echo "binfmt-down: $*" >&2
  exit 1
}

[ $# -eq 0 ] || fail "usage: binfmt-down.sh"
etc=${FORGEWAY_ETC:-/etc}
name=forgeway-binfmt
home=$etc/forgeway/binfmt
units=$etc/systemd/system
service=$units/$name.service
wants=$units/multi-user.target.wants/$name.service
booted=no
[ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null 2>&1 || booted=yes

# as binfmt-up.sh (see there)
binfmt_docker() { # binfmt_docker run|create ARGS...: with what registering needs, not --privileged
  _verb=$1
  shift
  docker "$_verb" --cap-add SYS_ADMIN --security-opt apparmor=unconfined --security-opt systempaths=unconfined "$@"
}

removed=
note() {
  removed=yes
  echo "changed binfmt: $1"
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
    note "unregistered $emulator"
  done <"$home/ours"
  rm -f "$home/ours"
fi
if [ -n "$image" ]; then
  docker rm -f "$name" >/dev/null
  note "removed container $name"
fi
for f in "$wants" "$service" "$etc/cron.d/$name" "$home/$name"; do
  if [ -e "$f" ] || [ -L "$f" ]; then
    rm -f "$f"
    note "removed $f"
  fi
done
[ "$booted" = no ] || [ -z "$removed" ] || systemctl daemon-reload
binfmt_misc=/proc/sys/fs/binfmt_misc
if [ -f "$home/mounted" ]; then
  # up mounted it: unmount it, unless a handler (someone else's now) still needs it
  left=$(find "$binfmt_misc" -mindepth 1 -maxdepth 1 ! -name register ! -name status 2>/dev/null | head -n 1)
  if [ -z "$left" ] && [ -e "$binfmt_misc/register" ]; then
    umount "$binfmt_misc"
    note "unmounted binfmt_misc from $binfmt_misc"
  fi
  rm -f "$home/mounted"
fi

if [ -f "$home/dirs" ]; then
  list=$(LC_ALL=C sort -r "$home/dirs") # deepest first
  rm -f "$home/dirs"
  printf '%s\n' "$list" | while read -r d; do
    case $d in
      /*) rmdir "$d" 2>/dev/null || true ;; # one with files of others in it stays
    esac
  done
  removed=yes
fi
[ -n "$removed" ] || echo "ok binfmt: nothing installed ($home is absent)"
