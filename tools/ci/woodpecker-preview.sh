#!/usr/bin/env bash
# The preview step of .woodpecker/preview.yml (a forgeway repository on forgeway's Gitea, CI by
# Woodpecker): what .gitlab-ci.yml's preview job does, for a pull request. For STACK: the
# offline plan (`make preview`, no hosts), then `pulumi preview --policy-pack policies`
# against the real hosts and state; both go into ONE comment per stack on the pull request,
# edited on every push (tools/ci/mr_note.py --forge gitea). It fails if either failed, after
# the comment is posted. A script, not pipeline lines: Woodpecker substitutes $VAR and ${VAR}
# in a pipeline's commands before the shell sees them.
#
# Environment (the pipeline's secrets and Woodpecker's own CI_* variables):
#   STACK                     the stack (the pipeline's matrix)
#   PULUMI_BACKEND_URL or PULUMI_ACCESS_TOKEN (PULUMI_ORG)   where the state lives
#   PULUMI_CONFIG_PASSPHRASE  with the passphrase secrets provider
#   FORGEWAY_NOTE_TOKEN       a Gitea token (write:issue, read:user), read by mr_note only
# No secret is printed or put on a command line: the hosts' key goes from `pulumi config get`
# to ssh-add on a pipe.
set -uo pipefail
stack=${STACK:?STACK is not set: the pipeline matrix names the stacks}
ref="${PULUMI_ORG:+$PULUMI_ORG/}$stack"

if [ -z "${PULUMI_BACKEND_URL:-}${PULUMI_ACCESS_TOKEN:-}" ]; then
  echo "PULUMI_BACKEND_URL is not set (nor PULUMI_ACCESS_TOKEN): add one as a Woodpecker secret (.woodpecker/preview.yml) available to pull_request events." >&2
  exit 1
fi
if grep -q '^encryptionsalt:' "Pulumi.$stack.yaml" && [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ]; then
  echo "PULUMI_CONFIG_PASSPHRASE is not set: Pulumi.$stack.yaml uses the passphrase provider; add it as a Woodpecker secret available to pull_request events." >&2
  exit 1
fi
pulumi login --non-interactive || exit 1
eval "$(ssh-agent -s)" >/dev/null || exit 1
trap 'ssh-agent -k >/dev/null 2>&1' EXIT
if ! pulumi config get forgeway:ssh_private_key --stack "$ref" >/dev/null 2>&1; then
  echo "forgeway:ssh_private_key is not set in stack $ref: this step reaches the hosts with that key only." >&2
  exit 1
fi
pulumi config get forgeway:ssh_private_key --stack "$ref" | ssh-add - 2>/dev/null || exit 1

status() { if [ "$1" -eq 0 ]; then echo "passed"; else echo "**failed** (exit $1)"; fi; }
plan_rc=0
make preview STACK="$stack" >plan.txt 2>&1 || plan_rc=$?
cat plan.txt
preview_rc=0
pulumi preview --stack "$ref" --policy-pack policies --non-interactive --color never --suppress-progress \
  >preview.txt 2>&1 || preview_rc=$?
cat preview.txt
python3 -m tools.ci.mr_note --forge gitea --marker "forgeway-preview:$stack" \
  --title "Stack $stack: offline plan $(status "$plan_rc"), pulumi preview $(status "$preview_rc")" \
  --section "Offline plan: make preview STACK=$stack" plan.txt \
  --section "pulumi preview --policy-pack policies" preview.txt || exit 1
exit $((plan_rc != 0 || preview_rc != 0))
