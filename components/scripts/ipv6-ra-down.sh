#!/bin/sh
# Undo exactly what ipv6-ra-up.sh did, and succeed when it is undone already (a second
# run prints only "ok ..."). Runs after docker-daemon-up.sh --restore. No arguments: what
# to restore is in $FORGEWAY_ETC/forgeway/ipv6-ra.
#
#   - the forwarding sysctls back to their values before forgeway (all first: writing it
#     sets every interface's; then each recorded interface that still exists, then
#     default): docker turned them on and leaves them on
#   - then each uplink's accept_ra back to the value found before (interfaces that exist)
#   - the sysctl.d file, the records and the directories the up made
# Forwarding goes back before accept_ra: the host takes RAs again all along.
#
# Environment: FORGEWAY_ETC=/etc (see forwarding-up.sh).
set -eu
me=ipv6-ra-down tag=ipv6-ra
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
[ $# -eq 0 ] || fail "usage: ipv6-ra-down.sh (no arguments)"

conf=/proc/sys/net/ipv6/conf
state=$etc/forgeway/ipv6-ra
accept_record=$state/accept_ra
forwarding_record=$state/forwarding
sysctl_file=$etc/sysctl.d/60-forgeway-ipv6-ra.conf

set_back() { # set_back IF KEY VALUE: /proc/sys/net/ipv6/conf/IF/KEY to VALUE when IF exists and differs
  case $3 in '' | *[!0-9-]*) fail "a record holds '$1 $3' for $2, not a number: $state" ;; esac
  [ -f "$conf/$1/$2" ] || return 0
  [ "$(cat "$conf/$1/$2")" != "$3" ] || return 0
  echo "$3" >"$conf/$1/$2"
  changed "net.ipv6.conf.$1.$2=$3 (back as before ipv6-ra-up.sh)"
}

if [ -f "$forwarding_record" ]; then
  while read -r f_if f_value; do
    [ "$f_if" != all ] || set_back all forwarding "$f_value"
  done <"$forwarding_record"
  while read -r f_if f_value; do
    case $f_if in all | default) ;; *) set_back "$f_if" forwarding "$f_value" ;; esac
  done <"$forwarding_record"
  while read -r f_if f_value; do
    [ "$f_if" != default ] || set_back default forwarding "$f_value"
  done <"$forwarding_record"
fi

if [ -f "$accept_record" ]; then
  while read -r a_if a_value; do
    set_back "$a_if" accept_ra "$a_value"
  done <"$accept_record"
fi

drop "$sysctl_file" "$accept_record" "$forwarding_record"
remove_saved_dirs "$state/dirs"
drop_state_dir "$state"

[ -n "$changes" ] || ok "nothing to undo"
