#!/bin/sh
# Converge the docker-daemon client files of a host: safe to run any number of times;
# a run that finds everything as wanted changes nothing and prints only "ok ..." lines.
#
#   docker-client-up.sh DIR    DIR holds the files rendered by
#                              components/render/docker_client.py and their
#                              "manifest": one "KIND MODE NAME PATH" line per file
#
# PATH is relative to /: "etc/..." lands in $FORGEWAY_ETC, anything else (the trust
# store's usr/local/share/ca-certificates/forgeway-ca.crt) in / when FORGEWAY_ETC is
# /etc, else in $FORGEWAY_ETC/forgeway/root, so a lab host never touches the real
# store. A file is written only when its text or mode differs (cmp). KIND says what a
# change needs:
#   cert    nothing (dockerd reads /etc/docker/certs.d on every pull and push)
#   plain   nothing (read by whoever uses it: the buildkitd.toml jobs are given)
#   trust   update-ca-certificates, only when FORGEWAY_ETC is /etc and it is installed
#   dropin  systemctl daemon-reload and try-restart docker.service, when systemd is
#           PID 1 (FORGEWAY_SYSTEMD=auto) or FORGEWAY_SYSTEMD=yes; else a note says
#           what the caller must do
# Files written by any run are listed, with the directories a run created, in
# $FORGEWAY_ETC/forgeway/docker-client.state: docker-client-down.sh removes exactly
# those, and a later up removes listed files that left the manifest (a proxy unset, a
# registry gone). A file found already as wanted is left out of the list: not ours.
#
# Environment (the defaults are for real hosts):
#   FORGEWAY_ETC=/etc              see above
#   FORGEWAY_SYSTEMD=auto|yes|no   reload systemd and restart docker after a drop-in
#                                  change (auto: when systemd is PID 1 and FORGEWAY_ETC
#                                  is /etc)
set -eu
me=docker-client-up tag=docker-client say_ok=yes
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

[ $# -eq 1 ] || fail "usage: docker-client-up.sh DIR"
dir=$1
manifest=$dir/manifest
[ -f "$manifest" ] || fail "no manifest in $dir"
state=$etc/forgeway/docker-client.state
new=$dir/docker-client.state.new
: >"$new"

target() {
  case $1 in
    etc/*) printf '%s\n' "$etc/${1#etc/}" ;;
    *)
      if [ "$etc" = /etc ]; then
        printf '/%s\n' "$1"
      else
        printf '%s\n' "$etc/forgeway/root/$1"
      fi
      ;;
  esac
}

record() {
  grep -qxF "$1" "$new" || printf '%s\n' "$1" >>"$new"
}


# The previous run's directories stay ours.
[ ! -f "$state" ] || grep '^dir ' "$state" >>"$new" || true

trust_changed=no
dropin_changed=no
wanted=
while read -r kind mode name path rest; do
  [ -z "$rest" ] || fail "bad manifest line: $kind $mode $name $path $rest"
  case $kind in
    cert | plain | trust | dropin) ;;
    *) fail "bad kind '$kind' in the manifest" ;;
  esac
  case $mode in
    0[0-7][0-7][0-7]) ;;
    *) fail "bad mode '$mode' for $path" ;;
  esac
  case $name in
    '' | */* | .* | manifest) fail "bad staged name '$name'" ;;
  esac
  case $path in
    '' | /* | *[!A-Za-z0-9._:/-]* | ..* | */../* | */..) fail "bad path '$path'" ;;
  esac
  [ -f "$dir/$name" ] || fail "$name is in the manifest but not in $dir"
  file=$(target "$path")
  wanted="$wanted $file "
  install_file "$dir/$name" "$file" "$mode"
  if [ "$installed" = no ]; then
    ! grep -qxF "$kind $file" "$state" 2>/dev/null || record "$kind $file"
    continue
  fi
  record "$kind $file"
  [ "$kind" != trust ] || trust_changed=yes
  [ "$kind" != dropin ] || dropin_changed=yes
done <"$manifest"

# Files of an earlier run that left the manifest.
if [ -f "$state" ]; then
  while read -r kind file; do
    [ "$kind" != dir ] || continue
    case $wanted in
      *" $file "*) continue ;;
    esac
    rm -f "$file"
    echo "changed docker-client: removed $file (no longer wanted)"
    [ "$kind" != trust ] || trust_changed=yes
    [ "$kind" != dropin ] || dropin_changed=yes
  done <"$state"
fi

mkdirs "$etc/forgeway"
printf '%s' "$created" | while read -r d; do printf 'dir %s\n' "$d"; done >>"$new"
# Directories, then files, each sorted: the same installation gives the same state file.
{ grep '^dir ' "$new" | LC_ALL=C sort -u; grep -v '^dir ' "$new" | LC_ALL=C sort -u; } >"$new.sorted" || true
if ! cmp -s "$new.sorted" "$state"; then
  cp "$new.sorted" "$state.new"
  mv -f "$state.new" "$state"
fi
rm -f "$new" "$new.sorted"

[ "$trust_changed" = no ] || update_ca
[ "$dropin_changed" = no ] ||
  restart_docker "or restart dockerd with the HTTP_PROXY, HTTPS_PROXY and NO_PROXY of $(target etc/systemd/system/docker.service.d/forgeway-proxy.conf)"
