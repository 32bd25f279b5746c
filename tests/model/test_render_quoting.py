"""No template turns a value into shell code: every output is written for its place in the shell text.

The attacks are run through real shells (dash, Debian's /bin/sh, and bash, which other systems
have as /bin/sh): a value that tries to run ``touch CANARY`` must leave no such file, whatever the
template does with it, and where the renderer takes a use, the shell must get the value exactly.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from overseer.exceptions import ParamError
from overseer.model import render, sandbox, templates
from overseer.model.job import Job
from overseer.model.shell_context import (
    AFTER_BACKSLASH,
    AFTER_DOLLAR,
    IN_BACKQUOTES,
    IN_COMMENT,
    IN_HEREDOC,
    IN_PARAM,
    MARK,
    UNSURE,
    Context,
    classify,
)
from overseer.model.vars import VarSpec
from overseer.repo.load import load_repository

SHELLS = ["/bin/sh", *(sh for sh in ("/bin/dash", "/bin/bash") if Path(sh).exists())]
# Field splitting of a value that stays data cannot make "touch CANARY": ${IFS} only expands as code.
PAYLOADS = [
    "$(touch${IFS}CANARY)", "`touch${IFS}CANARY`", "';touch${IFS}CANARY;'", '";touch${IFS}CANARY;"',
    "\ntouch${IFS}CANARY\n", "'\ntouch${IFS}CANARY\n'", ")touch${IFS}CANARY(", "\\';touch${IFS}CANARY;#",
    "$((1))$(touch${IFS}CANARY)", "x\nEOF\ntouch${IFS}CANARY\n", "\\", "'", '"', "$", "`",
]


def make_job(command: str, *types: tuple[str, str], name: str = "j") -> Job:
    specs = tuple(VarSpec(name=n, type=t) for n, t in types) or (VarSpec(name="v"),)
    return Job(name=name, file=f"{name}.yml", command=command, script=None, timeout=None, vars=specs,
               schedule=(), description=None, hooks=MappingProxyType({}), env=MappingProxyType({}),
               max_concurrent=None, definition={})


def accepted(command: str, types: dict[str, str]) -> bool:
    """Whether the job file would validate (the checks the loader makes of a command)."""
    try:
        names = templates.check_template(command)
        if names - set(types) - sandbox.template_globals():
            return False
        templates.check_quoting(command, types)
    except ValueError:
        return False
    return True


def run_all_shells(command: str, cwd: Path) -> list[subprocess.CompletedProcess]:
    return [subprocess.run([sh, "-c", command], cwd=cwd, capture_output=True, stdin=subprocess.DEVNULL,
                           timeout=20) for sh in SHELLS]


def canary_free(template: str, value, tmp_path: Path) -> None:
    """The value cannot run code through ``template``: refused, or run with no CANARY left, by each
    shell as the one that runs commands (render.SHELL, which the syntax check also asks)."""
    types = {"v": "seq" if isinstance(value, list) else "str"}
    if not accepted(template, types):
        event("refused by validation")
        return
    for shell in SHELLS:
        saved, render.SHELL = render.SHELL, shell
        try:
            command = render.render_command(make_job(template, ("v", types["v"])), {"v": value})
        except ParamError:
            event("refused at render")
            continue
        finally:
            render.SHELL = saved
        event("run")
        subprocess.run([shell, "-c", command], cwd=tmp_path, capture_output=True, stdin=subprocess.DEVNULL,
                       timeout=20)
        assert not (tmp_path / "CANARY").exists(), f"{template!r} with {value!r} ran in {shell}: {command!r}"


# -- the uses the security review broke, now inert and exact ---------------------------------------

@pytest.mark.parametrize("template, expected", [
    ('printf %s "hello {{ v }}"', "hello {}"),
    ("printf %s 'hello {{ v }}'", "hello {}"),
    ('printf %s "a{{ v }}b{{ v }}c"', "a{0}b{0}c"),
    ("printf %s 'x'{{ v }}\"y\"", "x{}y"),
    ('printf %s "$(printf %s {{ v }})"', "{}"),
    ('printf %s "{{ v | safe }}"', "{}"),
    ("printf %s '{{ [v] | first }}'", "{}"),
    ("{% autoescape false %}printf %s '{{ v }}'{% endautoescape %}", "{}"),
    ("{% set x %}<{{ v }}>{% endset %}printf %s \"{{ x }}\"", "<{}>"),
    ("{% macro m(a) %}[{{ a }}]{% endmacro %}printf %s '{{ m(v) }}'", "[{}]"),
])
@pytest.mark.parametrize("value", PAYLOADS)
def test_a_value_inside_quotes_is_printed_exactly_and_runs_nothing(template, expected, value, tmp_path):
    command = render.render_command(make_job(template), {"v": value})
    for result in run_all_shells(command, tmp_path):
        assert result.returncode == 0, (command, result.stderr)
        # a command substitution drops trailing newlines, as it does of any output
        assert result.stdout.decode() == expected.format(value.rstrip("\n") if "$(" in template else value)
    assert not (tmp_path / "CANARY").exists()


@pytest.mark.parametrize("template", [
    "echo {{ v | e }}", "echo '{{ v | escape }}'", 'echo "{{ v | forceescape }}"',
    "{% autoescape true %}echo '{{ v }}' \"{{ v }}\" {{ v }}{% endautoescape %}",
    "echo \"{{ [v, v] | join(',') }}\"", "echo '{{ v | tojson }}'", 'echo "{{ v | tojson }}"',
    "echo {{ v ~ v }}", "echo '{{ v | replace(\"x\", \"y\") }}'", "echo \"{{ v | upper }}\" '{{ v|lower }}'",
    "echo {% if v %}'{{ v }}'{% endif %}", "{% for c in [v] %}echo \"{{ c }}\";{% endfor %}",
])
@pytest.mark.parametrize("value", PAYLOADS)
def test_filters_markup_and_autoescape_never_unquote(template, value, tmp_path):
    command = render.render_command(make_job(template), {"v": value})
    run_all_shells(command, tmp_path)
    assert not (tmp_path / "CANARY").exists(), command


@pytest.mark.parametrize("template, fragment", [
    ("echo hi # {{ v }}", "var 'v' is used inside a comment"),
    ("cat <<EOF\n{{ v }}\nEOF", "var 'v' is used inside a here-document"),
    ("cat <<'EOF'\nx {{ v }}\nEOF", "var 'v' is used inside a here-document"),
    ("echo `echo {{ v }}`", "var 'v' is used inside `...`"),
    ("echo ${X:-{{ v }}}", "var 'v' is used inside ${...}"),
    ("echo ${{ v }}", "var 'v' is used right after a $"),
    ('echo "\\{{ v }}"', "var 'v' is used right after a backslash"),
    ("echo $'a{{ v }}'", "var 'v' is used after shell syntax"),
    ("echo $(( {{ v }} + 1 ))", "var 'v' (type str) is used inside shell arithmetic"),
    ("echo hi # note", "the command ends inside a comment"),
])
def test_a_place_no_value_can_be_quoted_is_a_validation_error_naming_the_var(tmp_path, template, fragment):
    types = {"v": "str"} if "{{ v }}" in template else {"v": "str", "w": "str"}
    with pytest.raises(ValueError) as caught:
        templates.check_quoting(template, types)
    assert fragment in str(caught.value)
    # and the loader reports it against the file, with the key
    (tmp_path / "job.yml").write_text(_yaml_job(template, types))
    _, errors = load_repository(tmp_path)
    assert dict(errors)["job.yml"].startswith("command: ") and fragment in dict(errors)["job.yml"]


def _yaml_job(command: str, types: dict[str, str]) -> str:
    import yaml
    return yaml.safe_dump({"command": command, "vars": [{"name": n, "type": t} for n, t in types.items()]})


def test_filter_and_call_blocks_are_validation_errors():
    for source in ["{% filter replace('x', v) %}x{% endfilter %}",
                   "{% call dict(a=v) %}{% endcall %}", "{% call namespace(x=v) %}{% endcall %}"]:
        with pytest.raises(ValueError, match="block cannot be used in a command"):
            templates.check_template(source)


def test_a_refused_place_behind_control_flow_is_refused_at_render_naming_the_var(tmp_path):
    job = make_job("echo {% if v %}# {{ v }}{% endif %}")
    assert accepted(job.command, {"v": "str"})  # its layout depends on the value: judged at render
    with pytest.raises(ParamError, match="job 'j': var 'v' is used inside a comment"):
        render.render_command(job, {"v": "\ntouch CANARY"})
    assert render.render_command(job, {"v": ""}) == "echo "


def test_an_int_goes_into_arithmetic_as_a_number_and_nothing_else_does():
    job = make_job("echo $(( {{ n }} * 2 )) $(( {{ n }} + 1 ))", ("n", "int"))
    assert templates.check_quoting(job.command, {"n": "int"}) is None
    assert subprocess.run(["/bin/sh", "-c", render.render_command(job, {"n": -4})], capture_output=True,
                          check=True).stdout == b"-8 -3\n"
    text = make_job("echo $(( {% if s %}{{ s }}{% endif %} ))")
    with pytest.raises(ParamError, match="var 's' is used inside shell arithmetic, where only an int"):
        render.render_command(text, {"s": "1+$(touch CANARY)"})


def test_appended_vars_go_after_a_command_that_ends_as_a_word(tmp_path):
    job = make_job('printf "%s|" "{{ a }}"', ("a", "str"), ("b", "str"))
    command = render.render_command(job, {"a": "1 $(x)", "b": "2 '3'"})
    out = subprocess.run(["/bin/sh", "-c", command], capture_output=True, check=True).stdout
    assert out == b"1 $(x)|2 '3'|"
    hidden = make_job("echo {% if a %}'{% endif %}", ("a", "str"), ("b", "str"))
    with pytest.raises(ParamError, match=r"the command ends inside '...', so the vars it does not use \(b\)"):
        render.render_command(hidden, {"a": "x", "b": "\n touch CANARY"})


@pytest.mark.parametrize("shell", SHELLS)
def test_a_value_with_a_newline_is_refused_in_a_command_that_is_not_valid_shell(shell, monkeypatch, tmp_path):
    monkeypatch.setattr(render, "SHELL", shell)
    job = make_job("x=((", ("v", "str"))  # bash, after this error, would read on at the value's 2nd line
    with pytest.raises(ParamError, match=r"the command is not valid shell \(/bin/.*-n: .*\), so no value "
                                         "holding a newline"):
        render.render_command(job, {"v": "'\ntouch${IFS}CANARY\n'"})
    assert render.render_command(job, {"v": "one line"}) == "x=(( 'one line'"   # no newline: not asked
    fine = make_job("printf %s {{ v }}", ("v", "str"))
    assert subprocess.run([shell, "-c", render.render_command(fine, {"v": "a\nb"})], capture_output=True,
                          check=True).stdout == b"a\nb"


def test_the_bundled_countdown_example_renders_its_arithmetic():
    import yaml

    from overseer.embedded import EXAMPLES
    definition = yaml.safe_load((Path(EXAMPLES) / "countdown.yml").read_text())
    job = make_job(definition["command"], ("seconds", "int"))
    command = render.render_command(job, {"seconds": 4})
    command = command.replace("event half-way", "echo half-way").replace("sleep 1", "true")
    out = subprocess.run(["/bin/sh", "-c", command], capture_output=True, check=True)
    assert out.stdout.decode().split("\n") == ["4", "3", "2", "half-way 2 seconds left", "1", "liftoff", ""]


# -- the lexer ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, places", [
    ("echo \0 x\0y", [Context.WORD, Context.WORD]),
    ("echo '\0' \"\0\" '\"\0'", [Context.SINGLE, Context.DOUBLE, Context.SINGLE]),
    ("echo \"$(echo \0 \"\0\" '\0')\" \0", [Context.WORD, Context.DOUBLE, Context.SINGLE, Context.WORD]),
    ("a=$(echo ')' \0) \0", [Context.WORD, Context.WORD]),
    ("echo a#b\0 # \0\n\0", [Context.WORD, IN_COMMENT, Context.WORD]),
    ("cat <<-EOF; echo \0\n\t\0\n\tEOF\n\0", [Context.WORD, IN_HEREDOC, Context.WORD]),
    ("cat <<< \0", [Context.WORD]),
    ("echo `\0` \\\0 $\0 ${x:-\0}", [IN_BACKQUOTES, AFTER_BACKSLASH, AFTER_DOLLAR, IN_PARAM]),
    ("echo $((\0+1)) $[\0] ((\0)) \0", [Context.ARITH, Context.ARITH, Context.ARITH, Context.WORD]),
    ("echo $(case x in x) echo \0;; esac) \0", [UNSURE, UNSURE]),
    ("echo $(cat <<EOF\n\0\nEOF\n) \0", [UNSURE, UNSURE]),
    ("echo ${x:-'}'} \0", [UNSURE]),
    ("echo $'\\'' \0", [UNSURE]),
    ("cat <<EOF\nx\\\nEOF\n\0\nEOF\n", [UNSURE]),
    ("echo <(echo \0) \"$#\0\"", [Context.WORD, Context.DOUBLE]),
])
def test_classify(text, places):
    assert list(classify(text)) == places
    assert text.count(MARK) == len(places)


# -- templates, generated ------------------------------------------------------------------------------

FRAGMENTS = st.sampled_from([
    "{{ v }}", "{{ v }}", "{{ v }}", "{{ v | e }}", "{{ v | upper }}", "{{ v ~ 'x' }}",
    "{{ [v, v] | join(' ') }}", "{{ v | tojson }}", "{% if v %}", "{% endif %}", "{% for c in [v] %}",
    "{% endfor %}",
    " ", " ", "\n", "'", "'", '"', '"', "\\", "$", "$(", "(", ")", "`", "#", ";", "|", "&&", "<<EOF\n",
    "EOF\n", "<<-'EOF'\n", "\tEOF\n", "${x:-", "}", "$((", "))", "$'", '$"', "<<<", "((", "$[", "]", "<(",
    "case x in x) ", ";; esac", "echo ", "printf %s ", "x=", "a", "{", "~", "*", "=",
])


OUTPUTS = st.sampled_from(["{{ v }}", "{{ v | e }}", "{{ v | safe }}", "{{ v ~ v }}", "{{ v | tojson }}",
                           "{{ [v, 'x'] | join('-') }}", "{{ v | first }}", "{{ v | forceescape }}"])
WORDS = st.sampled_from(["a", "x=", "printf %s ", "echo", " ", "-", "/", "~", "*", "$HOME", "$#", "\\n", "{",
                         "}"])


# Shell and Jinja2 constructs around a piece of template ("@" is the piece).
WRAPPERS = ["'@'", '"@"', "$(@)", "`@`", "${x:-@}", "$(( @ ))", "# @\n", "cat <<EOF\n@\nEOF\n",
            "cat <<'EOF'\n@\nEOF\n", "\\@", "$@", "{% if v %}@{% endif %}", "{% for c in [v] %}@{% endfor %}",
            "{% set s %}@{% endset %}{{ s }}", "$'@'", "(( @ ))", "<(@)", "$(case x in x) @;; esac)"]


def _wrapped(inner):
    return st.one_of(
        st.tuples(inner, st.sampled_from([" ", ";", "\n", " | cat ", " && ", "=", ""]), inner).map("".join),
        st.tuples(st.sampled_from(WRAPPERS), inner).map(lambda pair: pair[0].replace("@", pair[1])),
    )


SHELL_TEXT = st.recursive(st.one_of(OUTPUTS, WORDS), _wrapped, max_leaves=8)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(template=SHELL_TEXT.map(lambda t: "printf %s " + t), value=st.sampled_from(PAYLOADS))
def test_no_structured_template_runs_a_value(template, value, tmp_path_factory):
    canary_free(template, value, tmp_path_factory.mktemp("sh"))


@pytest.mark.slow
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(template=st.lists(FRAGMENTS, min_size=1, max_size=14).map("".join), value=st.sampled_from(PAYLOADS))
def test_no_generated_template_runs_a_value(template, value, tmp_path_factory):
    canary_free(template, value, tmp_path_factory.mktemp("sh"))


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(template=st.lists(FRAGMENTS, min_size=1, max_size=10).map("".join),
       value=st.lists(st.sampled_from(PAYLOADS), min_size=1, max_size=3))
def test_no_generated_template_runs_a_list_value(template, value, tmp_path_factory):
    canary_free(template, value, tmp_path_factory.mktemp("sh"))

