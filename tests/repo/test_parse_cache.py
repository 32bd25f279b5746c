"""The parse cache: a restart parses only the job files that changed, and never hides a problem."""
from __future__ import annotations

import pickle

from overseer.repo import load as jobmodel
from overseer.repo.parse_cache import ParseCache

from ..waiting import wait_for


def _write(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _saved(cache_path, count):
    """Wait for the cache (written on a thread of its own) to hold ``count`` entries."""
    def holds() -> bool:
        try:
            return len(pickle.loads(cache_path.read_bytes())["entries"]) == count
        except Exception:  # noqa: BLE001 - not there, or not written yet
            return False
    wait_for(holds, 10, "the cache to be written", interval=0.01)


FILES = {f"team/job{i}.yml": f"command: echo {i} {{{{ who }}}}\nvars:\n  - {{name: who, default: x{i}}}\n"
         for i in range(20)}


def test_a_restart_takes_unchanged_files_from_the_cache(tmp_path):
    root, path = tmp_path / "jobs", tmp_path / "job-cache.pickle"
    _write(root, FILES)
    first, errors = jobmodel.load_repository(root, cache=(cache := ParseCache(path)))
    cache.save_soon()
    assert errors == [] and len(first) == 20
    _saved(path, 20)
    (root / "team/job3.yml").write_text("command: echo changed\n")
    cache = ParseCache(path)  # a new process: only what the file holds
    second, errors = jobmodel.load_repository(root, cache=cache)
    assert errors == [] and cache.hits == 19
    assert second["team.job3"].command == "echo changed"
    unchanged = [n for n in first if n != "team.job3"]
    assert [second[n] for n in unchanged] == [first[n] for n in unchanged]


def test_a_file_broken_since_its_cached_parse_is_reported(tmp_path):
    root, path = tmp_path / "jobs", tmp_path / "job-cache.pickle"
    _write(root, FILES)
    jobmodel.load_repository(root, cache=(cache := ParseCache(path)))
    cache.save_soon()
    _saved(path, 20)
    (root / "team/job5.yml").write_text("command: echo\nbogus: 1\n")
    (root / "team/job6.yml").unlink()
    found, errors = jobmodel.load_repository(root, cache=(cache := ParseCache(path)))
    cache.save_soon()
    assert "team.job5" not in found and "team.job6" not in found and len(found) == 18
    assert [file for file, _ in errors] == ["team/job5.yml"] and "bogus" in errors[0][1]


def test_a_damaged_or_foreign_cache_means_a_full_parse(tmp_path, caplog):
    root, path = tmp_path / "jobs", tmp_path / "job-cache.pickle"
    _write(root, FILES)
    path.write_bytes(b"not a pickle")
    cache = ParseCache(path)
    found, errors = jobmodel.load_repository(root, cache=cache)
    assert len(found) == 20 and cache.hits == 0 and "unreadable" in caplog.text
    cache.save()
    _saved(path, 20)
    blob = pickle.loads(path.read_bytes())
    assert len(blob["entries"]) == 20
    # entries written by other parsing code are never used
    blob["code"] = "another version"
    path.write_bytes(pickle.dumps(blob))
    cache = ParseCache(path)
    jobmodel.load_repository(root, cache=cache)
    assert cache.hits == 0


def test_a_script_job_from_the_cache_still_checks_its_script(tmp_path):
    root, path = tmp_path / "jobs", tmp_path / "job-cache.pickle"
    _write(root, {"deploy.yml": "script: deploy.sh\n", "scripts/deploy.sh": "#!/bin/sh\necho hi\n"})
    (root / "scripts/deploy.sh").chmod(0o755)
    found, errors = jobmodel.load_repository(root, cache=(cache := ParseCache(path)))
    cache.save_soon()
    assert errors == [] and "deploy" in found
    _saved(path, 1)
    (root / "scripts/deploy.sh").unlink()
    cache = ParseCache(path)
    found, errors = jobmodel.load_repository(root, cache=cache)
    assert "deploy" not in found and errors and errors[0][0] == "deploy.yml"


def test_a_restarted_server_parses_only_what_changed(tmp_path, job_repo):
    from overseer.actors.system import System

    from ..conftest import make_config

    job_repo.commit({f"j{i}.yml": {"command": f"echo {i}"} for i in range(5)}, "initial")
    config = make_config(tmp_path, job_repo)
    system = System(config).start()
    job_repo.commit({"j0.yml": {"command": "echo changed"}}, "change one")
    system.sync()
    system.stop()  # writes what the sync parsed
    system = System(config).start()
    try:
        repo_sync = system.supervisor.proxy().child("repo_sync").get(timeout=10)
        cache = repo_sync.proxy().parse_cache.get(timeout=10)
        assert cache.hits == 5
        assert system.job("j0").command == "echo changed"
    finally:
        system.stop()
