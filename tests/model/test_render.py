"""Command rendering: shell quoting (property-tested and run through a real /bin/sh), appended args."""
from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overseer.exceptions import ParamError
from overseer.model import render, sandbox, templates
from overseer.model.job import Job
from overseer.model.vars import VarSpec


def make_job(command: str | None, *specs: VarSpec, script: str | None = None, name: str = "j") -> Job:
    return Job(name=name, file=f"{name}.yml", command=command, script=script, timeout=None, vars=tuple(specs),
               schedule=(), description=None, hooks=MappingProxyType({}), env=MappingProxyType({}),
               max_concurrent=None, definition={})


HOSTILE = ["'", '"', "$(id)", "`id`", "\n", ";", "*", "-n", "--x", "\\", "{{ 7*7 }}", "{% if 1 %}", "$HOME",
           "&&", "|", ">", "<", "#", " ", "\t", "~", "!", "é", "\u2028", "\x01", "''", "'\"'\"'"]
SAFE_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")
TEXT = st.one_of(
    st.text(SAFE_CHARS),
    st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(SAFE_CHARS, max_size=5)), max_size=8).map("".join),
)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), TEXT,
                         st.floats(allow_nan=False, allow_infinity=False))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12)

ECHO_STR = make_job("echo {{ v }}", VarSpec(name="v"))
ECHO_SEQ = make_job("echo {{ v }}", VarSpec(name="v", type="seq"))
ECHO_MAP = make_job("echo {{ v }}", VarSpec(name="v", type="map"))


@given(TEXT)
def test_a_string_is_one_shell_word(value):
    assert shlex.split(render.render_command(ECHO_STR, {"v": value})) == ["echo", value]


@given(st.lists(TEXT, max_size=6))
def test_a_list_is_one_word_per_item(value):
    assert shlex.split(render.render_command(ECHO_SEQ, {"v": value})) == ["echo", *value]


@given(st.dictionaries(TEXT, JSON_VALUES, max_size=5))
def test_a_map_is_one_word_of_json(value):
    words = shlex.split(render.render_command(ECHO_MAP, {"v": value}))
    assert words == ["echo", json.dumps(value, ensure_ascii=False, separators=(",", ":"))]
    assert json.loads(words[1]) == value


def run_sh(command: str, env: dict | None = None) -> bytes:
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, check=True, env=env,
                          timeout=30).stdout


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT)
def test_a_real_shell_prints_the_value_exactly(value):
    job = make_job("printf '%s' {{ v }}", VarSpec(name="v"))
    assert run_sh(render.render_command(job, {"v": value})) == value.encode("utf-8")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TEXT, max_size=5), TEXT)
def test_a_real_shell_gets_appended_args_and_environment_exactly(items, opt):
    job = make_job("printf '%s\\0'", VarSpec(name="items", type="seq"), VarSpec(name="o", option=True))
    params = {"items": items, "o": opt}
    out = run_sh(render.render_command(job, params))
    assert out.split(b"\0")[:-1] == [i.encode() for i in items] + [b"--o", opt.encode()]
    env = render.var_environment(params)
    assert run_sh('printf "%s" "$OVERSEER_VAR_O"', env) == opt.encode()


def test_template_syntax_in_values_stays_literal():
    job = make_job("printf '%s|' {{ a }} {{ b }}", VarSpec(name="a"), VarSpec(name="b", type="seq"))
    params = {"a": "{{ 7*7 }}", "b": ["{% for x in y %}", "{# c #}", "$(echo pwned)"]}
    assert run_sh(render.render_command(job, params)) == b"{{ 7*7 }}|{% for x in y %}|{# c #}|$(echo pwned)|"


def test_scalars_and_none():
    specs = [VarSpec(name=n, type=t) for n, t in [("b", "bool"), ("i", "int"), ("f", "float"), ("z", "null")]]
    job = make_job("x {{ b }} {{ i }} {{ f }} {{ z }}", *specs)
    assert render.render_command(job, {"b": False, "i": -3, "f": 0.5, "z": None}) == "x false -3 0.5 ''"


