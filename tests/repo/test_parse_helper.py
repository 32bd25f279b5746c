"""A large load parses part of its job files in a second process (overseer/repo/parse_helper.py):
the jobs and errors are those of an in-process parse, whatever the helper gives back or fails
to give. Real git repositories and a real helper process."""
from __future__ import annotations

import logging
import os
import queue
import sys

import pytest

from overseer.repo import load as jobmodel
from overseer.repo import parse_helper
from overseer.repo.documents import load_document
from overseer.repo.snapshots import Snapshots

from ..conftest import JobRepo

FILES = {
    **{f"team{i % 3}/job{i:03d}.yml": f"description: job {i}\ncommand: echo {{{{ who }}}} {i}\n"
       f"vars:\n  - name: who\n    default: w{i}\nenv:\n  N: '{i}'\n" for i in range(40)},
    **{f"json/j{i}.json": f'{{"command": "echo json {i}", "timeout": {i + 1}}}' for i in range(6)},
    "odd/when.yml": "command: echo t\ndescription: 2024-01-01\n",  # a YAML date: not plain data
    "odd/set.yml": "command: echo s\ndescription: !!set {a, b}\n",
    "odd/anchors.yml": "command: &c echo a\ndescription: *c\n",
    "zz/bad.yml": "command: [unclosed\n",
    "zz/empty.yml": "",
    "zz/list.yml": "- a\n- b\n",
    "zz/typo.yml": "comand: echo\n",
    "zz/dup.json": '{"command": "a", "command": "b"}',
    "zz/notutf8.yml": b"command: \xff\xfe\n",
}


@pytest.fixture
def commit(tmp_path):
    repo = JobRepo(tmp_path / "jobs")
    sha = repo.commit(FILES, "many files")
    return Snapshots(tmp_path / "snapshots", repo.root / ".git", dict(os.environ)), sha


def _load(snaps, sha):
    return jobmodel.load_tree(snaps.tree(sha), snaps.read_blobs)


def _counting(monkeypatch) -> list:
    """Record how many documents each call of a helper's ``take`` gave back."""
    given = []
    take = parse_helper.Aside.take

    def counted(self, wait):
        out = take(self, wait)
        given.append(sum(r is not None for r in out))
        return out
    monkeypatch.setattr(parse_helper.Aside, "take", counted)
    return given


def _alone(snaps, sha, monkeypatch):
    """The load with no helper, then a helper for loads of 10 files or more."""
    monkeypatch.setenv("OVERSEER_NO_PARSE_HELPER", "1")
    alone = _load(snaps, sha)
    monkeypatch.delenv("OVERSEER_NO_PARSE_HELPER")
    monkeypatch.setattr(parse_helper, "MIN_FILES", 10)
    return alone


def _answers(aside: parse_helper.Aside) -> list:
    out = []
    while aside.taken < aside.count:
        out += aside.take(wait=True)
    return out


def test_the_helper_gives_what_an_in_process_parse_gives(commit, monkeypatch):
    snaps, sha = commit
    alone, alone_errors = _alone(snaps, sha, monkeypatch)
    monkeypatch.setattr(parse_helper, "HELPER_SHARE", 0.9)  # the odd and bad files go to it
    given = _counting(monkeypatch)
    helped, helped_errors = _load(snaps, sha)
    assert sum(given) >= 30, given  # it was used, for most of its share
    assert sorted(helped) == sorted(alone) and len(alone) == 40 + 6 + 1
    for name in alone:
        assert helped[name] == alone[name] and helped[name].definition == alone[name].definition, name
    assert helped["odd.anchors"].definition["description"] == "echo a"
    assert helped_errors == alone_errors   # worded the same, a date or a set named as such
    assert {f for f, _ in alone_errors} == {"odd/when.yml", "odd/set.yml", "zz/bad.yml", "zz/empty.yml",
                                            "zz/list.yml", "zz/typo.yml", "zz/dup.json", "zz/notutf8.yml"}


def test_a_helper_that_fails_costs_no_result(commit, monkeypatch, caplog):
    snaps, sha = commit
    alone, alone_errors = _alone(snaps, sha, monkeypatch)
    given = _counting(monkeypatch)
    for broken in ("/bin/false", "/nonexistent/python"):
        monkeypatch.setattr(sys, "executable", broken)
        with caplog.at_level(logging.WARNING, logger="overseer.repo.parse_helper"):
            caplog.clear()
            helped, helped_errors = _load(snaps, sha)
        assert sorted(helped) == sorted(alone) and helped_errors == alone_errors
        assert "parsing" in caplog.text and "in-process" in caplog.text, caplog.text
    assert given and sum(given) == 0


