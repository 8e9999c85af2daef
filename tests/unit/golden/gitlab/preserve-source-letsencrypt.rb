# Rendered by forgeway (components/render/gitlab.py); edit the stack config instead.
external_url 'https://gitlab.example.org'
nginx['listen_port'] = 443
nginx['listen_https'] = true
nginx['redirect_http_to_https'] = true
gitlab_rails['gitlab_shell_ssh_port'] = 22
registry_external_url 'https://registry.example.org:5050'
registry_nginx['listen_port'] = 5050
registry_nginx['listen_https'] = true
letsencrypt['enable'] = true
letsencrypt['auto_renew'] = true
letsencrypt['contact_emails'] = ['ops@example.org']
nginx['proxy_set_headers'] = { 'X-Forwarded-For' => '$remote_addr' }
gitlab_rails['trusted_proxies'] = ['127.0.0.1', '::1']
gitlab_rails['monitoring_whitelist'] = ['127.0.0.0/8', '::1/128']
gitlab_rails['rack_attack_git_basic_auth'] = { 'enabled' => true, 'ip_whitelist' => ['127.0.0.1'], 'maxretry' => 30, 'findtime' => 180, 'bantime' => 3600 }
