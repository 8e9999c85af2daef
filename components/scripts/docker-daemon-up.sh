#!/bin/sh
# Merge forgeway's keys into the host's docker daemon.json; restart docker only when the
# file changed. Safe to run any number of times: a run that finds the file as wanted
# prints "unchanged docker-daemon: ..." and restarts nothing.
#
#   docker-daemon-up.sh DIR    DIR (the stage directory) holds forgeway.json, the keys
#                              forgeway sets (components/render/docker_daemon.py), and
#                              daemon_merge.py, the merge (run with the host's python3)
#
# The file is $FORGEWAY_ETC/docker/daemon.json. Keys forgeway does not own stay as they
# are; keys it set last time and sets no more go away. forgeway's state is in
# $FORGEWAY_ETC/forgeway/docker-daemon:
#   owned.json           the keys the last run set (the merge drops them before adding ours)
#   daemon.json.orig     the host's file as it was before forgeway first changed it, or
#   daemon.json.absent   a marker: there was none (each written once, never overwritten)
#   docker-dir.created   a marker: the first run made $FORGEWAY_ETC/docker
#   docker-daemon-up.sh --restore   puts the original back from these (the delete):
#                              the bytes of daemon.json.orig, or no file when there was
#                              none; docker restarts only when that changed the file; then
#                              the state goes. Safe without a prior up. When docker does
#                              not come back with the original, it fails and keeps the state.
#
# A changed file is checked first: `dockerd --validate` where dockerd has it (Docker 23+);
# older daemons check it when they restart. It is then installed atomically (mode 0644)
# and docker restarted; the run waits until `docker info` answers (up to 60 s). When the
# daemon does not come back, the previous file is put back, docker restarted again, and
# the run fails with the daemon's complaint (journalctl -u docker under systemd, else
# what the restart command printed).
#
# Environment (the defaults are for real hosts):
#   FORGEWAY_ETC=/etc               see above
#   FORGEWAY_DOCKER_RESTART=        a shell command that restarts this host's dockerd;
#                                   required when FORGEWAY_ETC is not /etc (a lab host:
#                                   never the machine's own docker)
#   FORGEWAY_SYSTEMD=auto|yes|no    without FORGEWAY_DOCKER_RESTART: `systemctl restart
#                                   docker` when systemd is PID 1 (auto) or yes, else
#                                   `service docker restart`
#   DOCKER_HOST                     what `docker info` asks (docker's own variable)
set -eu
me=docker-daemon tag=docker-daemon
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

mode=up
case ${1:-} in
  --restore) [ $# -eq 1 ] || fail "usage: docker-daemon-up.sh --restore"; mode=restore ;;
  *) [ $# -eq 1 ] || fail "usage: docker-daemon-up.sh DIR | --restore"; dir=$1 ;;
esac
file=$etc/docker/daemon.json
new_file=$file.forgeway-new
state=$etc/forgeway/docker-daemon
wait_s=60

choose_restart() { # how docker restarts here, decided before anything changes
  if [ -n "${FORGEWAY_DOCKER_RESTART:-}" ]; then
    how=given
  elif [ "$etc" != /etc ]; then
    fail "FORGEWAY_ETC is $etc, not /etc: set FORGEWAY_DOCKER_RESTART to the command that restarts this host's dockerd"
  elif [ "$units_wanted" = yes ]; then
    how=systemd
  else
    how=service
  fi
  command -v docker >/dev/null 2>&1 ||
    fail "this host needs the docker CLI to see the daemon answer after a restart (apt-get install -y docker.io)"
}

restart_out=
restart() { # status 0 when docker restarted and answers; what it printed in $restart_out
  case $how in
    given) restart_out=$(sh -c "$FORGEWAY_DOCKER_RESTART" 2>&1) || return 1 ;;
    systemd) restart_out=$(systemctl restart docker 2>&1) || return 1 ;;
    service) restart_out=$(service docker restart 2>&1) || return 1 ;;
  esac
  waited=0
  until docker info >/dev/null 2>&1; do
    if [ "$waited" -ge "$wait_s" ]; then
      restart_out="${restart_out:+$restart_out
}the daemon did not answer 'docker info' within ${wait_s}s"
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