def test_unused_vars_are_appended_positional_first_then_options():
    job = make_job(
        "cmd {{ used }}",
        VarSpec(name="opt", option=True),
        VarSpec(name="pos"),
        VarSpec(name="used"),
        VarSpec(name="many", type="seq"),
        VarSpec(name="flag", type="bool", option=True),
        VarSpec(name="off", type="bool", option=True),
        VarSpec(name="nothing", type="null", option=True),
        VarSpec(name="tags", type="seq", option=True),
        VarSpec(name="cfg", type="map"),
        VarSpec(name="absent", required=False),
    )
    params = {"opt": "o v", "pos": "-p", "used": "u", "many": ["m1", "m 2"], "flag": True, "off": False,
              "nothing": None, "tags": ["t1", "t2"], "cfg": {"k": 1}}
    command = render.render_command(job, params)
    assert shlex.split(command) == ["cmd", "u", "-p", "m1", "m 2", '{"k":1}', "--opt", "o v", "--flag",
                                    "--tags", "t1", "--tags", "t2"]


def test_multi_line_command_gets_args_on_its_last_line():
    job = make_job("cd /tmp\nls {{ a }}\n", VarSpec(name="a"), VarSpec(name="b"))
    assert render.render_command(job, {"a": "x", "b": "y z"}) == "cd /tmp\nls x 'y z'"


def test_absent_optional_var_renders_nothing_and_null_an_empty_word():
    job = make_job("cmd {{ a }}", VarSpec(name="a", required=False))
    assert shlex.split(render.render_command(job, {})) == ["cmd"]
    job = make_job("cmd", VarSpec(name="a", type="null"))
    assert shlex.split(render.render_command(job, {"a": None})) == ["cmd", ""]


def test_jinja_features_are_quoted_too():
    source = "{% for x in xs %}[{{ x | upper }}]{% endfor %} {{ xs | join(' ') }} {% raw %}${#A}{% endraw %}"
    job = make_job(source, VarSpec(name="xs", type="seq"))
    assert render.render_command(job, {"xs": ["a b", "c"]}) == "['A B'][C] 'a b c' ${#A}"


def test_script_argv_and_display(tmp_path: Path):
    job = make_job(None, VarSpec(name="a"), VarSpec(name="n", type="int", option=True), script="sub/run.sh")
    params = {"a": "x y", "n": 2}
    argv = render.script_argv(job, params, tmp_path)
    assert argv == [str(tmp_path / "scripts/sub/run.sh"), "x y", "--n", "2"]
    assert render.render_command(job, params) == "scripts/sub/run.sh 'x y' --n 2"
    assert render.render_command(make_job(None), {}) == ""


def test_var_environment():
    params = {"name": "v", "flag": True, "n": 3, "none": None, "l": ["a", 1], "m": {"k": "é"}}
    env = render.var_environment(params)
    assert env == {"OVERSEER_VAR_NAME": "v", "OVERSEER_VAR_FLAG": "true", "OVERSEER_VAR_N": "3",
                   "OVERSEER_VAR_NONE": "", "OVERSEER_VAR_L": '["a",1]', "OVERSEER_VAR_M": '{"k":"é"}'}


@pytest.mark.parametrize("source", [
    "{{ v.append(1) }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ v.__init__.__globals__ }}",
])
def test_sandbox_refuses_unsafe_access_at_render(source):
    job = make_job(source, VarSpec(name="v", type="seq"), name="unsafe")
    with pytest.raises(ParamError, match="job 'unsafe': rendering the command failed"):
        render.render_command(job, {"v": []})


def test_templates_compile_once_not_per_render(monkeypatch):
    compiles = []
    original = sandbox.ENV.compile

    def counting(*args, **kwargs):
        compiles.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(sandbox.ENV, "compile", counting)
    job = make_job("echo compile-once-probe {{ v }}", VarSpec(name="v"))
    for i in range(50):
        assert render.render_command(job, {"v": str(i)}) == f"echo compile-once-probe {i}"
    assert len(compiles) == 1


def test_check_template_names_and_errors():
    assert templates.check_template("a {{ x }} b {{y}} }} {") == {"x", "y"}
    assert templates.check_template("{% for i in items %}{{ i }}{{ loop.index }}{% endfor %}") == {"items"}
    assert templates.check_template("{{ range(3) | list }}") == {"range"}
    with pytest.raises(ValueError, match="line 2"):
        templates.check_template("ok\n{{ x ")
    with pytest.raises(ValueError, match="no filter named 'nope'"):
        templates.check_template("{% if 0 %}{{ x | nope }}{% endif %}")
    with pytest.raises(ValueError, match="no test named 'weird'"):
        templates.check_template("{{ x is weird }}")
    with pytest.raises(ValueError, match="line 1"):
        templates.check_template("echo ${#PATH}")
