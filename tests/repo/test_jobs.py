"""The job repository model: discovery, parsing, every validation rule, with real files in tmp_path."""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from overseer.exceptions import JobDefinitionError
from overseer.model.job import Job
from overseer.model.vars import MISSING, VarSpec
from overseer.repo.load import discover, job_name_for, load_repository, parse_job


def write(root: Path, files: dict) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not isinstance(content, str):
            content = json.dumps(content) if rel.endswith(".json") else yaml.safe_dump(content)
        path.write_text(content)
        if rel.startswith("scripts/"):
            path.chmod(0o755)
    return root


def errors_of(root: Path) -> dict[str, str]:
    jobs, errors = load_repository(root)
    assert errors == sorted(errors)
    return dict(errors)


def problem(tmp_path: Path, content, name: str = "job.yml", extra: dict | None = None) -> str:
    """The one error reported for ``name`` holding ``content``."""
    write(tmp_path, {name: content, **(extra or {})})
    jobs, errors = load_repository(tmp_path)
    assert job_name_for(name) not in jobs
    found = dict(errors)
    assert name in found, errors
    return found[name]


# -- names and discovery --------------------------------------------------------------------------

@pytest.mark.parametrize("path, name", [
    ("deploy.yml", "deploy"), ("team/backup.yaml", "team.backup"), ("a/b/c.json", "a.b.c"),
    ("x.txt", None), ("bin/tool.yml", None), ("scripts/s.yml", None), (".ci/x.yml", None),
    ("team/.hidden/x.yml", None), (".gitlab-ci.yml", None), ("team/bin/x.yml", "team.bin.x"),
    ("bin.yml", "bin"), (".yml", None), ("a.YML", None),
])
def test_job_name_for(path, name):
    assert job_name_for(path) == name


def test_discover_skips_bin_scripts_and_dot_dirs(tmp_path):
    write(tmp_path, {"a.yml": "{}", "t/b.yaml": "{}", "t/c.json": "{}", "bin/x.yml": "", "scripts/y.yml": "",
                     ".git/z.yml": "", ".github/w.yml": "", "README.md": "", "t/notes.txt": ""})
    assert discover(tmp_path) == ["a.yml", "t/b.yaml", "t/c.json"]


# -- a valid job ----------------------------------------------------------------------------------

FULL = """\
- command: my_command {{ positional_var }} --some-opt {{ some_opt }}
  description: the example
  timeout: 600
  max_concurrent: 2
  vars:
    - name: positional_var
      type: str
      default: here
      description: where
    - name: some_opt
      type: enum
      option: yes
      values: [a, b, c]
      default: b
    - name: when
      type: timestamp
      required: false
  schedule:
    - time: 2026-01-01T00:00:00Z
      frequency: "*/5 * * * *"
      priority: 0
    - frequency: 3600
      timezone: Europe/Berlin
  hooks:
    fail: https://hooks.example/fail
    "*": [http://127.0.0.1:9/all]
  env:
    MODE: fast
    LEVEL: 3
    DEBUG: false
"""


def test_full_job(tmp_path):
    write(tmp_path, {"team/deploy.yml": FULL})
    jobs, errors = load_repository(tmp_path)
    assert errors == []
    job = jobs["team.deploy"]
    assert isinstance(job, Job) and job.file == "team/deploy.yml" and job.commit is None
    assert job.command.startswith("my_command") and job.script is None
    assert job.timeout == 600.0 and job.max_concurrent == 2 and job.description == "the example"
    assert job.vars[0] == VarSpec(name="positional_var", default="here", required=False, description="where")
    assert job.vars[1].values == ("a", "b", "c") and job.vars[1].option is True and job.vars[1].default == "b"
    assert job.vars[2].default is MISSING and job.vars[2].required is False
    first, second = job.schedule
    assert first.time == datetime(2026, 1, 1, tzinfo=timezone.utc) and first.frequency == "*/5 * * * *"
    assert second.period == 3600.0 and second.timezone == "Europe/Berlin" and second.index == 1
    assert dict(job.hooks) == {"fail": ("https://hooks.example/fail",), "*": ("http://127.0.0.1:9/all",)}
    assert dict(job.env) == {"MODE": "fast", "LEVEL": "3", "DEBUG": "false"}
    assert json.loads(json.dumps(job.definition))["schedule"][0]["time"] == "2026-01-01T00:00:00+00:00"
    assert job.definition["vars"][1]["option"] is True


