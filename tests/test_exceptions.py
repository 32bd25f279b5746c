"""One exception tree (overseer/exceptions.py): every error Overseer raises on purpose is an
OverseerError said in one line, the two a run's start meets among the OS's own errors are OSErrors
too, and input errors are ParamErrors where they are found (a bare ValueError reaching the HTTP
layer is a bug: tests/http/test_http.py::test_a_bare_value_error_is_a_logged_500_not_a_400)."""
from __future__ import annotations

import ast
import errno
import inspect
import os
from concurrent.futures import Future
from pathlib import Path

import pytest

from overseer import exceptions
from overseer.exceptions import NoFreeUid, OverseerError, ParamError, SnapshotError, TokenError
from overseer.model import executions as ex
from overseer.process.identity import Peer
from overseer.process.run_as import RunAs
from overseer.repo.catalog import Catalog

ROOT = Path(__file__).resolve().parents[1]
# Exception classes that are not errors of the domain, each with why.
NOT_DOMAIN = {
    "overseer/http/errors.py": {"HttpError"},          # an HTTP answer: what only HTTP knows
    "overseer/http/framing.py": {"Refused"},           # an HttpError: a request refused before a worker
    "overseer/store/writer.py": {"Rejected"},          # carries an op's own error to its caller
    "overseer/process/spawn.py": {"Unsupported"},      # the kernel's ENOSYS for clone3: the fallback's cue
}


def _error_classes(path: Path) -> set[str]:
    """The public classes of ``path`` whose bases name an exception (``...Error``, ``Exception``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            bases = {ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases}
            if any(b == "Exception" or b.endswith(("Error", "Exception")) or b == "Refused" for b in bases):
                found.add(node.name)
    return found


def test_every_error_of_the_domain_is_in_the_one_tree():
    outside = {}
    for base in (ROOT / "overseer", ROOT / "actors"):
        for path in base.rglob("*.py"):
            rel = str(path.relative_to(ROOT))
            if rel == "overseer/exceptions.py" or rel.startswith("overseer/examples/"):
                continue
            found = _error_classes(path) - NOT_DOMAIN.get(rel, set())
            if found:
                outside[rel] = found
    assert outside == {}
    assert _error_classes(ROOT / "overseer/store/writer.py") == {"Rejected"}   # the scan sees classes


def test_each_error_is_an_overseer_error_said_in_one_line():
    classes = [c for _, c in inspect.getmembers(exceptions, inspect.isclass) if issubclass(c, BaseException)]
    assert len(classes) > 10
    for cls in classes:
        assert issubclass(cls, OverseerError), cls
        assert cls.__doc__ and "\n" not in cls.__doc__.strip(), cls


def test_a_snapshot_not_ready_or_not_made_is_a_snapshot_error_naming_the_commit(tmp_path):
    catalog = Catalog(tmp_path)
    catalog.snapshot_wait = 0.05
    catalog.expect("abc123", Future())   # never done
    with pytest.raises(SnapshotError, match="abc123 is not ready after 0.05 s") as caught:
        catalog.snapshot("abc123")
    assert isinstance(caught.value, OSError)   # a run's start reports it as it does the OS's own
    failed: Future = Future()
    failed.set_exception(RuntimeError("no space left"))
    catalog.expect("def456", failed)
    with pytest.raises(SnapshotError, match="def456 could not be made: no space left"):
        catalog.snapshot("def456")


def test_a_uid_range_with_none_free_is_no_free_uid():
    run_as = RunAs(uids=range(61000, 61001))
    assert run_as.take().uid == 61000
    with pytest.raises(NoFreeUid) as caught:
        run_as.take()
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.EAGAIN
    assert "execution.run_as.uids" in caught.value.strerror


def test_an_unknown_token_on_the_event_socket_is_a_token_error(system_factory):
    system = system_factory({"hello.yml": {"command": "true"}})
    with pytest.raises(TokenError, match="unknown or expired token"):
        system.event_socket.handle("no-such-token", "note", None, Peer(os.getpid(), os.getuid(), os.getgid()))


@pytest.mark.parametrize(("check", "value", "said"), [
    (ex.check_event_name, "no spaces", "must match"),
    (ex.check_event_name, "stdout", "is reserved"),
    (ex.check_new_event, "start", "reserved for the system"),
    (ex.check_cause, 5, "cause must be a string or null"),
    (ex.check_cause, "x" * (ex.MAX_CAUSE + 1), "longer than"),
])
def test_an_event_name_or_cause_refused_is_a_param_error(check, value, said):
    with pytest.raises(ParamError, match=said):
        check(value)
