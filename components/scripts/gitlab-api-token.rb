# forgeway's API token for GitLab, seeded without a click (components/runner_registration.py).
#
#   gitlab-rails runner gitlab-api-token.rb create|revoke    (the token on stdin, never in argv)
#
# create: root gets the personal access token TOKEN_NAME with exactly TOKEN_SCOPES and
# the value read from stdin; run again with the same value it changes nothing (or renews
# that token in place when it expired or its scopes changed), with another value the old
# token is revoked and the new one made (rotation). A value GitLab holds revoked is refused. revoke: every
# active token of root named TOKEN_NAME is revoked. One line of output, never the token.
#
# GitLab's documented way ("Create a personal access token programmatically",
# user/profile/personal_access_tokens.md): create, set_token with 20 characters, save!;
# expires_at is required since GitLab 16.0 and at most 365 days away by default.
# create_runner: POST /user/runners (GitLab 16.1+); manage_runner: GET/PUT/DELETE
# /runners/:id (GitLab 17.1+). No read_user: the provider's early auth check (GET /user)
# is off. The lab's stand-in reads the three constants below; keep each on its own line.
TOKEN_NAME = 'forgeway-provisioner'
TOKEN_SCOPES = %w[create_runner manage_runner]
TOKEN_DAYS = 364

action = ARGV[0]
value = STDIN.read.strip
user = User.find_by_username('root') || abort('gitlab-api-token: no user root in this GitLab')
active = user.personal_access_tokens.active.where(name: TOKEN_NAME)

case action
when 'create'
  abort("gitlab-api-token: expected the 20-character token on stdin, got #{value.length} characters") unless value.length == 20
  wanted = TOKEN_SCOPES.sort
  # GitLab keeps one token per value, revoked ones too (unique token_digest): a value it
  # has already is renewed in place, never created again.
  current = PersonalAccessToken.find_by_token(value)
  if current && (current.user_id != user.id || current.name != TOKEN_NAME)
    abort("gitlab-api-token: another personal access token has this value; rotate it (pulumi up --replace on gitlab-api-token-value)")
  elsif current&.revoked?
    abort("gitlab-api-token: #{TOKEN_NAME} was revoked in GitLab; rotate it: pulumi up --replace on gitlab-api-token-value")
  end
  active.where.not(id: current&.id).each(&:revoke!)
  if current && current.active? && current.scopes.map(&:to_s).sort == wanted
    puts "ok #{TOKEN_NAME}: scopes #{wanted.join(',')}, expires #{current.expires_at}"
  elsif current  # expired, or other scopes (a new forgeway): the same token, renewed
    current.update!(scopes: TOKEN_SCOPES, expires_at: TOKEN_DAYS.days.from_now)
    puts "changed #{TOKEN_NAME}: renewed, scopes #{wanted.join(',')}, expires #{current.expires_at}"
  else
    token = user.personal_access_tokens.create!(name: TOKEN_NAME, scopes: TOKEN_SCOPES, expires_at: TOKEN_DAYS.days.from_now)
    token.set_token(value)
    token.save!
    puts "changed #{TOKEN_NAME}: scopes #{wanted.join(',')}, expires #{token.expires_at}"
  end
when 'revoke'
  count = active.count
  active.each(&:revoke!)
  puts(count.zero? ? "ok #{TOKEN_NAME}: none active" : "removed #{TOKEN_NAME}: #{count} revoked")
else
  abort("gitlab-api-token: usage: gitlab-api-token.rb create|revoke (token on stdin), not #{action.inspect}")
end
