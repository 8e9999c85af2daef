#!/bin/sh
# Converge the forge host's own DNAT to the forge's container. Safe to run any number of
# times: a run that finds everything as wanted prints only "ok ..." lines.
#
#   forge-nat-up.sh "FAMILIES" STAGE_DIR
#
# FAMILIES: "ip6", "ip" or "ip6 ip": the tables wanted; STAGE_DIR holds their files
# (forge6.nft, forge4.nft), rendered by components/render/forge_nat.py. A table not
# wanted that an earlier run loaded is removed (it and its saved file).
# What it converges (forge-nat-down.sh removes the same, by the same names):
#   - table ip6 forgeway_forge / table ip forgeway_forge, each from its saved file in
#     $FORGEWAY_ETC/forgeway/forge-nat/ (0600) with `nft -f`: the file replaces that one
#     table atomically; no other table is flushed, reordered or rewritten. Reloaded when
#     the file changed or the live table drifted (compared stateless: `nft -s list table`).
#   - with ip6: net.ipv6.conf.all.forwarding=1 (the DNATed packets are forwarded to
#     docker's bridge), and accept_ra=2 on the IPv6 default route's device when it was 1
#     (forwarding would make it ignore router advertisements); the values found before
#     are kept in ipv6_forward.before and accept_ra.before; a sysctl.d file keeps them at boot.
#   - boot: when systemd is PID 1 (or FORGEWAY_SYSTEMD=yes), forgeway-forge-nat.service
#     loads the saved files, after nftables.service (whose `flush ruleset` would remove them).
#
# Safety: each file must hold its table and nothing else and pass `nft -c`: else nothing changes.
#
# Environment: FORGEWAY_ETC=/etc, FORGEWAY_SYSTEMD=auto|yes|no (see forwarding-up.sh).
set -eu
me=forge-nat-up tag='' say_ok=yes
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

[ $# -eq 2 ] || fail "usage: forge-nat-up.sh \"FAMILIES\" STAGE_DIR"
families=$1 stage=$2
want4=no want6=no
for f in $families; do
  case $f in
    ip) want4=yes ;;
    ip6) want6=yes ;;
    *) fail "FAMILIES holds '$f': expected ip and/or ip6" ;;
  esac
done
[ "$want4$want6" != nono ] || fail "FAMILIES is empty: nothing to forward (delete runs forge-nat-down.sh)"

state=$etc/forgeway/forge-nat
unit=forgeway-forge-nat.service
sysctl_file=$etc/sysctl.d/60-forgeway-forge-nat.conf
umask 077
command -v nft >/dev/null || fail "nft is not installed: apt-get install nftables"

# Both files checked before anything changes.
[ "$want6" = no ] || nft_check_table "ip6 forgeway_forge" "$stage/forge6.nft"
[ "$want4" = no ] || nft_check_table "ip forgeway_forge" "$stage/forge4.nft"
mkdir -p "$state"
chmod 0700 "$state"

# --- IPv6 forwarding to docker's bridge ------------------------------------------------------

if [ "$want6" = yes ]; then
  [ -d /proc/sys/net/ipv6/conf/all ] || fail "IPv6 is disabled in this kernel (no /proc/sys/net/ipv6)"
  [ -f "$state/ipv6_forward.before" ] || sysctl -n net.ipv6.conf.all.forwarding >"$state/ipv6_forward.before"
  uplink=$(ip -6 route show default 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p' | head -n 1)
  if [ -n "$uplink" ]; then
    check_ifname "$uplink"
    ra=$(cat "/proc/sys/net/ipv6/conf/$uplink/accept_ra")
    if [ "$ra" = 1 ] || [ -f "$state/accept_ra.before" ]; then
      [ -f "$state/accept_ra.before" ] || echo "$uplink $ra" >"$state/accept_ra.before"
      keep_ra "$uplink" "was $ra: forwarding would ignore router advertisements"
    fi
  fi
  s=$tmp/sysctl.conf
  printf '%s\n' "# forgeway: the forge host forwards IPv6 to its container (forge-nat-up.sh)." \
    "# forge-nat-down.sh removes this file and restores the values found before." \
    "net.ipv6.conf.all.forwarding = 1" >"$s"
  if [ -f "$state/accept_ra.before" ]; then
    read -r ra_if _ <"$state/accept_ra.before"
    echo "net.ipv6.conf.$ra_if.accept_ra = 2" >>"$s"
  fi
  install_file "$s" "$sysctl_file" 0644
  if [ "$(sysctl -n net.ipv6.conf.all.forwarding)" != 1 ]; then
    sysctl -q -w net.ipv6.conf.all.forwarding=1
    changed "net.ipv6.conf.all.forwarding=1"
  else
    ok "net.ipv6.conf.all.forwarding=1"
  fi
else
  restore_ipv6_sysctls "$state"
  drop "$sysctl_file"
fi

# --- the tables ------------------------------------------------------------------------------

table_converge() { # table_converge FAMILY FILE yes|no
  if [ "$3" = yes ]; then
    install_file "$stage/$2" "$state/$2" 0600
    nft_load_table "$1 forgeway_forge" "$state/$2" "$state/$2.live"
  else
    if nft list table "$1" forgeway_forge >/dev/null 2>&1; then
      nft delete table "$1" forgeway_forge
      gone "table $1 forgeway_forge (not wanted any more)"
    fi
    drop "$state/$2" "$state/$2.live"
  fi
}
table_converge ip6 forge6.nft "$want6"
table_converge ip forge4.nft "$want4"

# --- boot ----------------------------------------------------------------------------------------

loads=
[ "$want6" = no ] || loads="$state/forge6.nft"
[ "$want4" = no ] || loads="$loads $state/forge4.nft"
# shellcheck disable=SC2086 # one word per file: the paths hold no space (FORGEWAY_ETC is checked)
nft_boot_unit "$unit" "the forge's DNAT to its container (nftables tables forgeway_forge)" $loads

[ -n "$changes" ] || ok "forge-nat: nothing to change"
