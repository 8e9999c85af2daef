#!/bin/sh
# Keep a runner host's IPv6 default route once docker forwards IPv6 (runners.ipv6).
# Runs before docker-daemon-up.sh. Safe to run any number of times: a run that finds
# everything as wanted prints only "ok ..." lines.
#
#   ipv6-ra-up.sh          (no arguments: the uplink is found on the host)
#
# Why: docker with IPv6 sets net.ipv6.conf.all.forwarding=1. A forwarding interface
# ignores router advertisements unless its accept_ra is 2, and enabling forwarding drops
# the default routes learned from them (kernel rt6_purge_dflt_routers, which spares
# interfaces with accept_ra=2). A host whose IPv6 default route comes from RAs loses it.
#
# The uplink is the device of the main table's IPv6 default route(s) (`ip -6 route show
# default`; every device of a multipath route). On it, accept_ra 1 becomes 2, which keeps
# the host taking RAs as it did before forwarding; 0 (takes none) and 2 stay as they are.
# No IPv6 default route: nothing to keep, nothing changes (a note says so); an uplink
# recorded by an earlier run is kept (its route may be missing for the very reason this
# script exists). A default route on another device: the old one is restored first.
#
# What it converges, and `ipv6-ra-up.sh --restore` (the delete) undoes:
#   - net.ipv6.conf.UPLINK.accept_ra=2, now and at boot ($FORGEWAY_ETC/sysctl.d/
#     60-forgeway-ipv6-ra.conf, read by systemd-sysctl, or by udev when the interface
#     appears later); the value found before is in $FORGEWAY_ETC/forgeway/ipv6-ra/accept_ra
#   - the forwarding sysctls as they were before docker forwarded IPv6 (all, default and
#     every interface's, recorded at the first run, in .../ipv6-ra/forwarding): docker
#     turns them on at forgeway's request and never turns them off, so the down puts them
#     back, or a destroyed host would lose its RA route after all.
#
#   ipv6-ra-up.sh --restore   undo exactly that, after docker-daemon-up.sh --restore; a
#                             second run prints only "ok ...": forwarding back first (all:
#                             writing it sets every interface's; then each recorded
#                             interface that still exists; then default), so the host takes
#                             RAs all along; then each uplink's accept_ra; then the
#                             sysctl.d file, the records and the directories the up made.
#
# Environment: FORGEWAY_ETC=/etc (see forwarding-up.sh).
set -eu
me=ipv6-ra-up tag=ipv6-ra
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
mode=up
case $# in
  0) ;;
  1) [ "$1" = --restore ] || fail "usage: ipv6-ra-up.sh [--restore]"; mode=restore ;;
  *) fail "usage: ipv6-ra-up.sh [--restore]" ;;
esac

conf=/proc/sys/net/ipv6/conf
state=$etc/forgeway/ipv6-ra
accept_record=$state/accept_ra
forwarding_record=$state/forwarding
sysctl_file=$etc/sysctl.d/60-forgeway-ipv6-ra.conf

if [ "$mode" = restore ]; then
  set_back() { # set_back IF KEY VALUE: net.ipv6.conf.IF.KEY to VALUE when IF exists and differs
    case $3 in '' | *[!0-9-]*) fail "a record holds '$1 $3' for $2, not a number: $state" ;; esac
    if ipv6_conf_set "$1" "$2" "$3"; then
      changed "net.ipv6.conf.$1.$2=$3 (back as before ipv6-ra-up.sh)"
    fi
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
  exit 0
fi

command -v ip >/dev/null || fail "ip is not installed (Debian: iproute2)"
[ -d "$conf/all" ] || fail "this host has no IPv6 ($conf is missing): runners.ipv6 needs it"

mkdirs "$state"

# --- forwarding as found, once (before docker turns it on) ----------------------------------

if [ ! -f "$forwarding_record" ]; then
  for d in "$conf"/*/; do
    d=${d%/}
    printf '%s %s\n' "${d##*/}" "$(cat "$d/forwarding")"
  done >"$tmp/forwarding"
  install_file "$tmp/forwarding" "$forwarding_record" 0644
else
  ok "forwarding as found before forgeway: recorded ($forwarding_record)"
fi

# --- the uplink ------------------------------------------------------------------------------

uplinks=$(ip -6 route show default | sed -n 's/.* dev \([^ ]*\).*/\1/p' | LC_ALL=C sort -u)
for u in $uplinks; do check_ifname "$u"; done

if [ -z "$uplinks" ]; then
  if [ -f "$accept_record" ]; then
    ok "no IPv6 default route now; keeping accept_ra=2 on the uplink recorded before ($accept_record)"
  else
    note_out "no IPv6 default route on this host: no uplink takes router advertisements, nothing to keep" \
      "(a host that gets one later: run this again, e.g. pulumi up --replace on this command)"
  fi
  save_dirs "$state/dirs"
  [ -n "$changes" ] || ok "nothing to change"
  exit 0
fi

# An uplink recorded before that is no longer one: its value back.
if [ -f "$accept_record" ]; then
  while read -r r_if r_value; do
    ! printf '%s\n' "$uplinks" | grep -Fxq "$r_if" || continue
    if ipv6_conf_set "$r_if" accept_ra "$r_value"; then
      changed "net.ipv6.conf.$r_if.accept_ra=$r_value (restored: $r_if is no longer the uplink)"
    fi
  done <"$accept_record"
fi

# The record: each uplink's value as first found.
: >"$tmp/accept_ra"
for u in $uplinks; do
  found=$([ ! -f "$accept_record" ] || awk -v u="$u" '$1 == u { print $2 }' "$accept_record")
  [ -n "$found" ] || found=$(cat "$conf/$u/accept_ra")
  echo "$u $found" >>"$tmp/accept_ra"
done
install_file "$tmp/accept_ra" "$accept_record" 0644

# --- accept_ra=2 on each uplink that takes RAs, now and at boot --------------------------------

{
  echo "# forgeway: docker forwards IPv6 here (runners.ipv6); a forwarding interface ignores router"
  echo "# advertisements unless accept_ra is 2, and the IPv6 default route from them would lapse."
  echo "# Written by ipv6-ra-up.sh; ipv6-ra-up.sh --restore removes it and restores the values found before."
} >"$tmp/sysctl.conf"
while read -r u found; do
  if [ "$found" -le 0 ]; then
    ok "$u takes no router advertisements (accept_ra=$found): left as it is"
    continue
  fi
  # The slash form: an interface name may hold dots (eth0.100).
  echo "net/ipv6/conf/$u/accept_ra = 2" >>"$tmp/sysctl.conf"
  keep_ra "$u" "was $found"
done <"$accept_record"
if grep -q '^net/' "$tmp/sysctl.conf"; then
  install_file "$tmp/sysctl.conf" "$sysctl_file" 0644
else
  remove "$sysctl_file"
fi
save_dirs "$state/dirs"

[ -n "$changes" ] || ok "nothing to change"
