"""tools.ci.known_keys: the extractors that make components/render/known_keys/, on snippets
written here (an omnibus gitlab.rb template, Go structs with json and toml tags)."""

from __future__ import annotations

import pytest

from tools.ci.known_keys import gitlab_rb_keys, go_keys, go_structs

pytestmark = pytest.mark.unit

TEMPLATE = """\
external_url 'GENERATED'
# registry_external_url 'https://registry.example.com'
## prose, not a key: see 'docs'
# nginx['listen_port'] = nil
#gitlab_rails['env'] = {
#   'PATH' => "/bin"
# }
# gitlab_rails['ban'] = {
#   'enabled' => false,
#   'list' => ['a', 'b'],
# }
# patroni['postgresql']['max_wal_senders'] = 5
##! All the settings defined in the "GitLab Nginx" section are also available in
##! this "Registry NGINX" section, using the key `registry_nginx`.
"""


def test_gitlab_rb_extractor() -> None:
    assert gitlab_rb_keys(TEMPLATE) == {
        "external_url",
        "registry_external_url",
        "nginx['listen_port']",
        "registry_nginx['listen_port']",
        "gitlab_rails['env']",  # environment variables: free-form, no children
        "gitlab_rails['ban']",
        "gitlab_rails['ban']['enabled']",
        "gitlab_rails['ban']['list']",
        "patroni['postgresql']['max_wal_senders']",
    }


GO = """\
package demo

type Inner struct {
	Base string `json:"base" toml:"base_dir,omitempty"`
	Size int    // untagged: its Go name
	skip int
}

type common struct {
	Mtu int `json:"mtu,omitempty"`
}

type Root struct {
	common
	Pools   []*Inner          `json:"pools,omitempty"`
	Labels  map[string]string `json:"labels"`
	Ignored bool              `json:"-"`
	Named   Inner             `json:"named" description:"see https://example.org // not a comment"`
}
"""


def test_go_struct_extractor() -> None:
    structs = {"demo": go_structs(GO)}
    assert go_keys(structs, ("demo", "Root"), "json") == {
        "mtu",
        "pools",
        "pools.base",
        "pools.Size",
        "labels",
        "named",
        "named.base",
        "named.Size",
    }
    assert {"Pools.base_dir", "Pools.Size", "Mtu"} <= go_keys(structs, ("demo", "Root"), "toml")
