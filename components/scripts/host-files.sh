# shellcheck shell=sh
# Shared by the host scripts that install files and units (sourced, not run):
# docker-prune-up.sh and binfmt-up.sh. The caller defines fail() and sets $tag (its name
# in messages). Sourcing checks the environment and sets:
#   etc       $FORGEWAY_ETC (default /etc): an absolute path units and cron can quote
#   systemd   yes or no: FORGEWAY_SYSTEMD, where auto means "systemd is PID 1"
#   booted    yes when systemd is PID 1
# (and refuses a DOCKER_HOST that files forgeway writes could not hold). Then it offers:
#   changed MSG            record a change and print "changed $tag: MSG"
#   mkdirs DIR             DIR and its missing parents (0755), each remembered in $created
#   install_file SRC DST MODE   replace DST atomically when its text or mode differ
#   remove PATH...         remove those that exist
#   save_dirs FILE         add $created to FILE (sorted, once each): what the down script
#                          removes, when empty
# $tmp is a scratch directory, removed on exit. $changes lists the changes ("|"-joined).
: "${tag:?set tag before sourcing host-files.sh}"
etc=${FORGEWAY_ETC:-/etc}
case $etc in
  /*) ;;
  *) fail "FORGEWAY_ETC must be an absolute path, not '$etc'" ;;
esac
case $etc in
  *[!A-Za-z0-9._/-]*) fail "FORGEWAY_ETC '$etc' has characters unit and cron files cannot quote" ;;
esac
systemd=${FORGEWAY_SYSTEMD:-auto}
case $systemd in
  auto | yes | no) ;;
  *) fail "FORGEWAY_SYSTEMD must be auto, yes or no, not '$systemd'" ;;
esac
case ${DOCKER_HOST:-} in
  *[!A-Za-z0-9._:/@+-]*) fail "DOCKER_HOST '$DOCKER_HOST' has characters the files forgeway writes cannot hold" ;;
esac
booted=no
[ ! -d /run/systemd/system ] || booted=yes # sd_booted(): systemd is PID 1
[ "$systemd" != auto ] || systemd=$booted
umask 022
changes=
changed() {
  changes="$changes|$1"
  echo "changed $tag: $1"
}

created=
mkdirs() {
  [ -d "$1" ] && return 0
  mkdirs "$(dirname "$1")"
  mkdir -m 0755 "$1"
  created="$created$1
"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

install_file() {
  if [ -f "$2" ] && [ ! -L "$2" ] && cmp -s "$1" "$2" && [ "$(stat -c %a "$2")" = "${3#0}" ]; then
    return 0
  fi
  mkdirs "$(dirname "$2")"
  cp "$1" "$2.forgeway-new"
  chmod "$3" "$2.forgeway-new"
  mv -f "$2.forgeway-new" "$2"
  changed "$2"
}

remove() {
  for _f in "$@"; do
    if [ -e "$_f" ] || [ -L "$_f" ]; then
      rm -f "$_f"
      changed "removed $_f"
    fi
  done
}

save_dirs() {
  if [ -n "$created" ] || [ -f "$1" ]; then
    { [ ! -f "$1" ] || cat "$1"; printf '%s' "$created"; } | LC_ALL=C sort -u >"$tmp/dirs"
    if ! cmp -s "$tmp/dirs" "$1"; then
      cp "$tmp/dirs" "$1.forgeway-new"
      mv -f "$1.forgeway-new" "$1"
    fi
  fi
}
