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

fail() { echo "segment-up: $*" >&2; exit 1; }
note() { echo "note: $*" >&2; }

[ $# -eq 0 ] || fail "usage: segment-up.sh <RULESET"

etc=${FORGEWAY_ETC:-/etc}
state=$etc/forgeway/segment
file=$state/segment.nft
live=$state/segment.live
units=$etc/systemd/system
unit=forgeway-segment.service
table="inet forgeway_segment"
umask 077

changes=
changed() { changes=yes; echo "changed $*"; }
ok() { echo "ok $*"; }

tmp=
cleanup() { [ -z "$tmp" ] || rm -rf "$tmp"; }
trap cleanup EXIT
tmp=$(mktemp -d "${TMPDIR:-/tmp}/forgeway-segment.XXXXXX")

installed=no
install_file() { # install_file SRC DST MODE; sets installed=yes when it wrote DST
  installed=no
  if ! cmp -s "$1" "$2"; then
    _new=$(mktemp "$(dirname "$2")/.forgeway.XXXXXX")
    cp "$1" "$_new"
    chmod "$3" "$_new"
    mv -f "$_new" "$2"
    installed=yes
    changed "$2"
  else
    ok "$2"
  fi
}

command -v nft >/dev/null || fail "nft is not installed: apt-get install nftables"

new=$tmp/segment.nft
cat >"$new"
[ -s "$new" ] || fail "no ruleset on stdin (render it with components/render/segment.py)"

# Only our table: at the top level, nothing but `table inet forgeway_segment`, its delete
# and its definition (comments and blank lines aside).
stray=$(awk '
  { line = $0; sub(/#.*/, "", line) }
  depth == 0 && line !~ /^[ \t]*$/ &&
    line !~ /^[ \t]*(table|delete table) inet forgeway_segment[ \t]*(\{[ \t]*)?$/ { print NR ": " $0 }
  { n = gsub(/\{/, "{", line); m = gsub(/\}/, "}", line); depth += n - m }
' "$new")
[ -z "$stray" ] || fail "the ruleset may hold table $table only; refused, nothing changed: $stray"
if ! err=$(nft -c -f "$new" 2>&1); then
  fail "the ruleset does not pass nft -c; nothing changed: $err"
fi

# --- table inet forgeway_segment --------------------------------------------------------------

mkdir -p "$state"
chmod 0700 "$state"
install_file "$new" "$file" 0600
# Loaded when the file is new, or the live table is not what we loaded (gone after a
# reboot or a `flush ruleset`, or edited by hand).
have=$(nft -s list table "$table" 2>/dev/null) || have="(no table)"
if [ "$installed" = yes ] || ! [ -f "$live" ] || [ "$have" != "$(cat "$live")" ]; then
  nft -f "$file"
  nft -s list table "$table" >"$live"
  changed "table $table (nft -f $file)"
else
  ok "table $table"
fi

# --- boot ----------------------------------------------------------------------------------------

booted=no
[ ! -d /run/systemd/system ] || booted=yes
want_unit=${FORGEWAY_SYSTEMD:-auto}
[ "$want_unit" != auto ] || want_unit=$booted
if [ "$want_unit" = yes ]; then
  nft_bin=$(command -v nft)
  mkdir -p "$units/multi-user.target.wants"
  u=$tmp/unit
  cat >"$u" <<EOF
# forgeway: load table $table (the tunnel's segmentation) at boot, before the network.
# Written by segment-up.sh; segment-down.sh removes it.
[Unit]
Description=forgeway tunnel segmentation (nftables table $table)
# Like nftables.service: early, before anything brings up an interface (the tunnel
# must never run unfiltered), and after whatever loads a ruleset with \`flush ruleset\`.
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target shutdown.target
Conflicts=shutdown.target
After=local-fs.target nftables.service netfilter-persistent.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=$nft_bin -f $file

[Install]
WantedBy=multi-user.target
EOF
  install_file "$u" "$units/$unit" 0644
  if [ ! -L "$units/multi-user.target.wants/$unit" ]; then
    ln -sf "$units/$unit" "$units/multi-user.target.wants/$unit"
    changed "enabled $unit"
  fi
  if [ "$booted" = yes ] && [ "$changes" = yes ] && [ "$etc" = /etc ]; then systemctl daemon-reload; fi
else
  note "systemd is not PID 1 here (or FORGEWAY_SYSTEMD=no): no boot unit installed. To keep the" \
    "segmentation after a reboot the caller runs at boot, before the tunnel: nft -f $file"
fi

[ -n "$changes" ] || ok "segment: nothing to change"
