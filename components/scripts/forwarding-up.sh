#!/bin/sh
# (Over 400 lines on purpose: its parts share one state (the ruleset's facts, the other
# tables' chains, $foreign for the boot unit) and run in one order; split into files, each
# would need all of it, and the boot copy would have to carry them all. Its shared
# helpers are in host-files.sh.)
# Converge the VPS's port forwarding. Safe to run any number of times: a run that finds
# everything as wanted changes nothing and prints only "ok ..." lines.
#
#   forwarding-up.sh ADMIN_SSH_PORT <RULESET   deploy: check the ruleset (rendered by
#                                              components/render/nftables.py), save it,
#                                              load it, make it survive a reboot
#   forwarding-up.sh --boot                    boot: converge again from the saved ruleset
#
# What it converges (forwarding-down.sh removes the same, by the same names):
#   - table ip forgeway, loaded from $FORGEWAY_ETC/forgeway/nftables/forgeway.nft (0600)
#     with `nft -f`: the file replaces that one table atomically; no other table is
#     flushed, reordered or rewritten. Reloaded when the file changed or the live table
#     drifted from what was loaded (compared stateless: `nft -s list table`).
#   - with IPv6 forwarding (the ruleset has '# forgeway-home-address6'): table ip6 forgeway,
#     in the same file and the same `nft -f` transaction; net.ipv6.conf.all.forwarding=1 and,
#     where the public interface takes router advertisements (accept_ra 1, which forwarding
#     would turn off, and the VPS's IPv6 default route with it), accept_ra=2 on it; the
#     values found before are kept in ipv6_forward.before and accept_ra.before. A ruleset
#     without IPv6 removes table ip6 forgeway and restores those values (IPv6 switched off).
#     Not handled for IPv6 yet, said plainly: other tables' IPv6 drops (ip6 filter FORWARD,
#     an inet chain's drop policy) stay final for our IPv6 flows.
#   - net.ipv4.ip_forward=1, now (sysctl -w) and at boot
#     ($FORGEWAY_ETC/sysctl.d/60-forgeway-forwarding.conf); the value found before is
#     kept in ip_forward.before for forwarding-down.sh to restore.
#   - when a DNAT target changed (or the mode), the conntrack entries of the old target
#     are deleted (`conntrack -D`, if installed): they would keep the old translation.
#   - accept rules in OTHER tables' chains, labelled with a comment "forgeway: ...". Why:
#     every base chain at a hook sees each packet; `accept` ends only the chain it is
#     in, while a `drop` in any chain is final (nft(8), OVERALL EVALUATION OF THE
#     RULESET). Our own table cannot overrule a forward policy drop (ufw, Docker) or a
#     catch-all reject (cloud images' iptables rules, firewalld) of another table. So in
#     each filter base chain at the forward hook that drops by default (policy drop, or
#     an unconditional drop/reject rule in it), one rule is kept FIRST:
#         accept what this host DNATed to the home device (ct status dnat + reply source)
#     and in such chains at the input hook one that accepts the WireGuard UDP port (never
#     SSH: the admin's SSH policy is theirs). Nothing else of theirs changes. Tables that
#     iptables-nft manages (ip filter FORWARD/INPUT) are edited with iptables-nft, so
#     iptables-save, ufw and Docker can still read them (our rules there are deleted by
#     their exact spec, never by number); legacy iptables with iptables-legacy. A chain
#     that stops dropping loses our rule again.
#     Limits, said plainly: their own conditional drops in that same chain no longer see
#     our flows (put such filtering in prerouting, or in a table without a drop policy:
#     a drop there stays final); a drop reached only through a jump from a policy-accept
#     chain is not detected; and a reload of the other firewall (ufw reload, firewalld,
#     `nft -f` of their file, iptables-restore, and a `flush ruleset` also removes our
#     table) undoes this until the next deploy or boot.
#   - boot: when systemd is PID 1 (or FORGEWAY_SYSTEMD=yes), forgeway-nftables.service
#     runs after the other firewalls (nftables, netfilter-persistent, ufw, firewalld,
#     docker): `forwarding-up.sh --boot` when a copy of this script is saved (it is, when
#     this script runs from a file), else just `nft -f` of the saved ruleset, and then
#     other tables' drops are not handled at boot (said when that matters). Without
#     systemd the script says so; the caller then runs the same at boot.
#
# Safety: the ruleset must hold table ip forgeway and nothing else (no `flush ruleset`,
# no other table), pass `nft -c`, and must not forward ADMIN_SSH_PORT (checked on nft's
# own listing of the table, loaded in a scratch network namespace): else nothing changes.
#
# Environment (defaults are for real hosts; tests and lab hosts that share one
# filesystem override them):
#   FORGEWAY_ETC=/etc              files under $FORGEWAY_ETC/forgeway/nftables, sysctl.d,
#                                  systemd/system
#   FORGEWAY_SYSTEMD=auto|yes|no   install the boot unit (auto: when systemd is PID 1)
set -eu
me=forwarding-up tag='' say_ok=yes
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

