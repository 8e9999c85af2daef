# Rendered by forgeway (components/render/gitlab.py); edit the stack config instead.
external_url 'https://gitlab.example.org'
nginx['listen_port'] = 443
nginx['listen_https'] = true
nginx['redirect_http_to_https'] = true
gitlab_rails['gitlab_shell_ssh_port'] = 22
registry_external_url 'https://registry.example.org:5050'
registry_nginx['listen_port'] = 5050
registry_nginx['listen_https'] = true
letsencrypt['enable'] = false
nginx['ssl_certificate'] = '/etc/gitlab/ssl/gitlab.example.org.crt'
nginx['ssl_certificate_key'] = '/etc/gitlab/ssl/gitlab.example.org.key'
registry_nginx['ssl_certificate'] = '/etc/gitlab/ssl/registry.example.org.crt'
registry_nginx['ssl_certificate_key'] = '/etc/gitlab/ssl/registry.example.org.key'
nginx['proxy_set_headers'] = { 'X-Forwarded-For' => '$remote_addr' }
# snat: every internet client arrives from 10.8.0.1; it is not allow-listed, so one client's failed logins ban Git HTTP and the registry for all of them (README, "Client addresses")
gitlab_rails['trusted_proxies'] = ['127.0.0.1', '::1']
gitlab_rails['monitoring_whitelist'] = ['127.0.0.0/8', '::1/128']
gitlab_rails['rack_attack_git_basic_auth'] = { 'enabled' => true, 'ip_whitelist' => ['127.0.0.1'], 'maxretry' => 30, 'findtime' => 180, 'bantime' => 3600 }
# small-device profile (gitlab.small_device)
puma['worker_processes'] = 0
sidekiq['concurrency'] = 5
postgresql['shared_buffers'] = '256MB'
prometheus_monitoring['enable'] = false
prometheus['enable'] = false
alertmanager['enable'] = false
node_exporter['enable'] = false
redis_exporter['enable'] = false
postgres_exporter['enable'] = false
gitlab_exporter['enable'] = false
gitlab_rails['env'] = { 'MALLOC_CONF' => 'dirty_decay_ms:1000,muzzy_decay_ms:1000' }
gitaly['env'] = { 'MALLOC_CONF' => 'dirty_decay_ms:1000,muzzy_decay_ms:1000' }
