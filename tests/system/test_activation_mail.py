"""The generated admin password is mailed to the partner when the factory knows a relay."""

import time
from email.utils import getaddresses

from conftest import HOSTNAME, closed_port

PARTNER = "partner@msp.example"
SENDER = "abri-box@msp.example"


def addresses(header_value) -> list[str]:
    return [a.lower() for _, a in getaddresses([str(header_value or "")])]


def test_password_mailed_to_partner(make_box, smtp):
    box = make_box(partner_email=PARTNER, smtp_port=smtp.port, smtp_sender=SENDER).start()
    r = box.post("activate", json={"claim_code": box.claim_code})
    assert r.status_code == 200, r.text
    body = r.json()
    password = body["password"]
    assert body["mailed_to_partner"] is True, body

    msgs = smtp.wait_for(1, timeout=20)
    assert len(msgs) >= 1, "the partner got no mail"
    time.sleep(1.0)  # a duplicate would arrive right behind the first one
    assert len(smtp.messages) == 1, f"expected exactly one mail, got {len(smtp.messages)}"
    msg = smtp.messages[0]
    assert [a.lower() for a in msg["rcpt_tos"]] == [PARTNER], msg["rcpt_tos"]
    assert msg["mail_from"].lower() == SENDER, msg["mail_from"]
    assert addresses(msg["message"]["From"]) == [SENDER], msg["message"]["From"]
    assert PARTNER in addresses(msg["message"]["To"]), msg["message"]["To"]
    text = smtp.text_of(msg)
    assert password in text, "the mail does not contain the issued password"
    assert HOSTNAME in text, "the mail does not name the box"

    # the mailed password is the real one
    box.password = password
    assert box.session().get("account").status_code == 200


def test_no_partner_email_no_mail(make_box, smtp):
    box = make_box(smtp_port=smtp.port, smtp_sender=SENDER).start()
    r = box.post("activate", json={"claim_code": box.claim_code})
    assert r.status_code == 200, r.text
    assert r.json()["mailed_to_partner"] is False
    time.sleep(1.5)
    assert smtp.messages == [], "a mail went out although no partner email is known"


def test_unreachable_relay_still_activates(make_box):
    """The technician still receives the password when the relay cannot be reached."""
    box = make_box(partner_email=PARTNER, smtp_port=closed_port(), smtp_sender=SENDER).start()
    r = box.post("activate", json={"claim_code": box.claim_code}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mailed_to_partner"] is False, body
    assert box.status()["activated"] is True
    box.password = body["password"]
    assert box.session().get("account").status_code == 200