mode=deploy
if [ "${1:-}" = --boot ]; then
  mode=boot
  shift
fi

state=$etc/forgeway/nftables
file=$state/forgeway.nft
live=$state/forgeway.live
before=$state/ip_forward.before
before6=$state/ipv6_forward.before
before_ra=$state/accept_ra.before
live6=$state/forgeway6.live
copy=$state/forwarding-up.sh
sysctl_file=$etc/sysctl.d/60-forgeway-forwarding.conf
unit=forgeway-nftables.service
table="ip forgeway"
table6="ip6 forgeway"
label="forgeway:"
umask 077
# (Nothing under $FORGEWAY_ETC is created before the ruleset has passed every check.)

is_port() {
  case $1 in '' | *[!0-9]* | 0*) return 1 ;; esac
  [ "$1" -le 65535 ]
}
is_ipv4() {
  printf '%s\n' "$1" | grep -Eq '^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$'
}
is_ipv6() { # an IPv6 address as the renderer writes it (no zone, no prefix)
  printf '%s\n' "$1" | grep -Eq '^[0-9a-f:]*:[0-9a-f:]*$' && [ "${#1}" -le 39 ]
}
is_name() { # a table or chain name we can pass on safely
  case $1 in '' | *[!A-Za-z0-9_.-]*) return 1 ;; esac
}

command -v nft >/dev/null || fail "nft is not installed: apt-get install nftables"

# --- the ruleset --------------------------------------------------------------------------

