"""Login, sessions, logout, language and password changes."""

from conftest import ApiSession, assert_error

MAX_WRONG_LOGINS = 30


def cookie_attributes(set_cookie: str) -> tuple[str, set[str], dict]:
    """Parses one Set-Cookie value: (name=value, flags, key=value attributes), lower-cased."""
    parts = [p.strip() for p in set_cookie.split(";")]
    flags, attrs = set(), {}
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            attrs[k.strip().lower()] = v.strip().lower()
        elif p:
            flags.add(p.lower())
    return parts[0], flags, attrs


def test_login_sets_a_strict_secure_cookie(active_box):
    r = active_box.post("login", json={"user": "admin", "password": active_box.password})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"] == "admin"
    assert isinstance(body["csrf_token"], str) and len(body["csrf_token"]) >= 16
    assert body["language"] in ("fr", "en")
    raw = r.headers.get("Set-Cookie", "")
    assert raw.startswith("abri_session="), raw
    nv, flags, attrs = cookie_attributes(raw)
    assert len(nv) > len("abri_session=") + 16, "session id too short"
    assert "secure" in flags, raw
    assert "httponly" in flags, raw
    assert attrs.get("samesite") == "strict", raw


def test_account_answers_with_the_csrf_token(api):
    r = api.get("account")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"] == "admin"
    assert body["language"] in ("fr", "en")
    assert body["csrf_token"] == api.csrf


def test_wrong_password_and_wrong_user(active_box):
    r = active_box.post("login", json={"user": "admin", "password": active_box.password + "!"})
    assert_error(r, 401, "unauthenticated")
    assert "Set-Cookie" not in r.headers or "abri_session=" not in r.headers["Set-Cookie"] \
        or "max-age=0" in r.headers["Set-Cookie"].lower()
    r = active_box.post("login", json={"user": "root", "password": active_box.password})
    assert_error(r, 401, "unauthenticated")


def test_repeated_login_failures_are_throttled(active_box):
    throttled = None
    for i in range(MAX_WRONG_LOGINS):
        r = active_box.post("login", json={"user": "admin", "password": f"wrong-password-{i}"})
        if r.status_code == 429:
            throttled = r
            break
        assert_error(r, 401, "unauthenticated")
    assert throttled is not None, f"no 429 after {MAX_WRONG_LOGINS} failed logins"
    assert_error(throttled, 429, "throttled")
    retry = throttled.headers.get("Retry-After", "")
    assert retry.strip().isdigit() and int(retry) > 0, retry
    # while throttled, the right password is refused too (no oracle for a brute-forcer)
    r = active_box.post("login", json={"user": "admin", "password": active_box.password})
    assert_error(r, 429, "throttled")


def test_logout_ends_the_session(api):
    assert api.get("account").status_code == 200
    r = api.post("logout")
    assert r.status_code == 204, r.text
    assert_error(api.get("account"), 401, "unauthenticated")


def test_change_language(api):
    for lang in ("en", "fr", "en"):
        r = api.put("account/language", json={"language": lang})
        assert r.status_code == 204, r.text
        assert api.get("account").json()["language"] == lang
    before = api.get("account").json()["language"]
    assert_error(api.put("account/language", json={"language": "de"}), 422, "invalid")
    assert api.get("account").json()["language"] == before


def test_change_password(active_box):
    box = active_box
    old = box.password
    s = box.session()
    other = box.session()  # another session, closed by the change

    # wrong current password: refused, nothing changes
    r = s.post("account/password", json={"current_password": old + "x",
                                         "new_password": "a-brand-new-passphrase"})
    assert r.status_code in (401, 403, 422), r.text
    assert "error" in r.json()
    assert ApiSession(box, password=old, login=False).login("admin", old).status_code == 200

    # too short: 422 invalid naming the field
    r = s.post("account/password", json={"current_password": old, "new_password": "short-11ch"})
    body = assert_error(r, 422, "invalid")
    assert "new_password" in body["message"], body
    assert ApiSession(box, login=False).login("admin", old).status_code == 200

    # success
    new = "correct horse battery staple"
    r = s.post("account/password", json={"current_password": old, "new_password": new})
    assert r.status_code == 204, r.text
    assert_error(box.post("login", json={"user": "admin", "password": old}), 401,
                 "unauthenticated")
    assert ApiSession(box, login=False).login("admin", new).status_code == 200
    # other sessions are closed
    assert_error(other.get("account"), 401, "unauthenticated")
    # and the change survives a restart
    box.restart()
    assert ApiSession(box, login=False).login("admin", new).status_code == 200
    assert_error(box.post("login", json={"user": "admin", "password": old}), 401,
                 "unauthenticated")