complaint() {
  if [ "$how" = systemd ] && command -v journalctl >/dev/null 2>&1; then
    journalctl -u docker --no-pager -n 15 -o cat 2>&1 || true
  else
    printf '%s\n' "$restart_out" | tail -n 15
  fi
}

if [ "$mode" = restore ]; then
  if [ ! -d "$state" ]; then
    echo "ok docker-daemon: nothing to restore ($state is absent)"
    exit 0
  fi

  # What putting the original back takes: restore (its bytes), remove (there was none) or nothing.
  if [ -f "$state/daemon.json.orig" ]; then
    if [ -f "$file" ] && cmp -s "$state/daemon.json.orig" "$file"; then
      action=none
    else
      action=restore
    fi
  elif [ -e "$state/daemon.json.absent" ] && { [ -e "$file" ] || [ -L "$file" ]; }; then
    action=remove
  else
    action=none # no original recorded (up never got that far), or already absent
  fi

  [ "$action" = none ] || choose_restart

  case $action in
    restore)
      cp -p "$state/daemon.json.orig" "$new_file"
      mv -f "$new_file" "$file"
      ;;
    remove) rm -f "$file" ;;
  esac
  if [ "$action" != none ] && ! restart; then
    fail "$file is as it was before forgeway, but docker did not come back with it; the daemon said:
  $(complaint)"
  fi

  made_dir=no
  [ ! -e "$state/docker-dir.created" ] || made_dir=yes
  rm -rf "$state"
  rmdir "$etc/forgeway" 2>/dev/null || true # the stage directory may still be in it
  [ "$made_dir" = no ] || rmdir "$etc/docker" 2>/dev/null || true

  case $action in
    restore) echo "changed docker-daemon: $file restored (docker restarted)" ;;
    remove) echo "changed docker-daemon: $file removed, there was none before forgeway (docker restarted)" ;;
    none) echo "ok docker-daemon: $file is as it was before forgeway" ;;
  esac
  exit 0
fi

ours=$dir/forgeway.json
merge=$dir/daemon_merge.py
[ -f "$ours" ] || fail "no forgeway.json in $dir"
[ -f "$merge" ] || fail "no daemon_merge.py in $dir"
command -v python3 >/dev/null 2>&1 ||
  fail "this host needs python3 to merge forgeway's keys into its daemon.json (apt-get install -y python3-minimal)"
merged=$dir/daemon.json.merged
owned_new=$dir/owned.json.new
choose_restart

# The daemon's major version: below 27, IPv6 NAT needs "experimental" (the merge adds it).
major=
if command -v dockerd >/dev/null 2>&1; then
  major=$(dockerd --version 2>/dev/null | sed -n 's/^Docker version \([0-9][0-9]*\)\..*/\1/p' | head -n 1) || major=
fi
[ -n "$major" ] || major=0

if [ -f "$state/owned.json" ]; then
  owned_before=$state/owned.json
else
  owned_before=$dir/owned.json.none
  echo '[]' >"$owned_before"
fi
[ ! -e "$file" ] || [ -f "$file" ] || fail "$file is not a regular file: refusing to change it"

if ! python3 "$merge" "$file" "$ours" "$owned_before" "$major" >"$merged" 2>"$dir/merge.err"; then
  fail "cannot merge forgeway's keys into $file: $(cat "$dir/merge.err")"
fi
# The keys this run sets: ours, and what the merge added (experimental for old daemons).
python3 - "$file" "$merged" "$owned_before" "$ours" >"$owned_new" <<'EOF'
import json, os, sys
current_path, merged_path, owned_path, ours_path = sys.argv[1:]
def load(path):
    text = open(path).read() if os.path.exists(path) else ""
    return json.loads(text) if text.strip() else {}
