"""Labels feed the promotion gate, so a page of another site must not be able to send them.

A real Chromium opens a page of another origin (a server of the test's own on another loopback
port: a page of a public site would be stopped by Chromium's private-network rules before it
reached the gateway, which would test Chromium, not the gateway) that tries what a cross-site
page can: a `fetch` with a bare string body (sent as text/plain, no preflight), the same with
`mode: "no-cors"`, a JSON `fetch` (which needs a CORS preflight the gateway does not grant),
and a `text/plain` form whose body is JSON. The gateway sees what the browser sends, so the
test reads the real statuses from the network, and `digits.labeled` must hold no label of the
other site's. The same label from the gateway's own page is stored and published, so the check
can fail.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from mnistream_common.topics import DIGITS_LABELED
from playwright.sync_api import Browser
from prometheus_client.parser import text_string_to_metric_families

from tests.browser.support import off_the_loop, upload, wait_for_label
from tests.e2e.support import topic_records
from tests.helpers import FOUR, drawing_png
from tests.system import System

pytestmark = pytest.mark.browser


ATTACKS = """
async ([url, label]) => {
  const outcome = async (attempt) => {
    try { const r = await attempt(); return r.type === "opaque" ? "opaque" : r.status; }
    catch (error) { return `refused: ${error.name}`; }
  };
  const body = JSON.stringify({ label });
  return {
    bare: await outcome(() => fetch(url, { method: "POST", body })),
    noCors: await outcome(() => fetch(url, { method: "POST", body, mode: "no-cors" })),
    json: await outcome(() =>
      fetch(url, { method: "POST", body, headers: { "Content-Type": "application/json" } })),
  };
}
"""

# The classic JSON-over-form trick: a text/plain form whose one field makes a JSON body.
FORM = """
<!doctype html><title>another site</title>
<form id="f" method="post" enctype="text/plain" action="{url}">
  <input name='{{"label": {label}, "x": "' value='"}}'>
</form>
"""


def other_site_serving(form: bytes) -> ThreadingHTTPServer:
    """Another origin on loopback: / an empty page, /form the form; serving in a thread."""

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = form if self.path == "/form" else b"<!doctype html><title>other site</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def label_outcomes(api: httpx.Client) -> dict[str, float]:
    """The gateway's count of label requests by outcome (accepted, rejected_<status>)."""
    text = api.get("/metrics").text
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "mnistream_gateway_labels"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def changes(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def labels_published(digit_id: str) -> list[int]:
    """Every label `digits.labeled` holds for the drawing, oldest first (its key's partition,
    read from the beginning to its end)."""

    async def read() -> list[int]:
        values = await topic_records(DIGITS_LABELED, digit_id.encode())
        return [int(json.loads(v)["label"]) for v in values if v is not None]

    return off_the_loop(lambda: asyncio.run(read()))


def test_a_page_of_another_site_cannot_label_a_drawing(
    browser: Browser, system: System, api: httpx.Client
) -> None:
    digit_id = upload(api, drawing_png(FOUR))
    url = f"{system.gateway_url}/api/digits/{digit_id}/label"
    context = browser.new_context()
    other_site = other_site_serving(FORM.format(url=url, label=3).encode())
    other_origin = f"http://127.0.0.1:{other_site.server_port}"
    before = label_outcomes(api)
    try:
        page = context.new_page()
        page.goto(f"{other_origin}/")
        outcomes = page.evaluate(ATTACKS, [url, 3])
        page.goto(f"{other_origin}/form")
        with page.expect_response(url) as submitted:
            page.locator("#f").evaluate("form => form.submit()")
        form_status = submitted.value.status
    finally:
        context.close()
        other_site.shutdown()
        other_site.server_close()

    # What the page saw: no answer it may read, and the JSON fetch stopped at its preflight.
    assert outcomes == {
        "bare": "refused: TypeError",
        "noCors": "opaque",
        "json": "refused: TypeError",
    }, outcomes
    assert form_status == 403, form_status
    # What the gateway saw: the three simple requests (bare, no-cors, the form) arrived with
    # the other site's Origin and were refused; the JSON one never arrived; none was accepted.
    assert changes(before, label_outcomes(api)) == {"rejected_403": 3}

    # The gateway's own page labels the same drawing: that label is published and stored,
    # and it is the only one the topic holds for the drawing (the key's partition is ordered,
    # so a label the other site got through would come before it).
    own = browser.new_context(base_url=system.gateway_url)
    try:
        page = own.new_page()
        page.goto("/")
        status = page.evaluate(
            """async ([url, label]) => (await fetch(url, { method: "POST",
                 headers: { "Content-Type": "application/json" },
                 body: JSON.stringify({ label }) })).status""",
            [url, 5],
        )
    finally:
        own.close()
    assert status == 202, status
    assert changes(before, label_outcomes(api)) == {"rejected_403": 3, "accepted": 1}
    wait_for_label(api, digit_id, 5)
    assert labels_published(digit_id) == [5]
