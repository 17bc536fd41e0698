"""The server-rendered console without a browser: ids, language, CSRF on every form, and
form posts that change (or must not change) the plans."""

from html.parser import HTMLParser
from urllib.parse import urlparse

PAGES = ["/dashboard", "/account", "/settings/mail", "/settings/plans", "/settings/plans/files",
         "/settings/box"]
HEADER_IDS = ["language-form", "logout-form", "logout", "language-submit", "nav-dashboard",
              "nav-plans", "nav-mail", "nav-box", "nav-account"]
PAGE_IDS = {
    "/dashboard": ["box-hostname", "box-fingerprint"],
    "/account": ["password-form", "password-submit"],
    "/settings/mail": ["mail-form", "mail-save", "mail-test-form", "mail-test"],
    "/settings/plans": ["plan-link-files", "plan-link-image"],
    "/settings/plans/files": ["plan-form", "plan-save"],
    "/settings/box": ["box-hostname", "box-fqdn", "box-fingerprint", "box-version",
                      "box-addresses", "box-disks"],
}


class Page(HTMLParser):
    """Collects ids, the <html lang>, forms and their fields, and the #flash element."""

    def __init__(self, text: str):
        super().__init__()
        self.ids: dict[str, dict] = {}
        self.lang = None
        self.forms: list[dict] = []
        self._form = None
        self._textarea = None
        self._select = None
        self.texts: dict[str, str] = {}
        self._open_ids: list[tuple[str, str]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if "id" in a:
            self.ids[a["id"]] = {"tag": tag, **a}
            if tag not in ("input", "br", "img", "meta", "link"):
                self._open_ids.append((tag, a["id"]))
                self.texts.setdefault(a["id"], "")
        if tag == "html":
            self.lang = a.get("lang")
        elif tag == "form":
            self._form = {"id": a.get("id"), "method": a.get("method", "get").lower(),
                          "action": a.get("action", ""), "fields": {}}
            self.forms.append(self._form)
        elif self._form is not None and tag == "input" and "name" in a:
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self._form["fields"][a["name"]] = a.get("value", "")
        elif self._form is not None and tag == "textarea" and "name" in a:
            self._textarea = a["name"]
            self._form["fields"][a["name"]] = ""
        elif self._form is not None and tag == "select" and "name" in a:
            self._select = a["name"]
        elif self._select and tag == "option" and "selected" in a:
            self._form["fields"][self._select] = a.get("value", "")

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None
        if self._open_ids and self._open_ids[-1][0] == tag:
            self._open_ids.pop()

    def handle_data(self, data):
        if self._textarea and self._form is not None:
            self._form["fields"][self._textarea] += data
        for _, i in self._open_ids:
            self.texts[i] = self.texts.get(i, "") + data

    def form(self, form_id: str) -> dict:
        for f in self.forms:
            if f["id"] == form_id:
                return f
        raise AssertionError(f"no form #{form_id}; forms: {[f['id'] for f in self.forms]}")

    def flash_class(self) -> str | None:
        f = self.ids.get("flash")
        return f.get("class") if f else None


def page(s, path, **kw) -> tuple:
    r = s.http.get(s.box.base + path, verify=str(s.box.ca_pem), timeout=15, **kw)
    return r, Page(r.text)


def post_form(s, action: str, fields: dict, headers: dict | None = None):
    r = s.http.post(s.box.base + action, data=fields, verify=str(s.box.ca_pem), timeout=15,
                    headers=headers)
    return r, Page(r.text)


def test_root_goes_to_login_then_dashboard(active_box):
    box = active_box
    r = box.raw("GET", box.base + "/", allow_redirects=False)
    assert r.status_code in (302, 303, 307), r.status_code
    assert urlparse(r.headers["Location"]).path == "/login"
    s = box.session()
    r = s.http.get(box.base + "/", allow_redirects=False, verify=str(box.ca_pem), timeout=15)
    assert urlparse(r.headers["Location"]).path == "/dashboard", r.headers.get("Location")


def test_every_page_has_its_ids_a_language_and_csrf_on_every_form(api):
    for path in PAGES:
        r, p = page(api, path)
        assert r.status_code == 200, f"{path}: {r.status_code}"
        assert p.lang in ("fr", "en"), f"{path}: <html lang={p.lang!r}>"
        for i in HEADER_IDS + PAGE_IDS[path]:
            assert i in p.ids, f"{path}: no #{i}"
        posts = [f for f in p.forms if f["method"] == "post"]
        assert posts, f"{path}: no POST form at all"
        for f in posts:
            assert f["fields"].get("csrf") == api.csrf, f"{path}: form #{f['id']} lacks the csrf field"
    _, p = page(api, "/dashboard")
    assert p.texts["box-hostname"].strip() == "backup-abcd"
    assert api.box.fingerprint() in p.texts["box-fingerprint"].replace(":", "").lower()


def test_ca_certificate_download(active_box):
    r = active_box.raw("GET", active_box.base + "/ca.pem")
    assert r.status_code == 200
    assert r.content.strip() == active_box.ca_pem.read_bytes().strip()


def test_plan_form_posts(api):
    _, p = page(api, "/settings/plans/files")
    form = p.form("plan-form")
    fields = dict(form["fields"])
    assert fields["interval_hours"] == "5"
    action = form["action"] or "/settings/plans/files"

    # without the csrf field, or with a wrong one: nothing changes
    before = api.get("plans/files").json()
    for label, csrf in (("no csrf", None), ("wrong csrf", "0" * 64)):
        forged = {k: v for k, v in fields.items() if k != "csrf"}
        if csrf:
            forged["csrf"] = csrf
        forged["interval_hours"] = "11"
        # on a connection of its own (see test_security: refused bodies and keep-alive)
        r, p2 = post_form(api, action, forged, headers={"Connection": "close"})
        assert r.status_code >= 400 or p2.flash_class() == "error", f"{label}: {r.status_code}"
        assert api.get("plans/files").json() == before, f"{label}: the plan changed"

    # an invalid value: an error shown, nothing changes
    bad = dict(fields, interval_hours="0")
    r, p2 = post_form(api, action, bad)
    assert "error" in (p2.flash_class() or ""), f"invalid value: #flash {p2.flash_class()!r}"
    assert api.get("plans/files").json() == before

    # the real form: saved, shown as ok
    good = dict(fields, interval_hours="9")
    r, p2 = post_form(api, action, good)
    assert r.status_code == 200, r.status_code
    assert "ok" in (p2.flash_class() or ""), f"#flash {p2.flash_class()!r}"
    after = api.get("plans/files").json()
    assert after["interval_hours"] == 9
    assert after["excludes"] == before["excludes"] and after["selections"] == before["selections"]
