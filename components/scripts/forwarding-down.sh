#!/bin/sh
# Remove exactly what forwarding-up.sh added on the VPS, and succeed when it is gone
# already (a second run prints only "ok ..."). Takes no arguments: what to undo is read
# from the saved files, so it works after the config changed.
#
#   - accept rules labelled with a comment "forgeway: ..." in other tables' chains (nft
#     tables, iptables-nft's and legacy iptables' filter FORWARD/INPUT): deleted by
#     handle or rule number; the rest of those tables is left as it was.
#   - table ip forgeway, then the conntrack entries of its DNAT targets (they would keep
#     translating open connections).
#   - net.ipv4.ip_forward: set back to the value recorded before the first deploy, and
#     the sysctl.d file removed. (If something else needs forwarding now, e.g. Docker
#     started after us, it sets it again itself; say so in the operations notes.)
#   - table ip6 forgeway (forwarding.ipv6), its conntrack entries, and
#     net.ipv6.conf.all.forwarding and the public interface's accept_ra back to the values
#     recorded before (ipv6_forward.before, accept_ra.before).
#   - the boot unit forgeway-nftables.service, the saved ruleset, script copy, records.
#
# Environment: FORGEWAY_ETC=/etc (see forwarding-up.sh).
set -eu
me=forwarding-down tag=''
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
[ $# -eq 0 ] || fail "usage: forwarding-down.sh (no arguments)"

state=$etc/forgeway/nftables
file=$state/forgeway.nft
live=$state/forgeway.live
before=$state/ip_forward.before
live6=$state/forgeway6.live
copy=$state/forwarding-up.sh
sysctl_file=$etc/sysctl.d/60-forgeway-forwarding.conf
unit=forgeway-nftables.service
table="ip forgeway"
label="forgeway:"

have_nft=no
command -v nft >/dev/null && have_nft=yes

# --- our rules in other tables -------------------------------------------------------------

if [ "$have_nft" = yes ]; then
  # Every rule with our label in a table not ours, as `delete rule` lines: one transaction.
  nft -a list ruleset 2>/dev/null | awk -v ours="comment \"$label" '
    $1 == "table" { fam = $2; tbl = $3 }
    $1 == "chain" { chain = $2 }
    index($0, ours) && / # handle [0-9]+$/ && !(fam == "ip" && tbl == "forgeway") {
      print "delete rule", fam, tbl, chain, "handle", $NF
    }' >"$tmp/delete.nft"
  if [ -s "$tmp/delete.nft" ]; then
    nft -f "$tmp/delete.nft"
    while read -r _d _r fam tbl chain _h handle; do
      gone "our accept rule from $fam $tbl $chain (handle $handle)"
    done <"$tmp/delete.nft"
  fi
fi

for ipt in iptables-nft iptables-legacy; do
  command -v "$ipt" >/dev/null || continue
  if [ "$ipt" = iptables-nft ]; then
    if [ "$have_nft" != yes ] || ! nft list table ip filter >/dev/null 2>&1; then continue; fi
  else
    grep -qx filter /proc/net/ip_tables_names 2>/dev/null || continue
  fi
  for chain in FORWARD INPUT; do
    # Ours, highest number first: "NUMBER ADDRESS_OR_PORT COMMENT". Deleted by spec (what
    # forwarding-up.sh inserted), so a rule that Docker or ufw inserts meanwhile is safe.
    "$ipt" -w -S "$chain" 2>/dev/null | awk -v ours="$label" '
      $1 == "-A" {
        n++
        if (!index($0, "--comment \"" ours) && !index($0, "--comment " ours)) next
        m = "-"; c = ""
        if (match($0, /--ctreplsrc [0-9.]+/)) m = substr($0, RSTART + 12, RLENGTH - 12)
        else if (match($0, /--dport [0-9]+/)) m = substr($0, RSTART + 8, RLENGTH - 8)
        if (match($0, /--comment "[^"]*"/)) c = substr($0, RSTART + 11, RLENGTH - 12)
        else if (match($0, /--comment [^ ]+/)) c = substr($0, RSTART + 10, RLENGTH - 10)
        print n, m, c
      }' | sort -rn >"$tmp/ours"
    while read -r num match comment; do
      if [ "$match" = - ] || [ -z "$comment" ]; then
        "$ipt" -w -D "$chain" "$num" # not in our format: by number, the only handle there is
      elif [ "$chain" = FORWARD ]; then
        "$ipt" -w -D FORWARD -m conntrack --ctstate DNAT --ctreplsrc "$match" -m comment --comment "$comment" -j ACCEPT
      else
        "$ipt" -w -D INPUT -p udp --dport "$match" -m comment --comment "$comment" -j ACCEPT
      fi
      gone "our accept rule from $ipt filter $chain (\"$comment\")"
    done <"$tmp/ours"
  done
done

# --- table ip forgeway and its connections -----------------------------------------------------

if [ -f "$etc/forgeway/home-routing/forgeway.nft" ]; then
  echo "note: table $table here is the home device's (home-routing-up.sh): left alone" >&2
else
  for t in "$table" "ip6 forgeway"; do
    if [ "$have_nft" = yes ] && nft list table "$t" >/dev/null 2>&1; then
      nft delete table "$t"
      gone "table $t"
    fi
  done
fi
if [ -f "$file" ] && command -v conntrack >/dev/null; then
  sed -n 's/^# forgeway-dnat6* //p' "$file" >"$tmp/dnat"
  while read -r proto pub addr port _mode; do
    [ -n "$proto" ] || continue
    fam=ipv4
    case $addr in *:*) fam=ipv6 ;; esac
    out=$(conntrack -D -f "$fam" -p "$proto" --orig-port-dst "$pub" --reply-src "$addr" --reply-port-src "$port" 2>&1 || true)
    n=$(printf '%s\n' "$out" | sed -n 's/.*: \([0-9][0-9]*\) flow entries have been deleted.*/\1/p')
    if [ "${n:-0}" != 0 ]; then gone "$n conntrack entries of $proto $pub -> $addr:$port"; fi
  done <"$tmp/dnat"
fi

# --- IPv4 forwarding -----------------------------------------------------------------------------

if [ -f "$before" ]; then
  previous=$(cat "$before")
  case $previous in 0 | 1) ;; *) fail "$before holds '$previous', not 0 or 1" ;; esac
  if [ "$(sysctl -n net.ipv4.ip_forward)" != "$previous" ]; then
    sysctl -q -w net.ipv4.ip_forward="$previous"
    gone "net.ipv4.ip_forward=1 (back to $previous, as before forwarding-up.sh)"
  fi
  rm -f "$before"
fi
restore_ipv6_sysctls "$state"
drop "$sysctl_file"

# --- boot unit and files ------------------------------------------------------------------------

remove_units "$units/multi-user.target.wants/$unit" "$units/$unit"
drop "$file" "$live" "$live6" "$copy"
drop_state_dir "$state"

[ -n "$changes" ] || ok "forwarding: nothing to remove"
