"""`abrid --dev` without `--factory` (what `make run` does): a development factory file made
once, its claim code kept beside it and printed at every start."""

import re

from conftest import HOSTNAME


def printed_claim_codes(log: str) -> list[str]:
    return re.findall(r"^claim code: ([a-z0-9]{4}(?:-[a-z0-9]{4}){3})\s*$", log, re.M)


def test_dev_factory_is_made_once_and_its_code_printed(make_box):
    box = make_box(make_factory_file=False).start()
    assert (box.state_dir / "dev-factory.toml").is_file()
    kept = (box.state_dir / "dev-claim-code").read_text().strip()
    codes = printed_claim_codes(box.log())
    assert codes == [kept], f"printed {codes}, kept {kept!r}"
    assert re.search(rf"^box: {HOSTNAME}\s*$", box.log(), re.M)
    factory_before = (box.state_dir / "dev-factory.toml").read_bytes()

    box.restart()
    assert (box.state_dir / "dev-factory.toml").read_bytes() == factory_before
    assert printed_claim_codes(box.log()) == [kept, kept], "not the same code at every start"

    box.claim_code = kept
    box.activate()
    assert box.status()["activated"] is True
    assert box.session().get("account").status_code == 200