def test_minimal_jobs_and_json(tmp_path):
    write(tmp_path, {"empty.yml": "{}", "desc.json": {"description": "x"}, "cmd.yaml": "command: 'true'"})
    jobs, errors = load_repository(tmp_path)
    assert errors == [] and sorted(jobs) == ["cmd", "desc", "empty"]
    assert jobs["empty"].command is None and jobs["empty"].vars == () and dict(jobs["empty"].env) == {}


def test_parse_job_takes_data(tmp_path):
    job = parse_job(tmp_path, "x/y.json", b'{"command": "echo {{ a }}", "vars": [{"name": "a"}]}')
    assert job.name == "x.y" and job.vars[0].required is True


def test_a_broken_file_leaves_the_others_working(tmp_path):
    write(tmp_path, {"good.yml": {"command": "true"}, "bad.yml": "command: [unclosed", "z.yml": {"bogus": 1}})
    jobs, errors = load_repository(tmp_path)
    assert list(jobs) == ["good"] and [f for f, _ in errors] == ["bad.yml", "z.yml"]


# -- file-level problems --------------------------------------------------------------------------

def test_unknown_top_level_key(tmp_path):
    assert problem(tmp_path, {"comand": "x"}) == "unknown key 'comand' (did you mean 'command'?)"


def test_unknown_var_and_schedule_keys(tmp_path):
    assert problem(tmp_path, {"vars": [{"name": "a", "tpye": "int"}]}).startswith(
        "vars[0] (a): unknown key 'tpye'")
    assert "schedule[0]: unknown key 'freq'" in problem(tmp_path, {"schedule": [{"freq": 60}]})


def test_command_and_script_together(tmp_path):
    message = problem(tmp_path, {"command": "x", "script": "s.sh"}, extra={"scripts/s.sh": "#!/bin/sh\n"})
    assert "command and script" in message


def test_script_forms(tmp_path):
    write(tmp_path, {"scripts/deploy.sh": "#!/bin/sh\n", "scripts/sub/x.sh": "#!/bin/sh\n",
                     "a.yml": {"script": "deploy.sh"}, "b.yml": {"script": "scripts/sub/x.sh"},
                     "c.yml": {"script": "sub/../deploy.sh"}})
    jobs, errors = load_repository(tmp_path)
    assert errors == []
    assert [jobs[n].script for n in "abc"] == ["deploy.sh", "sub/x.sh", "deploy.sh"]


@pytest.mark.parametrize("script, fragment", [
    ("../job.yml", "'../job.yml' is outside scripts/"),
    ("sub/../../other.sh", "'sub/../../other.sh' is outside scripts/"),
    ("/bin/sh", "'/bin/sh' must be a path relative to scripts/"),
    ("missing.sh", "'missing.sh' does not exist under scripts/"),
    ("plain.sh", "'plain.sh' is not executable"),
    ("sub", "'sub' is not a regular file"),
    ("", "'' is not a path"),
    (5, "5 is not a path"),
])
def test_script_problems(tmp_path, script, fragment):
    write(tmp_path, {"other.sh": "#!/bin/sh\n", "scripts/sub/x.sh": "#!/bin/sh\n"})
    (tmp_path / "scripts/plain.sh").write_text("#!/bin/sh\n")
    message = problem(tmp_path, {"script": script})
    assert message.startswith("script: ") and fragment in message


def test_script_through_a_symlink_out_of_scripts(tmp_path):
    write(tmp_path, {"tools/evil.sh": "#!/bin/sh\n"})
    (tmp_path / "tools/evil.sh").chmod(0o755)
    (tmp_path / "scripts").mkdir()
    os.symlink("../tools/evil.sh", tmp_path / "scripts/link.sh")
    assert problem(tmp_path, {"script": "link.sh"}) == "script: 'link.sh' is outside scripts/"


def test_symlinks_leaving_the_tree_are_errors_anywhere(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "job.yml").write_text("command: 'true'\n")
    root = write(tmp_path / "repo", {"ok.yml": {"command": "true"}, "bin/.keep": "", "scripts/.keep": ""})
    os.symlink("../outside/job.yml", root / "escape.yml")
    os.symlink(str(outside), root / "bin/tools")
    os.symlink("../../outside/job.yml", root / "scripts/run.sh")
    os.symlink("ok.yml", root / "alias.yml")                  # inside the tree: fine
    os.symlink("/etc/passwd", root / "team.yml")             # absolute: never inside a snapshot
    jobs, errors = load_repository(root)
    assert sorted(jobs) == ["alias", "ok"]
    assert [f for f, _ in errors] == ["bin/tools", "escape.yml", "scripts/run.sh", "team.yml"]
    assert dict(errors)["escape.yml"] == "symlink to '../outside/job.yml' leaves the repository"