if [ "$mode" = deploy ]; then
  [ $# -eq 1 ] || fail "usage: forwarding-up.sh ADMIN_SSH_PORT <RULESET  |  forwarding-up.sh --boot"
  admin=$1
  is_port "$admin" || fail "ADMIN_SSH_PORT '$admin' is not a port number (1-65535)"
  if [ -f "$etc/forgeway/home-routing/forgeway.nft" ]; then
    fail "this host has the home device's table ip forgeway (home-routing-up.sh); one host cannot be both"
  fi
  new=$tmp/forgeway.nft
  cat >"$new"
  [ -s "$new" ] || fail "no ruleset on stdin (render it with components/render/nftables.py)"
else
  [ $# -eq 0 ] || fail "usage: forwarding-up.sh --boot"
  [ -f "$file" ] || fail "$file is missing: run forwarding-up.sh ADMIN_SSH_PORT <RULESET first"
  new=$file
fi

nft_check_table "(ip|ip6) forgeway" "$new"

fact() { sed -n "s/^# forgeway-$1 //p" "$2"; }
home=$(fact home-address "$new" | head -n 1)
wgport=$(fact wireguard-port "$new" | head -n 1)
is_ipv4 "$home" || fail "the ruleset has no valid '# forgeway-home-address' line (got '$home')"
is_port "$wgport" || fail "the ruleset has no valid '# forgeway-wireguard-port' line (got '$wgport')"
home6=$(fact home-address6 "$new" | head -n 1)
pubif=$(fact public-interface "$new" | head -n 1)
if [ -n "$home6" ]; then
  is_ipv6 "$home6" || fail "the ruleset's '# forgeway-home-address6' line is not an IPv6 address (got '$home6')"
  check_ifname "$pubif"
  grep -Eq "^table ip6 forgeway[[:space:]]*[{]" "$new" || fail "the ruleset has home-address6 but no table ip6 forgeway"
elif grep -Eq "^table ip6 forgeway[[:space:]]*[{]" "$new"; then
  fail "the ruleset defines table ip6 forgeway without a '# forgeway-home-address6' line"
fi
# (Loops read here-documents, not pipes: they run in this shell, so fail and changed work.)
check_dnat() { # check_dnat FACT IS_ADDRESS: every '# forgeway-FACT' line is well formed
  while read -r proto pub addr port fmode; do
    [ -n "$proto" ] || continue
    if ! { [ "$proto" = tcp ] && is_port "$pub" && "$2" "$addr" && is_port "$port" && [ -n "$fmode" ]; }; then
      fail "bad '# forgeway-$1' line: $proto $pub $addr $port $fmode"
    fi
  done <<EOF
$(fact "$1" "$new")
EOF
}
check_dnat dnat is_ipv4
check_dnat dnat6 is_ipv6

# The admin's SSH must never be cut. Our table never drops (policy accept everywhere)
# and the rules we add elsewhere only accept, so the one way is a DNAT of its port.
# The admin's SSH must never be forwarded: look at nft's own listing of the table
# (loaded in a throw-away network namespace), not at our text; fall back to the text.
if [ "$mode" = deploy ]; then
  # shellcheck disable=SC2016 # $1 is for the inner shell
  listing=$(unshare -n sh -c 'nft -f "$1" >/dev/null 2>&1 && nft list table ip forgeway &&
    { ! nft list table ip6 forgeway >/dev/null 2>&1 || nft list table ip6 forgeway; }' sh "$new" 2>/dev/null) ||
    listing=$(cat "$new")
  bad=$(printf '%s\n' "$listing" | awk -v port="$admin" '
    /(^|[ \t])dnat( ip)? to[ \t]/ || /(^|[ \t])redirect([ \t]|$)/ {
      if ($0 !~ /dport /) { print "(no port match) " $0; next }
      if ($0 ~ /[ \t]v?map[ \t]/) { print "(a map, not checked) " $0; next }
      s = $0; sub(/.*dport /, "", s)
      if (s ~ /^(!=|@)/) { print "(negated or named-set port match) " $0; next }
      if (s ~ /^\{/) { sub(/\}.*/, "", s); gsub(/[{ ]/, "", s) } else sub(/[ \t].*/, "", s)
      n = split(s, parts, ",")
      for (i = 1; i <= n; i++) {
        if (split(parts[i], r, "-") == 2) { if (port + 0 >= r[1] + 0 && port + 0 <= r[2] + 0) { print $0; break } }
        else if (parts[i] + 0 == port + 0) { print $0; break }
      }
    }')
  if [ -n "$bad" ]; then
    fail "the ruleset would forward TCP port $admin, this VPS's admin SSH port, and lock the admin out;" \
      "refused, nothing changed: $(printf '%s\n' "$bad" | sed 's/^[[:space:]]*//' | tr '\n' ';')"
  fi
fi

# --- IPv4 forwarding -------------------------------------------------------------------------

mkdir -p "$state"
chmod 0700 "$state"
# accept_ra of the public interface is kept at 2 once we changed it (accept_ra.before says so).
ra=
ra_keep=no
if [ -n "$home6" ]; then
  [ -d /proc/sys/net/ipv6/conf/all ] || fail "IPv6 is disabled in this kernel (no /proc/sys/net/ipv6): cannot forward IPv6"
  ra=$(cat "/proc/sys/net/ipv6/conf/$pubif/accept_ra" 2>/dev/null) || fail "no interface $pubif (public-interface)"
  if [ "$ra" = 1 ] || [ -f "$before_ra" ]; then ra_keep=yes; fi
fi
current=$(sysctl -n net.ipv4.ip_forward)
if [ "$mode" = deploy ]; then
  [ -f "$before" ] || echo "$current" >"$before"
  mkdir -p "$(dirname "$sysctl_file")"
  s=$tmp/sysctl.conf
  printf '%s\n' \
    "# forgeway: the VPS forwards public ports to the home device (forwarding-up.sh)." \
    "# forwarding-down.sh removes this file and restores the value found before." \
    "net.ipv4.ip_forward = 1" >"$s"
  [ -z "$home6" ] || echo "net.ipv6.conf.all.forwarding = 1" >>"$s"
  [ "$ra_keep" = no ] || echo "net.ipv6.conf.$pubif.accept_ra = 2" >>"$s"
  install_file "$s" "$sysctl_file" 0644
fi
if [ "$current" != 1 ]; then
  sysctl -q -w net.ipv4.ip_forward=1
  changed "net.ipv4.ip_forward=1"
else
  ok "net.ipv4.ip_forward=1"
fi

# --- IPv6 forwarding (forwarding.ipv6), or its values restored when it was switched off -----------

if [ -n "$home6" ]; then
  current6=$(sysctl -n net.ipv6.conf.all.forwarding)
  [ "$mode" != deploy ] || [ -f "$before6" ] || echo "$current6" >"$before6"
  # Forwarding turns accept_ra=1 into "ignore router advertisements": a VPS whose IPv6
  # default route comes from them would lose it when its lifetime ends. 2 keeps it.
  if [ "$ra_keep" = yes ]; then
    [ -f "$before_ra" ] || echo "$pubif $ra" >"$before_ra"
    keep_ra "$pubif" "was $ra: forwarding would ignore router advertisements"
  fi
  if [ "$current6" != 1 ]; then
    sysctl -q -w net.ipv6.conf.all.forwarding=1
    changed "net.ipv6.conf.all.forwarding=1"
  else
    ok "net.ipv6.conf.all.forwarding=1"
  fi
elif [ "$mode" = deploy ]; then
  restore_ipv6_sysctls "$state"
fi

# --- table ip forgeway -----------------------------------------------------------------------

old_dnat=
installed=no
if [ "$mode" = deploy ]; then
  [ ! -f "$file" ] || old_dnat=$(fact dnat "$file" && fact dnat6 "$file")
  install_file "$new" "$file" 0600
fi
nft_load_table "$table" "$file" "$live"
want6=no
[ -z "$(fact home-address6 "$file")" ] || want6=yes
nft_sync_table "$table6" "$file" "$live6" "$want6"

# Connections still translated to a target that is gone or changed.
if [ "$mode" = deploy ] && [ -n "$old_dnat" ]; then
  new_dnat=$(fact dnat "$file" && fact dnat6 "$file")
  while read -r proto pub addr port fmode; do
    [ -n "$proto" ] || continue
    case "
$new_dnat
" in *"
$proto $pub $addr $port $fmode
"*) continue ;; esac
    if command -v conntrack >/dev/null; then
      fam=ipv4
      case $addr in *:*) fam=ipv6 ;; esac
      out=$(conntrack -D -f "$fam" -p "$proto" --orig-port-dst "$pub" --reply-src "$addr" --reply-port-src "$port" 2>&1 || true)
      n=$(printf '%s\n' "$out" | sed -n 's/.*: \([0-9][0-9]*\) flow entries have been deleted.*/\1/p')
      echo "changed conntrack: ${n:-0} entries of the old target $proto $pub -> $addr:$port ($fmode) deleted"
    else
      note "conntrack is not installed (apt-get install conntrack): connections to the old target" \
        "$addr:$port keep it until they end"
    fi
  done <<EOF
$old_dnat
EOF
fi

# --- other tables' chains that drop what we forward ---------------------------------------------

fwd_comment="$label forwarded to $home"
wg_comment="$label wireguard udp $wgport"
foreign=

# Filter base chains at the forward and input hooks of families ip and inet:
# "FAMILY TABLE CHAIN HOOK POLICY".
base_chains() {
  nft list ruleset 2>/dev/null | awk '
    $1 == "table" { fam = $2; tbl = $3 }
    $1 == "chain" { chain = $2 }
    $1 == "type" && $2 == "filter" && $3 == "hook" && ($4 == "forward" || $4 == "input") {
      pol = "accept"
      if (match($0, /policy [a-z]+;/)) pol = substr($0, RSTART + 7, RLENGTH - 8)
      if (fam == "ip" || fam == "inet") print fam, tbl, chain, $4, pol
    }'
}

# A chain as "N ID KIND" lines (ID: nft handle or iptables rule number; KIND: ours-ok,
# ours-old, catchall, other), after a "policy P" line.
nft_model() { # FAMILY TABLE CHAIN WANTED_COMMENT
  nft -a list chain "$1" "$2" "$3" | awk -v want="comment \"$4\"" -v ours="comment \"$label" '
    $1 == "type" && /hook/ {
      pol = "accept"
      if (match($0, /policy [a-z]+;/)) pol = substr($0, RSTART + 7, RLENGTH - 8)
      print "policy", pol
      next
    }
    / # handle [0-9]+$/ && !/\{ # handle [0-9]+$/ {
      h = $NF; r = $0; sub(/ # handle [0-9]+$/, "", r); sub(/^[ \t]+/, "", r)
      if (length(r) >= length(want) && substr(r, length(r) - length(want) + 1) == want) kind = "ours-ok"
      else if (index(r, ours)) kind = "ours-old"
      else {
        c = " " r " "
        gsub(/ counter packets [0-9]+ bytes [0-9]+ /, " ", c); gsub(/ counter /, " ", c)
        gsub(/^ +| +$/, "", c)
        kind = (c == "drop" || c ~ /^reject( with .*)?$/) ? "catchall" : "other"
      }
      print ++n, h, kind
    }'
}

# For our rules the line goes on with what identifies them for `iptables -D` by spec (the
# address or port, and the comment): deleting by spec, never by number, cannot hit a rule
# that Docker or ufw inserted meanwhile.
ipt_model() { # IPTABLES CHAIN WANTED_COMMENT
  "$1" -w -S "$2" 2>/dev/null | awk -v chain="$2" -v want="$3" -v ours="$label" '
    $1 == "-P" { print "policy", tolower($3); next }
    $1 == "-A" {
      n++
      if (index($0, "--comment \"" want "\"")) kind = "ours-ok"
      else if (index($0, "--comment \"" ours) || index($0, "--comment " ours)) kind = "ours-old"
      else if ($0 ~ ("^-A " chain " -j (DROP|REJECT)( --reject-with [^ ]+)?$")) kind = "catchall"
      else kind = "other"
      if (kind !~ /^ours/) { print n, n, kind; next }
      m = "-"; c = ""
      if (match($0, /--ctreplsrc [0-9.]+/)) m = substr($0, RSTART + 12, RLENGTH - 12)
      else if (match($0, /--dport [0-9]+/)) m = substr($0, RSTART + 8, RLENGTH - 8)
      if (match($0, /--comment "[^"]*"/)) c = substr($0, RSTART + 11, RLENGTH - 12)
      else if (match($0, /--comment [^ ]+/)) c = substr($0, RSTART + 10, RLENGTH - 10)
      print n, n, kind, m, c
    }'
}

# Decide from a model on stdin: "keep" (ours first, alone), "insert" (hostile, not so),
# "remove" (not hostile, ours present) or "none".
decide() {
  awk '
    $1 == "policy" { drop = ($2 == "drop"); next }
    { if ($3 == "catchall") drop = 1
      if ($3 ~ /^ours/) ours++
      if ($1 == 1) first = $3 }
    END {
      if (drop) print (first == "ours-ok" && ours == 1) ? "keep" : "insert"
      else print ours ? "remove" : "none"
    }'
}

converge_nft_chain() { # FAMILY TABLE CHAIN HOOK
  if [ "$4" = forward ]; then
    c=$fwd_comment
    rule="ct status dnat ct reply ip saddr $home accept comment \"$c\""
  else
    c=$wg_comment
    rule="udp dport $wgport accept comment \"$c\""
  fi
  model=$(nft_model "$1" "$2" "$3" "$c")
  what="$1 $2 $3 ($4 hook)"
  batch=$tmp/batch.nft
  # One nft transaction: the new rule goes in before stale ones go out, atomically.
  case $(printf '%s\n' "$model" | decide) in
    keep) ok "$what: our accept rule is first"; foreign=yes ;;
    insert)
      {
        echo "insert rule $1 $2 $3 $rule"
        printf '%s\n' "$model" | awk -v f="$1" -v t="$2" -v ch="$3" '$3 ~ /^ours/ { print "delete rule", f, t, ch, "handle", $2 }'
      } >"$batch"
      nft -f "$batch"
      changed "$what drops by default: inserted first: $rule"
      foreign=yes
      ;;
    remove)
      printf '%s\n' "$model" | awk -v f="$1" -v t="$2" -v ch="$3" '$3 ~ /^ours/ { print "delete rule", f, t, ch, "handle", $2 }' >"$batch"
      nft -f "$batch"
      changed "$what no longer drops by default: removed our accept rule"
      ;;
    *) : ;;
  esac
}

ipt_rule() { # IPTABLES -I|-D CHAIN ADDRESS_OR_PORT COMMENT [POSITION]: our rule, by spec
  if [ "$3" = FORWARD ]; then
    "$1" -w "$2" FORWARD ${6:+"$6"} -m conntrack --ctstate DNAT --ctreplsrc "$4" -m comment --comment "$5" -j ACCEPT
  else
    "$1" -w "$2" INPUT ${6:+"$6"} -p udp --dport "$4" -m comment --comment "$5" -j ACCEPT
  fi
}

ipt_delete_ours() { # IPTABLES CHAIN COMMENT: every rule of ours, highest number first
  ipt_model "$1" "$2" "$3" | awk '$3 ~ /^ours/' | sort -rn >"$tmp/ours"
  while read -r num _id _kind match comment; do
    if [ "$match" != - ] && [ -n "$comment" ]; then
      ipt_rule "$1" -D "$2" "$match" "$comment"
    else
      "$1" -w -D "$2" "$num" # not in our format: by number, the only handle there is
    fi
  done <"$tmp/ours"
}

converge_ipt_chain() { # IPTABLES CHAIN
  if [ "$2" = FORWARD ]; then c=$fwd_comment; else c=$wg_comment; fi
  what="$1 filter $2"
  case $(ipt_model "$1" "$2" "$c" | decide) in
    keep) ok "$what: our accept rule is first"; foreign=yes ;;
    insert)
      # Stale or misplaced rules of ours go first (deleted by spec), then ours goes in at
      # the top. Between the two, new connections may miss it for a moment (their SYN is
      # sent again); this only happens when the rule changes.
      ipt_delete_ours "$1" "$2" "$c"
      if [ "$2" = FORWARD ]; then ipt_rule "$1" -I FORWARD "$home" "$c" 1; else ipt_rule "$1" -I INPUT "$wgport" "$c" 1; fi
      changed "$what drops by default: inserted rule 1, comment \"$c\""
      foreign=yes
      ;;
    remove)
      ipt_delete_ours "$1" "$2" "$c"
      changed "$what no longer drops by default: removed our accept rule"
      ;;
    *) : ;;
  esac
}

