"""The GitLab stand-in's wrapper (tools/lab/standin_image/wrapper.py) in-process: how it reads
the rendered gitlab.rb and the root password, and the image recipe's cache key. No root,
no docker: the container itself is tested in test_gitlab_standin.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from components.gitlab import secrets_rb
from components.render.gitlab import render_gitlab_rb, ruby_str
from tests.lab.standin_host import DOMAIN, GITLAB_RB, PASSWORD, standin_settings
from tools.lab import images as lab_images
from tools.lab.images import ImageFile, Recipe

pytestmark = pytest.mark.lab

WRAPPER = Path(__file__).resolve().parents[2] / "tools" / "lab" / "standin_image" / "wrapper.py"


def _wrapper() -> ModuleType:
    spec = importlib.util.spec_from_file_location("standin_wrapper", WRAPPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wrapper_reads_the_rendered_gitlab_rb() -> None:
    wrapper = _wrapper()
    s = wrapper.settings(GITLAB_RB)
    assert s.gitlab.origin == f"https://{DOMAIN}"
    assert (s.gitlab.listen_port, str(s.gitlab.certificate)) == (443, f"/etc/gitlab/ssl/{DOMAIN}.crt")
    assert s.registry is not None
    assert (s.registry.origin, s.registry.listen_port) == (f"https://{DOMAIN}:5050", 5050)
    assert str(s.registry.key) == f"/etc/gitlab/ssl/{DOMAIN}.key"
    assert s.letsencrypt is False
    # Ruby's two escapes, as ruby_str writes them
    tricky = "/etc/gitlab/ssl/a\\b'c.crt"
    found = wrapper.parse_gitlab_rb(f"nginx['ssl_certificate'] = {ruby_str(tricky)}  # note\n")
    assert found == {"nginx['ssl_certificate']": tricky}
    no_registry = render_gitlab_rb(standin_settings(registry_enabled=False, tls="letsencrypt")).text
    s = wrapper.settings(no_registry)
    assert (s.registry, s.letsencrypt) == (None, True)
    with pytest.raises(wrapper.Fatal, match="cannot read external_url"):
        wrapper.settings('external_url "https://x"\n')


def test_wrapper_reads_the_root_password_from_a_private_from_file(tmp_path: Path) -> None:
    wrapper = _wrapper()
    secrets = tmp_path / "secrets.rb"
    secrets.write_text(secrets_rb(PASSWORD))
    secrets.chmod(0o600)
    text = f"{GITLAB_RB}from_file({ruby_str(str(secrets))})\n"
    assert wrapper.settings(text).root_password == PASSWORD
    assert wrapper.settings(GITLAB_RB).root_password is None
    secrets.chmod(0o644)
    with pytest.raises(wrapper.Fatal, match="mode 0644 owned by uid 0: a private file must be root's alone") as err:
        wrapper.settings(text)
    assert PASSWORD not in str(err.value)
    secrets.unlink()
    with pytest.raises(wrapper.Fatal, match="no such file"):
        wrapper.settings(text)


def test_recipe_key_covers_the_content_of_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_images, "REPO_ROOT", tmp_path)
    script = tmp_path / "entry.py"
    script.write_text("print(1)\n")
    recipe = Recipe(packages=("python3-minimal",), files=(ImageFile("entry.py", "/assets/entry", 0o755),))
    first = recipe.key()
    script.write_text("print(2)\n")
    assert recipe.key() != first
    assert Recipe(packages=("python3-minimal",)).key() not in (first, recipe.key())


def test_standin_image_names_a_version_and_refuses_other_text() -> None:
    assert lab_images.standin_image(lab_images.STANDIN_VERSION) == lab_images.GITLAB_STANDIN
    assert lab_images.standin_image("17.10.0") == "forgeway-lab/gitlab-standin:17.10.0"
    assert lab_images.standin_image("17.11.3-ee") == "forgeway-lab/gitlab-standin:17.11.3-ee"
    for bad in ("17.10", "latest", "17.10.0; rm -rf /", "v17.10.0"):
        with pytest.raises(ValueError, match=r"expected MAJOR\.MINOR\.PATCH"):
            lab_images.standin_image(bad)
    files = {f.target: f.content() for f in lab_images.RECIPES[lab_images.GITLAB_STANDIN].files}
    assert files["/opt/gitlab/embedded/service/gitlab-rails/VERSION"] == b"17.11.3\n"
    assert files["/opt/gitlab/version-manifest.txt"] == b"gitlab-ce 17.11.3\n"


def test_values_encrypted_under_one_db_key_base_do_not_decrypt_under_another() -> None:
    spec = importlib.util.spec_from_file_location("standin_secrets", WRAPPER.with_name("gitlab_secrets.py"))
    assert spec is not None and spec.loader is not None
    secrets_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(secrets_module)
    key = secrets_module.db_key({"gitlab_rails": {"db_key_base": "a" * 128}})
    other = secrets_module.db_key({"gitlab_rails": {"db_key_base": "b" * 128}})
    assert key == b"a" * 32 and secrets_module.db_key({}) is None
    token = secrets_module.encrypt(key, "marker value")
    assert "marker" not in token and secrets_module.decrypt(key, token) == "marker value"
    for wrong in (other, None):
        with pytest.raises(secrets_module.DecryptError):
            secrets_module.decrypt(wrong, token)