def test_duplicate_names_are_errors_for_both_files(tmp_path):
    write(tmp_path, {"a.yml": {"command": "true"}, "a.json": {"command": "true"},
                     "t/x.yml": {}, "t.x.yaml": {}, "b.yml": {}})
    jobs, errors = load_repository(tmp_path)
    assert list(jobs) == ["b"]
    assert dict(errors) == {
        "a.json": "job name 'a' is also given by a.yml", "a.yml": "job name 'a' is also given by a.json",
        "t.x.yaml": "job name 't.x' is also given by t/x.yml",
        "t/x.yml": "job name 't.x' is also given by t.x.yaml"}


@pytest.mark.parametrize("path", ["bad name.yml", "_x.yml", "-x.yml", "team/we!rd.yml"])
def test_invalid_job_names(tmp_path, path):
    message = problem(tmp_path, {"command": "true"}, name=path)
    assert message.startswith(f"job name {job_name_for(path)!r} must match")


def test_list_forms(tmp_path):
    write(tmp_path, {"one.yml": "- command: 'true'\n"})
    assert "one" in load_repository(tmp_path)[0]
    assert "not a list of 2 items" in problem(tmp_path, "- command: a\n- command: b\n", name="two.yml")
    assert "not a list of 0 items" in problem(tmp_path, "[]\n", name="none.yml")
    assert "not str" in problem(tmp_path, "just text\n", name="text.yml")
    assert "the file is empty" in problem(tmp_path, "", name="empty.yml")


def test_broken_yaml_names_the_line(tmp_path):
    message = problem(tmp_path, "command: ok\nvars: [\n  - name: a\n")
    assert message.startswith("invalid YAML:") and "line" in message


def test_python_tags_are_refused(tmp_path):
    message = problem(tmp_path, "command: !!python/object/apply:os.system ['touch pwned']\n")
    assert message.startswith("invalid YAML:") and "python/object/apply:os.system" in message
    assert not (Path.cwd() / "pwned").exists()


def test_duplicate_keys_are_refused(tmp_path):
    assert "duplicate key 'command'" in problem(tmp_path, "command: a\ncommand: b\n")
    assert "duplicate key 'command'" in problem(tmp_path, '{"command": "a", "command": "b"}', name="j.json")


def test_broken_json_and_bad_bytes(tmp_path):
    assert problem(tmp_path, '{"command": }', name="j.json").startswith("invalid JSON on line 1")
    (tmp_path / "bin.yml").write_bytes(b"command: \xff\xfe\n")
    assert "invalid YAML" in errors_of(tmp_path)["bin.yml"]


# -- templates ------------------------------------------------------------------------------------

def test_template_syntax_error_names_the_line(tmp_path):
    message = problem(tmp_path, {"command": "echo ok\necho {{ a ", "vars": [{"name": "a"}]})
    assert message.startswith("command: template syntax error on line 2")


def test_template_unknown_filter_and_undeclared_name(tmp_path):
    assert problem(tmp_path, {"command": "echo {{ a | shout }}", "vars": [{"name": "a"}]}) \
        == "command: template error on line 1: no filter named 'shout'"
    assert problem(tmp_path, {"command": "echo {{ positinal }}", "vars": [{"name": "positional"}]}) \
        == "command: the template uses 'positinal', which is not a declared var"


def test_command_type(tmp_path):
    assert problem(tmp_path, {"command": ["echo", "x"]}).startswith("command: must be a non-empty string")


