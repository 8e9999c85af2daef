#!/bin/sh
# <host>-gitea-admin (components/gitea.py): forgeway's Gitea admin user and an admin API
# token, with no click and no secret on any command line.
#
#   gitea-admin.sh CONTAINER USERNAME EMAIL TIMEOUT   (the password on stdin)
#
# 1. Waits, up to TIMEOUT seconds, for the container's health check to say healthy.
# 2. `gitea admin user create --admin` (as the container's git user) when the user does not
#    exist yet, with --random-password: Gitea's CLI takes a password only as an argument,
#    which every process list would show, so the user starts with a password nobody knows.
# 3. `gitea admin user generate-access-token --raw` mints a token (its name carries the
#    time: Gitea refuses a second token of one name); the token is on stdout, nowhere else.
# 4. The password from stdin is set through Gitea's API (PATCH /api/v1/admin/users/USER)
#    from inside the container: curl reads the token header and the JSON body from 0600
#    files that a shell builtin (printf) wrote, so neither is an argument of any process.
#
# Prints the token, and only the token, on stdout (the command's stdout is a secret output);
# everything else goes to stderr. A second run keeps the user, sets the password again and
# mints another token.
set -eu
me=gitea-admin
# shellcheck source=host-files.sh
. "$(dirname "$0")/host-files.sh"

[ $# -eq 4 ] || fail "usage: gitea-admin.sh CONTAINER USERNAME EMAIL TIMEOUT"
container=$1 user=$2 email=$3 timeout=$4
case $container in '' | *[!A-Za-z0-9_.-]*) fail "CONTAINER '$container' is not a container name" ;; esac
case $user in '' | -* | *[!A-Za-z0-9_.-]*) fail "USERNAME '$user' is not a Gitea user name" ;; esac
case $email in *[!A-Za-z0-9@._+-]* | *@*@* | @* | *@ | '') fail "EMAIL '$email' is not a plain e-mail address" ;; esac
case $timeout in '' | *[!0-9]*) fail "TIMEOUT '$timeout' is not a number of seconds" ;; esac

IFS= read -r password || [ -n "${password:-}" ] || fail "no password on stdin"
# The JSON body is written with printf: only characters that need no escaping.
case $password in '' | *[!A-Za-z0-9._-]*) fail "the password on stdin must be letters, digits and . _ - only" ;; esac

wait_healthy "$container" "$timeout"

gitea() { docker exec -u git "$container" gitea "$@" </dev/null; }
# `admin user list --admin` prints a header, then ID, Username, ... per line.
if gitea admin user list --admin | awk -v u="$user" 'NR > 1 && $2 == u { found = 1 } END { exit !found }'; then
  note "Gitea admin user $user exists: its password is set again"
else
  # Its random password is thrown away (must_change_password is cleared with the PATCH below).
  gitea admin user create --admin --username "$user" --email "$email" --random-password >/dev/null
  echo "created Gitea admin user $user" >&2
fi
token=$(gitea admin user generate-access-token --username "$user" --token-name "forgeway-$(date +%Y%m%d%H%M%S)" \
  --scopes all --raw)
case $token in '' | *[!A-Za-z0-9]*) fail "gitea admin user generate-access-token printed no token" ;; esac

# email too: Gitea releases before 1.17 require it in EditUserOption (modules/structs/admin_user.go).
printf '%s\n%s\n%s\n%s\n' "$token" "$password" "$user" "$email" | docker exec -i -u git "$container" sh -c '
  set -eu
  IFS= read -r token && IFS= read -r password && IFS= read -r user && IFS= read -r email
  umask 077
  header=$(mktemp) body=$(mktemp)
  trap "rm -f \"\$header\" \"\$body\"" EXIT
  printf "Authorization: token %s\n" "$token" >"$header"
  printf "{\"login_name\":\"%s\",\"source_id\":0,\"email\":\"%s\",\"password\":\"%s\",\"must_change_password\":false}" \
    "$user" "$email" "$password" >"$body"
  curl -fsS -k --max-time 30 -X PATCH -H @"$header" -H "Content-Type: application/json" \
    --data-binary @"$body" "https://localhost:3000/api/v1/admin/users/$user" >/dev/null
' || fail "setting the password of $user through Gitea's API failed"
echo "set the password of Gitea admin user $user" >&2
printf '%s\n' "$token"
