"""Mail relay settings and the "send a test mail" action, against a real SMTP server."""

from email.utils import getaddresses

from conftest import HOSTNAME, assert_error, closed_port

SENDER = "backups@customer.example"
RECIPIENTS = ["it@customer.example", "msp@partner.example"]


def relay(port: int, **over) -> dict:
    s = {"host": "127.0.0.1", "port": port, "security": "none", "sender": SENDER,
         "recipients": list(RECIPIENTS)}
    s.update(over)
    return s


def test_unset_relay_reads_as_null(api):
    r = api.get("settings/mail")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["host"] is None, body
    assert body["password_set"] is False
    assert "password" not in body


def test_put_and_get_never_show_the_password(api):
    secret = "relay-secret-Zq81"
    r = api.put("settings/mail", json=relay(2525, user="mailer", password=secret))
    assert r.status_code == 200, r.text
    assert secret not in r.text
    for body in (r.json(), api.get("settings/mail").json()):
        assert "password" not in body, body
        assert body["password_set"] is True
        assert body["host"] == "127.0.0.1"
        assert body["port"] == 2525
        assert body["security"] == "none"
        assert body["user"] == "mailer"
        assert body["sender"] == SENDER
        assert body["recipients"] == RECIPIENTS
    assert secret not in api.get("settings/mail").text

    # password absent: the stored one is kept
    r = api.put("settings/mail", json=relay(2526, user="mailer"))
    assert r.status_code == 200, r.text
    assert api.get("settings/mail").json()["password_set"] is True
    assert api.get("settings/mail").json()["port"] == 2526
    # password "": cleared (with the user too: abrid refuses a user without a password)
    r = api.put("settings/mail", json=relay(2526, password=""))
    assert r.status_code == 200, r.text
    body = api.get("settings/mail").json()
    assert body["password_set"] is False
    assert body["user"] is None


def test_test_mail_reaches_the_relay(api, smtp):
    r = api.put("settings/mail", json=relay(smtp.port))
    assert r.status_code == 200, r.text
    r = api.post("settings/mail/test", json={})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sent"] is True
    assert sorted(body["recipients"]) == sorted(RECIPIENTS)

    msgs = smtp.wait_for(1, timeout=20)
    assert msgs, "the SMTP server received nothing"
    got = sorted(a.lower() for m in msgs for a in m["rcpt_tos"])
    assert got == sorted(RECIPIENTS), got
    for m in msgs:
        assert m["mail_from"].lower() == SENDER, m["mail_from"]
        assert [a.lower() for _, a in getaddresses([str(m["message"]["From"])])] == [SENDER]
        assert HOSTNAME in smtp.text_of(m), "the test mail does not name the box"


def test_test_mail_to_one_address(api, smtp):
    assert api.put("settings/mail", json=relay(smtp.port)).status_code == 200
    r = api.post("settings/mail/test", json={"to": "tech@installer.example"})
    assert r.status_code == 200, r.text
    assert r.json()["recipients"] == ["tech@installer.example"]
    msgs = smtp.wait_for(1, timeout=20)
    assert msgs, "the SMTP server received nothing"
    assert [a.lower() for a in msgs[0]["rcpt_tos"]] == ["tech@installer.example"]


def test_unreachable_relay_is_a_502(api):
    assert api.put("settings/mail", json=relay(closed_port())).status_code == 200
    r = api.post("settings/mail/test", json={}, timeout=60)
    body = assert_error(r, 502, "mail_failed")
    assert len(body["message"]) > 5


def test_invalid_settings_are_refused_and_change_nothing(api):
    good = relay(2525)
    assert api.put("settings/mail", json=good).status_code == 200
    before = api.get("settings/mail").json()
    bad_bodies = {
        "security": relay(2525, security="ssl3"),
        "port": relay(0),
        "port type": relay("twenty-five"),
        "port range": relay(70000),
        "sender": relay(2525, sender="not an address"),
        "recipients": relay(2525, recipients=["nobody"]),
        "unknown field": {**good, "tls_verify": False},
        "host": relay(2525, host=""),
    }
    for what, body in bad_bodies.items():
        r = api.put("settings/mail", json=body)
        assert r.status_code == 422, f"{what}: expected 422, got {r.status_code} {r.text}"
        assert_error(r, 422, "invalid")
        assert api.get("settings/mail").json() == before, f"{what}: settings changed"