# -- vars -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("var, expected", [
    ({"name": "o", "type": "enum"}, "vars[0] (o): values must be a list for type enum"),
    ({"name": "o", "type": "enum", "values": []}, "vars[0] (o): values must be a list for type enum"),
    ({"name": "o", "type": "enum", "values": [[1]]}, "vars[0] (o): enum value [1] is not a scalar"),
    ({"name": "o", "type": "enum", "values": ["a", "a"]}, "vars[0] (o): values repeat an entry"),
    ({"name": "o", "values": ["a"]}, "vars[0] (o): values are only for type enum, not str"),
    ({"name": "o", "type": "integer"}, "vars[0] (o): type 'integer' is not one of null, bool"),
    ({"name": "n", "type": "int", "default": "abc"}, "vars[0] (n): default 'abc' does not fit type int"),
    ({"name": "s", "default": 5}, "vars[0] (s): default 5 does not fit type str"),
    ({"name": "e", "type": "enum", "values": ["a"], "default": "z"}, "vars[0] (e): default 'z' does not fit"),
    ({"name": "o", "option": "yes"}, "vars[0] (o): option must be true or false, not 'yes'"),
    ({"name": "o", "required": "no"}, "vars[0] (o): required must be true or false, not 'no'"),
    ({"name": "o", "description": 5}, "vars[0] (o): description must be text"),
    ({"name": "1abc"}, "vars[0] (1abc): name '1abc' must match"),
    ({"name": "a-b"}, "vars[0] (a-b): name 'a-b' must match"),
    ({"name": "range"}, "vars[0] (range): name 'range' is taken by a template function"),
    ({"type": "int"}, "vars[0]: name None must match"),
    ("name", "vars[0]: must be a mapping"),
])
def test_var_problems(tmp_path, var, expected):
    assert problem(tmp_path, {"vars": [var]}).startswith(expected)


def test_var_list_problems(tmp_path):
    assert problem(tmp_path, {"vars": {"name": "a"}}).startswith("vars: must be a list")
    assert problem(tmp_path, {"vars": [{"name": "a"}, {"name": "a"}]}) == "vars[1] (a): name repeats var 'a'"
    assert problem(tmp_path, {"vars": [{"name": "a"}, {"name": "A"}]}) \
        == "vars[1] (A): name differs only in case from var 'a'"


def test_var_defaults_are_coerced(tmp_path):
    write(tmp_path, {"j.yml": "vars:\n - {name: t, type: timestamp, default: 2026-01-01 10:00:00+02:00}\n"
                              " - {name: s, type: set, default: [b, a, b]}\n"
                              " - {name: o, default: null}\n - {name: z, type: null, default: null}\n"})
    t, s, o, z = load_repository(tmp_path)[0]["j"].vars
    assert t.default == "2026-01-01T08:00:00Z" and s.default == ["b", "a"]
    assert o.default is MISSING and o.required is False
    assert z.default is None and z.required is False


# -- schedules ------------------------------------------------------------------------------------

def test_schedule_errors_name_the_entry_and_key(tmp_path):
    assert problem(tmp_path, {"schedule": [{"frequency": 60}, {"frequency": "61 * * * *"}]}).startswith(
        "schedule[1].frequency: '61 * * * *' is not a valid crontab string")
    assert problem(tmp_path, {"schedule": "*/5 * * * *"}) == "schedule: must be a list of entries, not str"


def test_scheduled_job_needs_defaults_for_required_vars(tmp_path):
    doc = {"command": "echo {{ a }}", "vars": [{"name": "a"}], "schedule": [{"frequency": 60}]}
    message = problem(tmp_path, doc)
    assert message == "schedule: var 'a' is required and has no default (scheduled runs use the defaults)"
    write(tmp_path, {"job.yml": {"command": "echo {{ a }}", "vars": [{"name": "a", "default": "x"}],
                                 "schedule": {"frequency": 60}}})
    assert len(load_repository(tmp_path)[0]["job"].schedule) == 1


# -- other keys -----------------------------------------------------------------------------------

@pytest.mark.parametrize("doc, expected", [
    ({"timeout": 0}, "timeout: 0 is not a positive number of seconds"),
    ({"timeout": "10"}, "timeout: '10' is not a positive number"),
    ({"timeout": True}, "timeout: True is not"),
    ({"max_concurrent": 1.5}, "max_concurrent: 1.5 is not a positive integer"),
    ({"max_concurrent": 0}, "max_concurrent: 0 is not a positive integer"),
    ({"description": ["x"]}, "description: must be text, not list"),
    ({"hooks": ["http://x"]}, "hooks: must be a mapping of event name to URLs, not list"),
    ({"hooks": {"fail": "ftp://x/y"}}, "hooks.fail: 'ftp://x/y' is not an http(s) URL"),
    ({"hooks": {"fail": [5]}}, "hooks.fail: 5 is not an http(s) URL"),
    ({"hooks": {"fail": {"url": "http://x"}}}, "hooks.fail: must be a URL or a list of URLs"),
    ({"hooks": {"bad event": "http://x"}}, "hooks: 'bad event' is not an event name"),
    ({"env": ["A=1"]}, "env: must be a mapping of names to strings, not list"),
    ({"env": {"A": [1]}}, "env.A: [1] is not a string, number or bool"),
    ({"env": {"A": None}}, "env.A: None is not a string"),
    ({"env": {"1A": "x"}}, "env: '1A' is not a variable name"),
    ({"env": {"OVERSEER_JOB": "x"}}, "env.OVERSEER_JOB: names starting with OVERSEER_ are set by Overseer"),
])
def test_other_key_problems(tmp_path, doc, expected):
    assert problem(tmp_path, doc).startswith(expected)