ipt_nft=
if command -v iptables-nft >/dev/null && nft list table ip filter >/dev/null 2>&1; then
  ipt_nft=iptables-nft
fi
while read -r fam tbl chain hook _policy; do
  if [ -z "$fam" ] || [ "$fam $tbl" = "$table" ]; then continue; fi
  if [ -n "$ipt_nft" ] && [ "$fam $tbl" = "ip filter" ]; then
    case $chain in FORWARD | INPUT) continue ;; esac # iptables-nft's: below
  fi
  if ! is_name "$tbl" || ! is_name "$chain"; then
    note "table $fam $tbl chain $chain: unusual name, not inspected"
    continue
  fi
  converge_nft_chain "$fam" "$tbl" "$chain" "$hook"
done <<EOF
$(base_chains)
EOF
for ipt in $ipt_nft iptables-legacy; do
  if [ "$ipt" = iptables-legacy ]; then
    command -v iptables-legacy >/dev/null || continue
    # Only where legacy iptables is in use: loading its modules would change the host.
    grep -qx filter /proc/net/ip_tables_names 2>/dev/null || continue
  fi
  for chain in FORWARD INPUT; do converge_ipt_chain "$ipt" "$chain"; done
done

# --- boot ---------------------------------------------------------------------------------------------

if [ "$mode" = boot ]; then
  [ -n "$changes" ] || ok "forwarding: nothing to change"
  exit 0
