"""What the template sandbox hides is an error where a template touches it: the trigger is a 400
naming the job and the attribute, and nothing runs (it used to render as nothing and run)."""
from __future__ import annotations

import logging

import pytest
import requests

from overseer.exceptions import ParamError
from overseer.model import render
from overseer.model.vars import VarSpec

from .test_render import make_job

HIDDEN = [
    ("{{ v.__class__ }}", "'__class__' of a list value"),
    ("echo {{ v.__class__ }} done", "'__class__' of a list value"),
    ("{{ v | attr('__class__') }}", "'__class__' of a list value"),
    ("{{ v['__class__'] }}", "'__class__' of a list value"),
    ("{{ v.append }}", "'append' of a list value"),
    ("{{ s.__class__.__mro__ }}", "'__class__' of a str value"),
    ("{% if v.__class__ %}x{% endif %}", "'__class__' of a list value"),
]


@pytest.mark.parametrize(("source", "named"), HIDDEN, ids=[source for source, _ in HIDDEN])
def test_a_hidden_attribute_is_an_error_naming_the_job_and_the_attribute(source, named):
    job = make_job(source, VarSpec(name="v", type="seq"), VarSpec(name="s"), name="sneaky")
    with pytest.raises(ParamError) as caught:
        render.render_command(job, {"v": [], "s": "x"})
    assert str(caught.value).startswith("job 'sneaky': rendering the command failed: the template uses ")
    assert named in str(caught.value) and "sandbox does not allow" in str(caught.value)


def test_a_missing_key_of_a_map_is_still_nothing():
    """The rule is about what the sandbox hides; a key a map lacks is Jinja2's undefined, as ever."""
    job = make_job("echo [{{ m.gone }}] {{ m.here }}", VarSpec(name="m", type="map"))
    assert render.render_command(job, {"m": {"here": "x y"}}) == "echo [] 'x y'"


def test_the_trigger_is_a_400_and_nothing_runs(serve, tmp_path, caplog):
    canary = tmp_path / "ran"
    system, _ = serve({"sneaky.yml": {"command": f"touch {canary} {{{{ v.__class__ }}}}",
                                      "vars": [{"name": "v", "default": "x"}]}})
    with caplog.at_level(logging.INFO):
        r = requests.post(system.config.base_url + "/jobs/sneaky", json={}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == ("job 'sneaky': rendering the command failed: the template uses "
                                 "'__class__' of a str value, which the sandbox does not allow")
    assert system.executions("sneaky") == [] and not canary.exists()
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR or rec.exc_info]
