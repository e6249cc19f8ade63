// What every page the journey visits must pass: axe-core's WCAG 2.0, 2.1 and 2.2 A and
// AA rules on the page as the browser shows it, and html-validate's recommended rules
// on the HTML as the server sent it.

import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { HtmlValidate } from 'html-validate';

const require = createRequire(import.meta.url);
const axeSource = await readFile(require.resolve('axe-core/axe.min.js'), 'utf8');

export const WCAG_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'];

/** axe's violations on the page shown, as lines; none when it passes. */
export async function accessibilityViolations(page) {
  // Evaluated through the DevTools protocol, which the pages' Content-Security-Policy
  // (no scripts at all) does not govern: the page is checked as served.
  await page.evaluate(axeSource);
  const results = await page.evaluate(
    // Only the violations' nodes are wanted: the other result types keep one node a rule.
    (tags) => window.axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] }),
    WCAG_TAGS,
  );
  if (results.passes.length === 0) {
    throw new Error(`axe ran no rule that passed on ${page.url()}: is it checking anything?`);
  }
  return results.violations.flatMap((violation) =>
    violation.nodes.map(
      (node) =>
        `axe ${violation.id} (${violation.impact}): ${violation.help}\n` +
        `    at ${node.target.join(' ')}\n    ${node.failureSummary.replaceAll('\n', '\n    ')}`,
    ),
  );
}

const validator = new HtmlValidate({
  extends: ['html-validate:recommended'],
  rules: {
    // The served HTML is askama's output: a template's block tags ({% if %}, {% for %})
    // stand on lines of their own, indented like the markup around them, and leave that
    // indentation behind on otherwise empty lines. The templates are written that way
    // on purpose, for reading; browsers and people never see the difference.
    'no-trailing-whitespace': 'off',
  },
});

/**
 * Findings html-validate's recommended rules make that are deliberate here, each with
 * its reason. Kept narrow: the rule stays on for everything else.
 */
function isDeliberate(message) {
  // The family form's child names are repeated inputs named `children`, read in order
  // as a list (src/quoting/forms.rs, `InputName`), without PHP's `children[]` suffix;
  // the people forms' role checkboxes are one group named `roles`, read the same way
  // (src/identity/people_pages.rs, `PersonForm`).
  return message.ruleId === 'form-dup-name' && ['children', 'roles'].includes(message.context?.name);
}

/** html-validate's errors in the HTML as sent, as lines; none when it passes. */
export async function markupErrors(html) {
  const report = await validator.validateString(html, 'page.html');
  const lines = html.split('\n');
  return report.results.flatMap((result) =>
    result.messages
      .filter((message) => !isDeliberate(message))
      .map(
        (message) =>
          `html-validate ${message.ruleId}: ${message.message}\n` +
          `    line ${message.line}: ${(lines[message.line - 1] ?? '').trim()}`,
      ),
  );
}