fi

# Only a copy that runs alone: one with the library inlined (as it travels, script()).
# shellcheck disable=SC2016 # the source line itself, unexpanded
case $0 in */forwarding-up.sh) [ -r "$0" ] && ! grep -qxF '. "$(dirname "$0")/host-files.sh"' "$0" &&
  install_file "$0" "$copy" 0700 ;; esac
if [ "$units_wanted" = yes ]; then
  nft_bin=$(command -v nft)
  if [ -f "$copy" ]; then
    start="/bin/sh $copy --boot"
  else
    start="$nft_bin -f $file"
    [ -z "$foreign" ] || note "no copy of forwarding-up.sh is saved ($copy): at boot the unit loads our" \
      "table only; the accept rules in other tables' chains come back with the next deploy." \
      "Run this script from a file (sh /path/forwarding-up.sh) to save one."
  fi
  u=$tmp/unit
  cat >"$u" <<EOF
# forgeway: load table $table (port forwarding to the home device) at boot.
# Written by forwarding-up.sh; forwarding-down.sh removes it.
[Unit]
Description=forgeway port forwarding (nftables table $table)
# After whatever loads other firewalls: a \`flush ruleset\` there must not come after us,
# and our accept rules go into their chains once those exist. None of them is required.
After=nftables.service netfilter-persistent.service ufw.service firewalld.service docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
Environment=FORGEWAY_ETC=$etc
ExecStart=$start

[Install]
WantedBy=multi-user.target
EOF
  install_unit "$u" "$units/$unit" "$units/multi-user.target.wants"
else
  note "systemd is not PID 1 here (or FORGEWAY_SYSTEMD=no): no boot unit installed. To keep the" \
    "forwarding after a reboot the caller runs at boot: $([ -f "$copy" ] && echo "sh $copy --boot" ||
      echo "nft -f $file")"
fi

[ -n "$changes" ] || ok "forwarding: nothing to change"
