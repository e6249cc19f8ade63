// The checkers themselves: a journey whose pages all pass proves nothing unless axe and
// html-validate do find what they are there to find, on a page served under the same
// Content-Security-Policy as quoteline's (no scripts at all).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { launch } from './lib/browser.js';
import { accessibilityViolations, markupErrors } from './lib/checks.js';

const CSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'";

const page = (body) => `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>A page</title>
</head>
<body>
  <main>
    <h1>A page</h1>
${body}
  </main>
</body>
</html>
`;

const GOOD = page(`    <form method="post" action="/save">
      <label for="name">Name</label>
      <input type="text" id="name" name="name">
      <button type="submit">Save</button>
    </form>`);

// An input without a label, an image without a text alternative, a form without a
// submit button, and inline style (which the policy would block anyway).
const BAD = page(`    <form method="post" action="/save">
      <input type="text" id="name" name="name">
    </form>
    <img src="/chart.png">
    <p style="color: #bbb">Faint</p>`);

describe('the page checkers', () => {
  let browser;
  let tab;

  before(async () => {
    browser = await launch();
    tab = await browser.newPage();
  });
  after(() => browser?.close());

  /** Shows `html` at a made-up address, with quoteline's Content-Security-Policy. */
  async function show(html) {
    await tab.route('http://checks.test/', (route) =>
      route.fulfill({ contentType: 'text/html', headers: { 'content-security-policy': CSP }, body: html }),
    );
    await tab.goto('http://checks.test/');
    await tab.unrouteAll();
  }

  it('axe finds nothing on a good page, even under a policy that allows no script', async () => {
    await show(GOOD);
    assert.deepEqual(await accessibilityViolations(tab), []);
  });

  it('axe finds an input without a label and an image without a text alternative', async () => {
    await show(BAD);
    const found = (await accessibilityViolations(tab)).join('\n');
    assert.match(found, /^axe label /m);
    assert.match(found, /^axe image-alt /m);
  });

  it('html-validate finds nothing in good HTML', async () => {
    assert.deepEqual(await markupErrors(GOOD), []);
  });

  it('html-validate finds an image without a text alternative, a form without a submit button and inline style', async () => {
    const found = (await markupErrors(BAD)).join('\n');
    assert.match(found, /^html-validate wcag\/h37:/m);
    assert.match(found, /^html-validate wcag\/h32:/m);
    assert.match(found, /^html-validate no-inline-style:/m);
  });

  it('html-validate lets the family form repeat the name `children`, and no other name', async () => {
    const repeated = (name) =>
      page(`    <form method="post" action="/save">
      <label for="a">First</label>
      <input type="text" id="a" name="${name}">
      <label for="b">Second</label>
      <input type="text" id="b" name="${name}">
      <button type="submit">Save</button>
    </form>`);
    assert.deepEqual(await markupErrors(repeated('children')), []);
    assert.match((await markupErrors(repeated('city'))).join('\n'), /^html-validate form-dup-name:/m);
  });
});
