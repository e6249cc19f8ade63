// A person at a browser: each has a context of their own (their own session cookie),
// moves between pages with the keyboard or by what a link or button says, and every
// page they land on is checked (axe on the page shown, html-validate on the HTML sent).

import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { accessibilityViolations, markupErrors } from './checks.js';

export const CHROMIUM = process.env.QUOTELINE_CHROMIUM ?? '/usr/bin/chromium';

export function launch() {
  return chromium.launch({ executablePath: CHROMIUM });
}

/** Screenshots of every page visited go here when QUOTELINE_BROWSER_SCREENSHOTS names a folder. */
const SCREENSHOTS = process.env.QUOTELINE_BROWSER_SCREENSHOTS;

export class Person {
  /**
   * `name` labels this person's screenshots and failures, like `sqlite-agent`. What a
   * page fails of the checks goes into `pageFailures`, so a journey can go on and report
   * every page's failures together.
   */
  static async open(browser, baseUrl, name, pageFailures) {
    const context = await browser.newContext({ baseURL: baseUrl });
    const page = await context.newPage();
    return new Person(context, page, name, pageFailures);
  }

  constructor(context, page, name, pageFailures) {
    this.context = context;
    this.page = page;
    this.name = name;
    this.pageFailures = pageFailures;
    this.visits = 0;
  }

  /** Opens a path as if typed into the address bar. */
  goto(path, expected) {
    return this.visit(() => this.page.goto(path), expected);
  }

  /**
   * Does `action`, waits for the page it leads to (after any redirects), checks its
   * status and title, then runs both checkers on it, adding what they find to
   * `pageFailures`. Returns the response.
   */
  async visit(action, { status = 200, title } = {}) {
    const page = this.page;
    const landed = page.waitForResponse(
      (response) =>
        response.request().isNavigationRequest() &&
        response.frame() === page.mainFrame() &&
        !(response.status() >= 300 && response.status() < 400),
    );
    // The new document's own load event: waitForLoadState could still answer for the
    // page being left, before the new one is committed.
    const loaded = page.waitForEvent('load');
    await action();
    const response = await landed;
    await loaded;
    const html = await response.text();
    const where = `${this.name} at ${response.request().method()} ${new URL(response.url()).pathname}`;
    assert.equal(response.status(), status, `${where}: status\n${html}`);
    if (title !== undefined) {
      assert.match(await page.title(), title, `${where}: title`);
    }
    this.visits += 1;
    if (SCREENSHOTS) {
      await mkdir(SCREENSHOTS, { recursive: true });
      const file = `${this.name}-${String(this.visits).padStart(2, '0')}.png`;
      await page.screenshot({ path: join(SCREENSHOTS, file), fullPage: true });
    }
    const failures = [...(await accessibilityViolations(page)), ...(await markupErrors(html))];
    if (failures.length > 0) {
      this.pageFailures.push(`${where} (${await page.title()}):\n  ${failures.join('\n  ')}`);
    }
    return response;
  }

  /** The element named `label` by its <label>, exactly. */
  field(label) {
    return this.page.getByLabel(label, { exact: true });
  }

  /** Moves the focus to `locator` and presses Enter: a link followed or a button pressed by keyboard. */
  async press(locator, key = 'Enter') {
    await locator.focus();
    await this.page.keyboard.press(key);
  }

  async assertFocused(locator, what) {
    assert.ok(
      await locator.evaluate((element) => element === document.activeElement),
      `${this.name}: the focus should be on ${what}, but is on ${await this.page.evaluate(
        () => document.activeElement?.outerHTML.slice(0, 200),
      )}`,
    );
  }

  /**
   * Fills fields with the keyboard alone, in the order given, which must be the order
   * Tab moves through them: the focus goes to the first by its label, then Tab moves to
   * each next one. A text field's content is replaced; a <select> is set by typing the
   * start of the option's text, as a person does. Leaves the focus on the last field.
   */
  async typeInto(fields) {
    const keyboard = this.page.keyboard;
    for (const [index, [label, text]] of fields.entries()) {
      const field = this.field(label);
      if (index === 0) {
        await field.focus();
      } else {
        await keyboard.press('Tab');
      }
      await this.assertFocused(field, `the field labelled "${label}"`);
      const tag = await field.evaluate((element) => element.tagName);
      if (tag === 'SELECT') {
        await keyboard.type(text);
        const chosen = await field.evaluate((element) => element.selectedOptions[0]?.text);
        assert.equal(chosen, text, `${this.name}: typing "${text}" in "${label}" should choose it`);
      } else {
        await keyboard.press('ControlOrMeta+A');
        await keyboard.press('Delete');
        if (text !== '') await keyboard.type(text);
        assert.equal(await field.inputValue(), text, `${this.name}: what "${label}" holds`);
      }
    }
  }

  /** Types into `fields` (see typeInto), then presses Enter in the last to submit the form. */
  typeAndSubmit(fields, expected) {
    return this.visit(async () => {
      await this.typeInto(fields);
      await this.page.keyboard.press('Enter');
    }, expected);
  }
}
