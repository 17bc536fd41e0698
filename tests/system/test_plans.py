"""The default file and image plans, editing them, and refusing bad edits."""

import copy

from conftest import assert_error

LINUX_EXCLUDES = {"/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp"}


def editable(plan: dict) -> dict:
    """A plan as PUT takes it: without `id` and `kind`."""
    body = copy.deepcopy(plan)
    body.pop("id", None)
    body.pop("kind", None)
    return body


def plans_by_id(api) -> dict:
    r = api.get("plans")
    assert r.status_code == 200, r.text
    plans = r.json()
    assert isinstance(plans, list)
    return {p["id"]: p for p in plans}


def test_default_plans(api):
    plans = plans_by_id(api)
    assert {"files", "image"} <= set(plans), list(plans)

    f = plans["files"]
    assert f["kind"] == "files"
    assert isinstance(f["name"], str) and f["name"]
    assert f["interval_hours"] == 5
    assert f["full_every_days"] == 30
    assert f["window"] == {"start": "00:00", "end": "24:00"}
    assert f["retention"]["keep_within_days"] == 90
    assert f["retention"]["keep_last"] == 40
    assert f["selections"] == ["/"]
    assert LINUX_EXCLUDES <= set(f["excludes"]), f["excludes"]

    i = plans["image"]
    assert i["kind"] == "image"
    assert i["interval_hours"] == 168
    assert i["full_every_days"] == 60
    assert i["retention"]["keep_last"] == 4
    assert i["retention"]["keep_weekly"] == 8
    assert i["retention"]["keep_monthly"] == 3

    for pid, p in plans.items():
        r = api.get(f"plans/{pid}")
        assert r.status_code == 200, r.text
        assert r.json() == p


def test_unknown_plan_is_404(api):
    assert_error(api.get("plans/nope"), 404, "not_found")


def test_valid_edit_persists_across_restart(api):
    box = api.box
    plan = api.get("plans/files").json()
    body = editable(plan)
    body.update({"name": "Fichiers", "interval_hours": 6, "full_every_days": 14,
                 "window": {"start": "20:00", "end": "24:00"}})
    body["retention"]["keep_last"] = 10
    body["excludes"] = body["excludes"] + ["/var/cache"]
    r = api.put("plans/files", json=body)
    assert r.status_code == 200, r.text
    saved = r.json()
    assert saved["id"] == "files" and saved["kind"] == "files"
    assert editable(saved) == body
    assert api.get("plans/files").json() == saved
    # the image plan is untouched
    assert api.get("plans/image").json()["interval_hours"] == 168

    box.restart()
    s = box.session()
    assert s.get("plans/files").json() == saved


def test_invalid_edits_are_refused_and_change_nothing(api):
    before = api.get("plans/files").json()
    base = editable(before)

    def variant(**changes):
        b = copy.deepcopy(base)
        for k, v in changes.items():
            b[k] = v
        return b

    cases = {
        "interval_hours": variant(interval_hours=0),
        "interval_hours too big": variant(interval_hours=8761),
        "interval_hours type": variant(interval_hours="five"),
        "window": variant(window={"start": "10:00", "end": "09:00"}),
        "window format": variant(window={"start": "7h", "end": "24:00"}),
        "full_every_days": variant(full_every_days=0),
        "retention keep_last": variant(retention={**base["retention"], "keep_last": 0}),
        "selections": variant(selections=[""]),
        "excludes": variant(excludes=["/proc", ""]),
        "unknown field": variant(colour="blue"),
    }
    names_field = {"interval_hours": "interval_hours", "window": "window",
                   "full_every_days": "full_every_days", "unknown field": "colour",
                   "retention keep_last": "keep_last"}
    for what, body in cases.items():
        r = api.put("plans/files", json=body)
        err = assert_error(r, 422, "invalid")
        if what in names_field:
            assert names_field[what] in err["message"], f"{what}: message {err['message']!r}"
        assert api.get("plans/files").json() == before, f"{what}: the plan changed"
    assert_error(api.put("plans/files", data=b"{not json",
                         headers={"Content-Type": "application/json"}), 422, "invalid")
    assert api.get("plans/files").json() == before
