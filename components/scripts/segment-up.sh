#!/bin/sh
# Converge a host's tunnel segmentation. Safe to run any number of times: a run that
# finds everything as wanted changes nothing and prints only "ok ..." lines.
#
#   segment-up.sh <RULESET     check the ruleset (rendered by components/render/segment.py),
#                              save it, load it, make it survive a reboot
#
# What it converges (segment-down.sh removes the same, by the same names):
#   - table inet forgeway_segment, loaded from $FORGEWAY_ETC/forgeway/segment/segment.nft
#     (0600) with `nft -f`: the file replaces that one table atomically; no other table
#     is flushed, reordered or rewritten. Reloaded when the file changed or the live
#     table drifted from what was loaded (compared stateless: `nft -s list table`).
#     The table drops only what arrives through (or, on the VPS, leaves into) the
#     tunnel interface and is not allowed; the LAN and the public interface are left
#     alone, and so is the admin SSH from anywhere but the tunnel.
#   - boot: when systemd is PID 1 (or FORGEWAY_SYSTEMD=yes), forgeway-segment.service
#     loads the saved file before the network comes up (Before=network-pre.target, so
#     the tunnel never runs unfiltered) and after nftables.service (whose `flush
#     ruleset` would remove it). Without systemd the script says so; the caller then
#     runs `nft -f FILE` at boot.
#
# Safety: the ruleset must hold table inet forgeway_segment and nothing else (no `flush
# ruleset`, no other table) and pass `nft -c`: else nothing changes.
#
# Environment: FORGEWAY_ETC=/etc, FORGEWAY_SYSTEMD=auto|yes|no (see forwarding-up.sh).
set -eu
me=segment-up tag='' say_ok=yes
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

[ $# -eq 0 ] || fail "usage: segment-up.sh <RULESET"

state=$etc/forgeway/segment
file=$state/segment.nft
live=$state/segment.live
unit=forgeway-segment.service
table="inet forgeway_segment"
umask 077

command -v nft >/dev/null || fail "nft is not installed: apt-get install nftables"

new=$tmp/segment.nft
read_ruleset "$table" "$new" components/render/segment.py

# --- table inet forgeway_segment --------------------------------------------------------------

mkdir -p "$state"
chmod 0700 "$state"
install_file "$new" "$file" 0600
nft_load_table "$table" "$file" "$live"

# --- boot ----------------------------------------------------------------------------------------

nft_boot_unit "$unit" "the tunnel's segmentation (nftables table $table)" "$file"

[ -n "$changes" ] || ok "segment: nothing to change"
