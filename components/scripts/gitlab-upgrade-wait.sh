#!/bin/sh
# <host>-gitlab-upgrade-wait (components/upgrade.py): after the container is (re)placed,
# wait for GitLab's readiness (the image's own gitlab-healthcheck) and then for its batched
# background migrations to finish, GitLab's documented check
# (docs.gitlab.com/update/background_migrations: BatchedMigration.queued.count is 0).
# Usage: gitlab-upgrade-wait.sh HOST CONTAINER TARGET TIMEOUT_SECONDS [CONTAINER_ID]
# Fails with the way back from the pre-upgrade backup when GitLab does not come up.
set -eu
me=gitlab-upgrade-wait
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"
host=$1 container=$2 target=$3 timeout=$4
last=$etc/forgeway/upgrade/last-upgrade
setting() { sed -n "s/^$1=//p" "$last" 2>/dev/null | tail -n 1; }
fail() {
  echo "host '$host': GitLab $target: $*" >&2
  from=$(setting from) to=$(setting to)
  if [ "$to" = "$target" ] && [ -n "$from" ]; then
    snapshot=$(setting snapshot) stack=$(setting stack)
    echo "The old volumes (forgeway-gitlab-config, -logs, -data) are kept. To roll back to GitLab $from:" >&2
    if [ "$snapshot" = manual ]; then
      echo "  set the image back to $from (gitlab.images / gitlab.version), pulumi up, and restore your manual backup (docs/backup.md)." >&2
    else
      echo "  set the image back to $from (gitlab.images / gitlab.version), pulumi up, then restore the pre-upgrade backup:" >&2
      echo "  python -m tools.restore --stack $stack --snapshot $snapshot" >&2
    fi
  fi
  exit 1
}
deadline=$(($(date +%s) + timeout))
logs() { docker logs --tail 15 "$container" 2>&1 | sed 's/^/  | /' >&2 || true; }
while ! docker exec "$container" /opt/gitlab/bin/gitlab-healthcheck --fail --max-time 10 >/dev/null 2>&1; do
  state=$(docker inspect -f '{{.State.Status}} {{.RestartCount}}' "$container" 2>/dev/null || echo missing)
  case $state in
    missing) fail "container $container is gone." ;;
    "running 0") ;;
    *)
      logs
      fail "the container did not start (state: $state); its last log lines are above."
      ;;
  esac
  [ "$(date +%s)" -lt "$deadline" ] || {
    logs
    fail "not ready after $timeout s."
  }
  sleep 3
done
echo "GitLab $target is ready"
query='puts Gitlab::Database::BackgroundMigration::BatchedMigration.queued.count'
while :; do
  pending=$(docker exec "$container" gitlab-rails runner -e production "$query" 2>/dev/null | tail -n 1 | tr -d ' \r') || pending=
  case $pending in
    0) break ;;
    '' | *[!0-9]*) fail "cannot read the background migrations (gitlab-rails runner answered '$pending')." ;;
  esac
  [ "$(date +%s)" -lt "$deadline" ] ||
    fail "$pending batched background migrations still queued after $timeout s: wait for them (Admin > Monitoring > Background migrations) before the next stop."
  sleep 3
done
echo "GitLab $target: no background migration queued"
