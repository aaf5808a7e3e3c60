"""Pure helpers of the build shell: remote normalisation and GitHub Actions facts."""

import pytest

from kedge.release.build import _github_env, normalise_remote


@pytest.mark.parametrize("url,want", [
    ("https://github.com/kedge/kedge.git", "https://github.com/kedge/kedge"),
    ("https://github.com/kedge/kedge", "https://github.com/kedge/kedge"),
    ("git@github.com:kedge/kedge.git", "https://github.com/kedge/kedge"),
    ("ssh://git@github.com/kedge/kedge.git", "https://github.com/kedge/kedge"),
    ("https://token:x@github.com/kedge/kedge.git", "https://github.com/kedge/kedge"),  # credentials dropped
    ("/srv/git/kedge", None),
    ("file:///srv/git/kedge", None),
    ("https://github.com/kedge", None),
])
def test_remote_urls_normalise_to_the_source_uri_verifiers_use(url, want):
    assert normalise_remote(url) == want


GH = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "kedge/kedge",
    "GITHUB_RUN_ID": "42",
    "GITHUB_RUN_ATTEMPT": "2",
    "GITHUB_REF": "refs/tags/v0.1.0",
    "GITHUB_WORKFLOW_REF": "kedge/kedge/.github/workflows/release.yml@refs/tags/v0.1.0",
}


def test_github_actions_environment_supplies_provenance_facts():
    assert _github_env(GH) == {
        "repository": "https://github.com/kedge/kedge",
        "invocation_id": "https://github.com/kedge/kedge/actions/runs/42/attempts/2",
        "ref": "refs/tags/v0.1.0",
        "workflow_path": ".github/workflows/release.yml",
    }


def test_github_variables_are_ignored_outside_actions():
    assert _github_env({**GH, "GITHUB_ACTIONS": "1"}) == {}
    assert _github_env({k: v for k, v in GH.items() if k != "GITHUB_ACTIONS"}) == {}


@pytest.mark.parametrize("key,value,missing", [
    ("GITHUB_SERVER_URL", "http://evil", "repository"),
    ("GITHUB_REPOSITORY", "a/b/c", "repository"),
    ("GITHUB_RUN_ID", "42; rm -rf", "invocation_id"),
    ("GITHUB_REF", "main", "ref"),
    ("GITHUB_WORKFLOW_REF", "no-at-sign", "workflow_path"),
])
def test_malformed_github_variables_are_not_trusted(key, value, missing):
    assert missing not in _github_env({**GH, key: value})


def test_backend_pin_mismatch_is_reported(tmp_path):
    import importlib.metadata

    from kedge.release.build import _backend_pin_warnings

    installed = importlib.metadata.version("hatchling")
    py = tmp_path / "pyproject.toml"
    py.write_text(f'[build-system]\nrequires = ["hatchling=={installed}"]\n')
    assert _backend_pin_warnings(py) == ()
    py.write_text('[build-system]\nrequires = ["hatchling==0.0.1"]\n')
    (warning,) = _backend_pin_warnings(py)
    assert "hatchling==0.0.1" in warning and installed in warning
    py.write_text("not toml [")
    assert _backend_pin_warnings(py)
