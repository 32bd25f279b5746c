"""Config loading: defaults, every unknown key and wrong type named, all at once."""
from __future__ import annotations

from pathlib import Path

import pytest

from overseer.config import Config, load_config, parse_config
from overseer.exceptions import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_match_the_spec():
    c = parse_config({})
    assert c.repository.url is None and c.repository.branch == "main" and c.repository.poll_interval == 60
    assert c.data_dir == "./var"
    assert (c.server.host, c.server.port, c.server.tokens) == ("127.0.0.1", 8080, ())
    assert (c.server.max_body_bytes, c.server.thread_pool, c.server.max_follows) == (1048576, 64, 32)
    assert (c.execution.max_concurrent, c.execution.max_queued, c.execution.kill_grace) == (64, 10000, 10)
    assert c.execution.max_output_bytes == 104857600 and c.retention.executions_per_job == 1000
    assert dict(c.hooks) == {} and c.hooks_secret is None
    assert c.base_url == "http://127.0.0.1:8080"


def test_example_config_documents_every_key():
    c = load_config(ROOT / "config.example.yaml")
    assert c.repository.url == "https://git.example.com/ops/jobs.git"
    text = (ROOT / "config.example.yaml").read_text()
    for section in ("repository", "server", "execution", "retention"):
        obj = getattr(c, section)
        for name in obj.__dataclass_fields__:
            assert f"  {name}:" in text, f"{section}.{name} is not documented"
    for name in Config.__dataclass_fields__:
        assert f"{name}:" in text


def test_every_problem_is_reported_with_its_key_path():
    with pytest.raises(ConfigError) as e:
        parse_config({"server": {"port": "x", "bogus": 1, "tokens": "abc"}, "zzz": 1,
                      "execution": {"kill_grace": -1, "max_concurrent": 0},
                      "hooks": {"fail": ["ftp://x"]}, "repository": {"poll_interval": True}})
    text = "\n".join(e.value.problems)
    for fragment in ("server.port", "server.bogus: unknown key", "server.tokens", "zzz: unknown key",
                     "execution.kill_grace", "execution.max_concurrent", "hooks.fail",
                     "repository.poll_interval"):
        assert fragment in text
    assert len(e.value.problems) == 8


def test_hooks_accept_a_single_url_and_base_url_follows_host():
    c = parse_config({"hooks": {"*": "http://h/x"}, "server": {"host": "0.0.0.0", "port": 9000}})
    assert c.hooks["*"] == ("http://h/x",)
    assert c.base_url == "http://127.0.0.1:9000"
    c = parse_config({"server": {"base_url": "https://ops.example.com/"}})
    assert c.base_url == "https://ops.example.com"


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(top)
    tagged = tmp_path / "tag.yaml"
    tagged.write_text("data_dir: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError):
        load_config(tagged)