def test_the_helper_takes_files_up_to_its_byte_budget(commit, monkeypatch):
    snaps, sha = commit
    monkeypatch.setattr(parse_helper, "MIN_FILES", 10)
    monkeypatch.setattr(parse_helper, "HELPER_SHARE", 1.0)
    monkeypatch.setattr(parse_helper, "MAX_BYTES", 600)   # a few of the files, not all
    sent = []
    init = parse_helper.Aside.__init__
    monkeypatch.setattr(parse_helper.Aside, "__init__",
                        lambda self, items: (sent.append(items), init(self, items))[1])
    helped, _errors = _load(snaps, sha)
    assert len(sent) == 1 and 0 < len(sent[0]) < len(FILES) - 1
    assert sum(len(data) for _, data in sent[0]) <= 600
    assert len(helped) == 40 + 6 + 1


def test_a_helper_running_other_code_refuses(tmp_path):
    """A helper whose interpreter imports another copy of overseer than the caller's (a server
    started from a source tree beside an install, say) refuses with exit status 3 (a failed
    helper's files are parsed by the caller: the test above)."""
    import shutil
    import subprocess

    other = tmp_path / "elsewhere"
    shutil.copytree(os.path.dirname(parse_helper.__file__), other / "overseer" / "repo",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    (other / "overseer" / "__init__.py").write_text("")
    own = os.path.join(os.path.dirname(parse_helper.__file__), "documents.py")
    r = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv.pop(1)); "
                        "import runpy; runpy.run_module('overseer.repo.parse_helper', run_name='__main__')",
                        str(other), own, "10"], input=b"\x5b\x00\x00\x00\x00", capture_output=True,
                       timeout=60)
    assert r.returncode == 3 and b"not the caller's" in r.stderr, r


def test_answers_in_several_frames_give_the_same_jobs(commit, monkeypatch):
    snaps, sha = commit
    alone, alone_errors = _alone(snaps, sha, monkeypatch)
    monkeypatch.setattr(parse_helper, "FRAME", 3)
    frames = []   # the size of each frame as it arrives (how many a take gets depends on timing)

    class Recording(queue.SimpleQueue):
        def put(self, item, *args, **kwargs):
            frames.append(len(item) if isinstance(item, list) else item)
            super().put(item, *args, **kwargs)
    monkeypatch.setattr(parse_helper.queue, "SimpleQueue", Recording)
    given = _counting(monkeypatch)
    helped, helped_errors = _load(snaps, sha)
    assert sorted(helped) == sorted(alone) and helped_errors == alone_errors
    sizes = [f for f in frames if f is not None]   # then None, once the helper has exited
    assert len(sizes) >= 7 and set(sizes) <= {1, 2, 3}, frames
    assert sum(sizes) >= sum(given) >= 20, (given, frames)   # given: those parsed there
    assert len(given) >= 2, given   # checked between the caller's own files, not once at the end


def test_a_helper_cut_short_mid_stream_costs_no_result(commit, monkeypatch, tmp_path, caplog):
    """Its output ends inside a frame: the answers in so far are used, the rest parsed here."""
    snaps, sha = commit
    alone, alone_errors = _alone(snaps, sha, monkeypatch)
    monkeypatch.setattr(parse_helper, "FRAME", 2)
    wrapper = tmp_path / "python-cut-short"
    wrapper.write_text(f"#!/bin/sh\n'{sys.executable}' \"$@\" | head -c 700\n")
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))
    given = _counting(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="overseer.repo.parse_helper"):
        helped, helped_errors = _load(snaps, sha)
    assert sorted(helped) == sorted(alone) and helped_errors == alone_errors
    for name in alone:
        assert helped[name] == alone[name], name
    assert 0 < sum(given) < 20, given
    assert "in-process" in caplog.text, caplog.text


def test_the_helper_answers_plain_documents_only():
    items = [(False, b"command: echo a\nvars: [{name: x}]\n"), (True, b'{"command": "j", "n": 1.5}'),
             (False, b"when: 2024-01-01\n"), (False, b"a: [unclosed\n"), (False, b""),
             (False, b"a: &x [1]\nb: *x\n")]
    got = _answers(parse_helper.Aside(items))
    assert got[0] == load_document(items[0][1], False) and got[0][1] is True
    assert got[1] == load_document(items[1][1], True)
    assert got[2] is None and got[3] is None          # a date is not plain data; an error is not
    assert got[4] == (None, True)                     # an empty document: the caller says so
    assert got[5] == ({"a": [1], "b": [1]}, True)


def test_small_loads_and_one_cpu_need_no_helper(monkeypatch):
    assert not parse_helper.worth_it(parse_helper.MIN_FILES - 1)
    assert parse_helper.worth_it(parse_helper.MIN_FILES) == ((os.cpu_count() or 1) > 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert not parse_helper.worth_it(10 * parse_helper.MIN_FILES)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setenv("OVERSEER_NO_PARSE_HELPER", "1")
    assert not parse_helper.worth_it(10 * parse_helper.MIN_FILES)
