"""Reloading the dial plan: a broken edit never takes the working plan away."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.dialplan import DialPlanError, DialPlanHolder

GOOD = 'version: 1\nrooms:\n  - id: demo\n    numbers: ["1000"]\n'
BETTER = GOOD + '  - id: second\n    numbers: ["2000"]\n'
BROKEN = GOOD + '  - id: second\n    numbrs: ["2000"]\n    layout: grid\n'


def write(path: Path, text: str, bump: int = 0) -> None:
    path.write_text(text, encoding="utf-8")
    st = path.stat()
    # make the change visible to mtime checks even on coarse-grained file systems
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))


def test_first_load_must_succeed(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    write(path, BROKEN)
    with pytest.raises(DialPlanError) as info:
        DialPlanHolder(path)
    assert [p.line for p in info.value.problems] == [6, 7]


def test_reload_swaps_on_success_and_keeps_old_plan_on_error(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    write(path, GOOD)
    holder = DialPlanHolder(path)
    first = holder.current
    assert holder.changed_on_disk() is False
    assert holder.current.route("2000").kind == "none"

    write(path, BROKEN, bump=1)
    assert holder.changed_on_disk() is True
    ok, message = holder.reload()
    assert ok is False
    assert holder.current is first and holder.current.route("1000").room.id == "demo"
    assert "still using the previous one (1 room, 0 templates, 0 routes, 0 endpoints)" in message
    assert f"{path}:6:5: unknown key 'numbrs'" in message
    assert f"{path}:7:13: unknown layout" in message
    assert holder.changed_on_disk() is False  # the broken file is not reported again

    write(path, BETTER, bump=2)
    assert holder.changed_on_disk() is True
    ok, message = holder.reload()
    assert (ok, message) == (True, "2 rooms, 0 templates, 0 routes, 0 endpoints")
    assert holder.current.route("2000").room.id == "second"
    assert holder.current.sha256 != first.sha256


def test_touch_without_change_is_not_a_change(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    write(path, GOOD)
    holder = DialPlanHolder(path)
    write(path, GOOD, bump=5)
    assert holder.changed_on_disk() is False


def test_deleted_file_keeps_plan(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    write(path, GOOD)
    holder = DialPlanHolder(path)
    path.unlink()
    assert holder.changed_on_disk() is True
    ok, message = holder.reload()
    assert ok is False and "cannot read the dial plan" in message
    assert holder.current.route("1000").kind == "room"
