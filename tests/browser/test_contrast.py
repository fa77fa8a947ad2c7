"""Readable contrast: every visible piece of text meets WCAG AA against what is behind it."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

# For each visible element with its own text: its colour and the colour behind it (the
# backgrounds of it and its ancestors, composited with their alpha over white), then the WCAG
# contrast ratio. Large text (24 px, or 18.66 px bold) needs 3:1, the rest 4.5:1. Disabled
# controls are exempt, as in WCAG.
CONTRAST = """
() => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return [255, 255, 255, 1];
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, below) => {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + below[i] * (1 - a)).concat(1);
  };
  const behind = (el) => {
    const chain = [];
    for (let e = el; e; e = e.parentElement) chain.push(parse(getComputedStyle(e).backgroundColor));
    return chain.reverse().reduce((acc, c) => over(c, acc), [255, 255, 255, 1]);
  };
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const failures = [];
  let checked = 0;
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.closest("[hidden], [aria-hidden=true]") || el.matches(":disabled")) continue;
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    if (style.visibility !== "visible" || style.opacity === "0" || box.width === 0) continue;
    const bg = behind(el);
    const fg = over(parse(style.color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    checked += 1;
    if (ratio < (large ? 3 : 4.5)) {
      const text = el.textContent.trim().slice(0, 40);
      const name = `${el.tagName.toLowerCase()}#${el.id}.${el.className}`;
      failures.push(`${name}: "${text}" ${ratio.toFixed(2)}:1`);
    }
  }
  return { checked, failures };
}
"""


@pytest.mark.parametrize("width", [1280, 390], ids=["desktop", "phone"])
def test_every_visible_text_has_aa_contrast(page: Page, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    page.goto("/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#history tbody tr").first).to_be_visible()

    result = page.evaluate(CONTRAST)

    assert result["checked"] > 20, result
    assert result["failures"] == [], "\n".join(result["failures"])


def test_the_check_catches_faint_text(page: Page) -> None:
    page.goto("/")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    page.evaluate(
        "document.querySelector('main, body').insertAdjacentHTML('beforeend', "
        "'<p id=faint style=\"color:#aaa;background:#fff\">grey on white</p>')"
    )

    result = page.evaluate(CONTRAST)

    assert [f for f in result["failures"] if f.startswith("p#faint")], result