current, merged, ours = load(current_path), load(merged_path), load(ours_path)
owned_before = set(load(owned_path))
base = {k: v for k, v in current.items() if k not in owned_before}
missing = object()
owned = sorted(k for k in merged if k in ours or base.get(k, missing) != merged[k])
print(json.dumps(owned))
EOF

# forgeway's record of the host's original, made once.
fresh=no
if [ ! -d "$state" ]; then
  fresh=yes
  mkdir -p "$state"
fi
made_dir=no
if [ ! -e "$state/daemon.json.orig" ] && [ ! -e "$state/daemon.json.absent" ]; then
  if [ -f "$file" ]; then
    cp -p "$file" "$state/daemon.json.orig.new"
    mv -f "$state/daemon.json.orig.new" "$state/daemon.json.orig"
  else
    : >"$state/daemon.json.absent"
  fi
  if [ ! -d "$etc/docker" ]; then
    : >"$state/docker-dir.created"
    made_dir=yes
  fi
fi

if [ -f "$file" ] && cmp -s "$merged" "$file"; then
  if ! cmp -s "$owned_new" "$state/owned.json"; then
    cp "$owned_new" "$state/owned.json.new"
    mv -f "$state/owned.json.new" "$state/owned.json"
  fi
  rm -f "$merged" "$owned_new" "$dir/merge.err" "$dir/owned.json.none"
  echo "unchanged docker-daemon: $file"
  exit 0
fi

undo_fresh() { # a failed first run leaves no state behind
  if [ "$fresh" = yes ]; then
    rm -rf "$state"
    rmdir "$etc/forgeway" 2>/dev/null || true
  fi
  if [ "$made_dir" = yes ]; then
    rmdir "$etc/docker" 2>/dev/null || true
  fi
}

# Validate where the daemon can (Docker 23+); older ones check the file on restart.
if command -v dockerd >/dev/null 2>&1; then
  if out=$(dockerd --validate --config-file "$merged" 2>&1); then
    echo "ok docker-daemon: dockerd --validate accepts the merged file"
  else
    case $out in
      *"unknown flag: --validate"*)
        echo "note docker-daemon: dockerd $major has no --validate (Docker 23+): the daemon checks the file when it restarts"
        ;;
      *)
        undo_fresh
        fail "dockerd rejects the merged daemon.json, $file is left as it was: $out"
        ;;
    esac
  fi
else
  echo "note docker-daemon: no dockerd in PATH to validate with: the daemon checks the file when it restarts"
fi

# Install, remembering what was there for a rollback.
had=no
if [ -f "$file" ]; then
  had=yes
  cp -p "$file" "$dir/daemon.json.prev"
fi
had_owned=no
if [ -f "$state/owned.json" ]; then
  had_owned=yes
  cp -p "$state/owned.json" "$dir/owned.json.prev"
fi
mkdir -p "$etc/docker"
cp "$merged" "$new_file"
chmod 0644 "$new_file"
mv -f "$new_file" "$file"
cp "$owned_new" "$state/owned.json.new"
mv -f "$state/owned.json.new" "$state/owned.json"

if restart; then
  rm -f "$merged" "$owned_new" "$dir/merge.err" "$dir/owned.json.none" "$dir/daemon.json.prev" "$dir/owned.json.prev"
  echo "changed docker-daemon: $file (docker restarted)"
  exit 0
fi

why=$(complaint)
if [ "$had" = yes ]; then
  cp -p "$dir/daemon.json.prev" "$new_file"
  mv -f "$new_file" "$file"
else
  rm -f "$file"
fi
if [ "$had_owned" = yes ]; then
  mv -f "$dir/owned.json.prev" "$state/owned.json"
else
  rm -f "$state/owned.json"
fi
undo_fresh
if restart; then
  back="the previous file is back and docker runs again"
else
  back="the previous file is back, but docker did not come back either: $(complaint)"
fi
fail "docker did not come back with the merged $file ($back); the daemon said:
$why"
