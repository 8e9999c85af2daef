#!/bin/sh
# <host>-woodpecker-oauth (components/woodpecker.py): the OAuth2 application Woodpecker
# signs users in with, made through Gitea's API from inside the Gitea container.
#
#   woodpecker-oauth.sh up CONTAINER APP REDIRECT_URI TIMEOUT   (the admin token on stdin)
#   woodpecker-oauth.sh down CONTAINER APP USERNAME
#
# up: waits up to TIMEOUT seconds for the container's health check, deletes every OAuth2
#   application of the admin named APP, then creates APP (POST /api/v1/user/applications/oauth2,
#   redirect_uris exactly [REDIRECT_URI], confidential_client true). Recreated, not reused:
#   Gitea shows a client secret only in the answer that creates it, and the server needs it.
#   Prints the client id and the client secret, one a line, on stdout (a secret output).
# down: deletes every application named APP; delete gets no stdin, so it mints a token with
#   `gitea admin user generate-access-token` as the container's git user (Gitea's CLI).
# curl reads the token header and the JSON body from 0600 files a shell builtin wrote: no
# token or secret is an argument of any process.
set -eu
me=woodpecker-oauth
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

mode=${1:-}
case $mode in
  up) [ $# -eq 5 ] || fail "usage: woodpecker-oauth.sh up CONTAINER APP REDIRECT_URI TIMEOUT" ;;
  down) [ $# -eq 4 ] || fail "usage: woodpecker-oauth.sh down CONTAINER APP USERNAME" ;;
  *) fail "MODE '$mode' is not up or down" ;;
esac
container=$2 app=$3
case $container in '' | *[!A-Za-z0-9_.-]*) fail "CONTAINER '$container' is not a container name" ;; esac
# The name goes into a JSON body and a sed pattern: plain characters only.
case $app in '' | *[!A-Za-z0-9_.-]*) fail "APP '$app' must be letters, digits and . _ - only" ;; esac

if [ "$mode" = down ]; then
  user=$4
  case $user in '' | -* | *[!A-Za-z0-9_.-]*) fail "USERNAME '$user' is not a Gitea user name" ;; esac
  if ! docker inspect "$container" >/dev/null 2>&1 </dev/null; then
    note "no container $container: its applications went with Gitea"
    exit 0
  fi
  token=$(docker exec -u git "$container" gitea admin user generate-access-token --username "$user" \
    --token-name "forgeway-oauth-down-$(date +%Y%m%d%H%M%S)" --scopes write:user --raw </dev/null)
else
  uri=$4 timeout=$5
  case $uri in https://*) ;; *) fail "REDIRECT_URI '$uri' is not an https URL" ;; esac
  case $uri in *[!A-Za-z0-9:/._-]*) fail "REDIRECT_URI '$uri' has characters a JSON string would need escaped" ;; esac
  case $timeout in '' | *[!0-9]*) fail "TIMEOUT '$timeout' is not a number of seconds" ;; esac
  IFS= read -r token || [ -n "${token:-}" ] || fail "no admin token on stdin"
  wait_healthy "$container" "$timeout"
fi
case $token in '' | *[!A-Za-z0-9]*) fail "no usable admin token" ;; esac

# In the container: delete APP's applications, then (up) create APP and print its answer
# (held in a variable, never in a file on the host).
oauth_in_gitea() {
  docker exec -i -u git "$container" sh -c '
  set -eu
  IFS= read -r token && IFS= read -r mode && IFS= read -r app && IFS= read -r uri
  umask 077
  header=$(mktemp) body=$(mktemp)
  trap "rm -f \"\$header\" \"\$body\"" EXIT
  printf "Authorization: token %s\n" "$token" >"$header"
  api=https://localhost:3000/api/v1/user/applications/oauth2
  # Gitea answers {"id":N,"name":"..."...} per application (structs.OAuth2Application order).
  ids=$(curl -fsS -k --max-time 30 -H @"$header" "$api?limit=50" |
    sed "s/}, *{/}\n{/g" | sed -n "s/.*\"id\": *\([0-9][0-9]*\), *\"name\": *\"$app\".*/\1/p")
  for id in $ids; do
    curl -fsS -k --max-time 30 -X DELETE -H @"$header" "$api/$id" >/dev/null
    echo "deleted OAuth2 application $app ($id)" >&2
  done
  [ "$mode" = up ] || exit 0
  printf "{\"name\":\"%s\",\"redirect_uris\":[\"%s\"],\"confidential_client\":true}" "$app" "$uri" >"$body"
  curl -fsS -k --max-time 30 -X POST -H @"$header" -H "Content-Type: application/json" \
    --data-binary @"$body" "$api"
'
}
answer=$(printf '%s\n%s\n%s\n%s\n' "$token" "$mode" "$app" "${uri:-}" | oauth_in_gitea) ||
  fail "Gitea's OAuth2 API refused the call (see above)"
[ "$mode" = up ] || exit 0
field() { printf '%s' "$answer" | sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p"; }
client_id=$(field client_id)
client_secret=$(field client_secret)
{ [ -n "$client_id" ] && [ -n "$client_secret" ]; } || fail "Gitea's answer held no client_id and client_secret"
echo "created OAuth2 application $app, redirect $uri" >&2
printf '%s\n%s\n' "$client_id" "$client_secret"