def test_job_definition_error_is_raised_by_parse_job(tmp_path):
    with pytest.raises(JobDefinitionError, match="unknown key 'x'"):
        parse_job(tmp_path, "a.yml", b"x: 1\n")
    with pytest.raises(JobDefinitionError, match="cannot read the file"):
        parse_job(tmp_path, "missing.yml")


@pytest.mark.slow
def test_ten_thousand_files_load(tmp_path):
    for i in range(100):
        d = tmp_path / f"team{i}"
        d.mkdir()
        for j in range(100):
            (d / f"job{j}.yml").write_text(
                f"command: echo {i} {j} {{{{ who }}}}\nvars:\n  - name: who\n    default: w{j}\n"
                "schedule:\n  - frequency: '*/5 * * * *'\n")
    jobs, errors = load_repository(tmp_path)
    assert errors == [] and len(jobs) == 10_000
    assert jobs["team7.job9"].vars[0].default == "w9"


def test_equal_but_differently_typed_values_are_not_confused(tmp_path):
    """True == 1 == 1.0 in Python: validation caches must still tell them apart."""
    write(tmp_path, {"a.yml": "vars: [{name: x, option: true, default: d}]\n"
                              "schedule: [{frequency: 1, catch_up: true}]\n",
                     "b.yml": "vars: [{name: x, option: 1}]\n",
                     "c.yml": "schedule: [{frequency: 1, catch_up: 1}]\n",
                     "d.yml": "schedule: [{frequency: true}]\n",
                     "e.yml": "schedule: [{frequency: 60, priority: 1.0}]\n",
                     "f.yml": "schedule: [{frequency: 60, priority: 1}]\n"})
    jobs, errors = load_repository(tmp_path)
    assert sorted(jobs) == ["a", "f"]
    assert dict(errors) == {"b.yml": "vars[0] (x): option must be true or false, not 1",
                            "c.yml": "schedule[0].catch_up: 1 is not a bool",
                            "d.yml": "schedule[0].frequency: True is neither a crontab string nor a period",
                            "e.yml": "schedule[0].priority: 1.0 is not an integer"}


def test_yaml_aliases_merge_keys_and_tags(tmp_path):
    write(tmp_path, {"j.yml":
                     "vars:\n  - &v {name: a, type: int, default: 1}\n  - {<<: *v, name: b}\n"
                     "  - {name: c, type: binary, default: !!binary aGVsbG8=}\n"
                     "  - {name: d, type: set, default: !!set {x: null, y: null}}\n"})
    jobs, errors = load_repository(tmp_path)
    assert errors == []
    a, b, c, d = jobs["j"].vars
    assert (a.name, a.default, b.name, b.type, b.default) == ("a", 1, "b", "int", 1)
    assert c.default == "aGVsbG8=" and d.default == ["x", "y"]
    assert jobs["j"].definition["vars"][2]["default"] == "aGVsbG8="


def test_alias_bombs_are_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    assert "more than 200000 nodes" in problem(tmp_path, "\n".join(lines) + "\n")
    assert "nested too deeply" in problem(tmp_path, "vars: &loop [*loop]\n", name="loop.yml")
    deep = problem(tmp_path, "[" * 5000 + "]" * 5000 + "\n", name="deep.yml")   # libyaml's limit, or ours
    assert "maximum nesting depth" in deep or "nested too deeply" in deep


BIG = "9" * 400


