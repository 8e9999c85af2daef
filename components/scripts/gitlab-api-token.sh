#!/bin/sh
# Seed (create) or revoke forgeway's GitLab API token inside the GitLab container, with
# the token on stdin only (never an argument, an environment variable or a log line).
#
#   gitlab-api-token.sh create|revoke CONTAINER TIMEOUT [DIR]
#
#   CONTAINER  the GitLab container (forgeway-gitlab)
#   TIMEOUT    seconds to wait for its health check to say healthy (create; revoke
#              waits at most 120 s and then gives up quietly)
#   DIR        holds gitlab-api-token.rb (default: this script's own directory, the
#              stage directory of components/runner_registration.py)
#
# The ruby file is installed in the container as $RB (root, 0600, in a 0700
# directory on the config volume) when its text differs, then run by gitlab-rails
# with ACTION and the token on stdin: it prints one line (ok/changed/removed), and a
# second create with the same token changes nothing. revoke with the container gone
# succeeds (there is nothing left to revoke).
set -eu
me=gitlab-api-token tag=gitlab-api-token
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

[ $# -eq 3 ] || [ $# -eq 4 ] || fail "usage: gitlab-api-token.sh create|revoke CONTAINER TIMEOUT [DIR]"
action=$1
container=$2
timeout=$3
dir=${4:-$(dirname "$0")}
RB_DIR=/etc/gitlab/forgeway
RB=$RB_DIR/gitlab-api-token.rb
case $action in create | revoke) ;; *) fail "ACTION '$action': expected create or revoke" ;; esac
case $container in '' | *[!A-Za-z0-9_.-]*) fail "CONTAINER '$container' is not a container name" ;; esac
case $timeout in '' | *[!0-9]*) fail "TIMEOUT '$timeout' is not a number of seconds" ;; esac
[ -f "$dir/gitlab-api-token.rb" ] || fail "no gitlab-api-token.rb in $dir"

health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}' "$container" </dev/null 2>/dev/null; }

if [ "$action" = revoke ]; then
  running=$(docker inspect -f '{{.State.Running}}' "$container" </dev/null 2>/dev/null || true)
  if [ "$running" != true ]; then
    ok "container $container is not running: no token to revoke"
    exit 0
  fi
  [ "$timeout" -le 120 ] || timeout=120
fi

# GitLab answers gitlab-rails only once its first reconfigure and migrations are done,
# which the image's own health check (gitlab-healthcheck) reports. Docker runs it first one
# interval (60 s) after the start and says `starting` until then (moby daemon/health.go:
# the probe interval is "also the time before the first probe"), so while it says
# starting, the same check runs here too: one pass is what makes Docker say healthy.
ready() {
  status=$(health || true)
  [ "$status" = healthy ] && return 0
  [ "$status" = starting ] || return 1
  docker exec "$container" /opt/gitlab/bin/gitlab-healthcheck --fail --max-time 10 </dev/null >/dev/null 2>&1
}
waited=0
until ready; do
  if [ "$waited" -ge "$timeout" ]; then
    if [ "$action" = revoke ]; then
      note "container $container not healthy after ${waited}s (health: ${status:-no container}): token left as it is"
      exit 0
    fi
    fail "waited ${waited}s for container $container to report healthy (docker inspect State.Health.Status: ${status:-no such container}); GitLab's first boot takes minutes on small hosts: check 'docker logs $container', or raise runners.api_ready_timeout_seconds"
  fi
  sleep 5
  waited=$((waited + 5))
done

# The ruby file, root's alone, installed only when its text differs.
present=$(docker exec "$container" sh -c "cat $RB 2>/dev/null || true" </dev/null)
if [ "$present" != "$(cat "$dir/gitlab-api-token.rb")" ]; then
  docker exec -i "$container" sh -c "umask 077 && mkdir -p $RB_DIR && chmod 0700 $RB_DIR && cat >$RB.new && mv $RB.new $RB" \
    <"$dir/gitlab-api-token.rb"
  changed "$RB in $container"
fi

# stdin (the token) goes to gitlab-rails and nowhere else.
docker exec -i "$container" gitlab-rails runner "$RB" "$action"