@pytest.mark.parametrize("content, fragment", [
    (f"timeout: {BIG}\n", "timeout: a very large integer is not a positive number"),
    ("timeout: " + "9" * 5000 + "\n", "invalid YAML"),
    (f"schedule: [{{frequency: {BIG}}}]\n", "schedule[0].frequency: period 999"),
    (f"vars: [{{name: f, type: float, default: {BIG}}}]\n", "vars[0] (f): default a very large integer"),
    (f"max_concurrent: {BIG}\n", "max_concurrent: a very large integer is not a positive integer"),
])
def test_huge_numbers_are_errors_of_their_file(tmp_path, content, fragment):
    write(tmp_path, {"ok.yml": {"command": "true"}, "job.yml": content})
    jobs, errors = load_repository(tmp_path)
    assert "ok" in jobs and fragment in dict(errors)["job.yml"]


# -- what the fast paths of a load must not change ------------------------------------------------

@pytest.mark.parametrize("name, content", [
    ("plain.yml", "command: echo {{ a }}\nvars: [{name: a, default: x}, {name: n, type: int, default: 3}]\n"
                  "env: {A: b}\ndescription: d\ntimeout: 1.5\n"),
    ("dated.yml", "description: d\nschedule: [{time: 2026-01-01T00:00:00Z, frequency: 60}]\n"),
    ("keys.yml", "description: d\nhooks: {'*': ['http://x/']}\nenv: {A: '1', B: 2, C: true}\n"),
    ("inf.yml", "env: {A: .inf, B: -.inf}\n"),
    ("nan.json", '{"env": {"A": NaN, "B": 1e400, "C": 1.5}}'),
    ("merge.yml", "vars: [{name: a, default: x}, {<<: {type: int}, name: b, default: 2}]\n"),
    ("omap.yml", "vars: [{name: o, type: omap, default: !!omap [{a: 1}, {b: 2}]}]\n"),
    ("set.yml", "vars: [{name: s, type: set, default: !!set {x: null}}]\n"),
])
def test_a_definition_is_the_document_as_json(tmp_path, name, content):
    """A plain document is its own definition; any other is converted, as before."""
    from overseer.repo.documents import jsonable, load_document

    write(tmp_path, {name: content})
    jobs, errors = load_repository(tmp_path)
    doc, _plain = load_document(content.encode(), name.endswith(".json"))
    definition = jobs[job_name_for(name)].definition
    assert definition == jsonable(doc)
    assert json.dumps(definition, allow_nan=False) == json.dumps(jsonable(doc), allow_nan=False)
    assert errors == [] and len(jobs) == 1


def test_an_explicit_text_tag_on_a_collection_is_an_error(tmp_path):
    assert "expected a scalar node" in problem(tmp_path, "description: !!str {a: 1}\n")
    assert "expected a scalar node" in problem(tmp_path, "description: !!str [a]\n", name="b.yml")


def test_equal_var_declarations_of_other_types_are_not_confused(tmp_path):
    """Var declarations are validated once per distinct declaration: the same text with another
    type is another declaration."""
    write(tmp_path, {"a.yml": "vars: [{name: x, default: '1'}]\n", "b.yml": "vars: [{name: x, default: 1}]\n",
                     "c.yml": "vars: [{name: x, type: float, default: -0.0}]\n",
                     "d.yml": "vars: [{name: x, type: float, default: 0.0}]\n",
                     "e.yml": "vars: [{name: x, type: enum, values: [1, '1'], default: 1}]\n",
                     "f.yml": "vars: [{name: x, type: enum, values: [1, '1'], default: '1'}]\n"})
    jobs, errors = load_repository(tmp_path)
    assert dict(errors) == {"b.yml": "vars[0] (x): default 1 does not fit type str: var 'x': 1 is not a str "
                                     "(quote it in YAML to make it a string)"}
    assert str(jobs["c"].vars[0].default) == "-0.0" and str(jobs["d"].vars[0].default) == "0.0"
    assert jobs["e"].vars[0].default == 1 and jobs["f"].vars[0].default == "1"
    assert type(jobs["e"].vars[0].default) is int


def test_a_symlink_loop_is_an_unreadable_file_not_a_failed_load(tmp_path):
    write(tmp_path, {"ok.yml": {"command": "true"}})
    os.symlink("loop.yml", tmp_path / "loop.yml")
    os.symlink("x/y", tmp_path / "through.yml")
    write(tmp_path, {"x": "a file\n"})
    jobs, errors = load_repository(tmp_path)
    assert list(jobs) == ["ok"]
    assert errors == [("loop.yml", "cannot read the file: Too many levels of symbolic links"),
                      ("through.yml", "cannot read the file: Not a directory")]
