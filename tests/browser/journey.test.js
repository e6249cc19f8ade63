// One quote's life in a real browser (headless Chromium), on each backend the run
// script names: an agent signs in and fills every section with the keyboard, meets an
// error summary and submits; an underwriter refers it back; the agent fixes it and
// submits again; the underwriter approves; an auditor reads the timeline, the quote as
// it stood after an event, the log, and checks the hash chains. Every page on the way
// passes axe-core (WCAG 2.2 A and AA) and html-validate (see lib/checks.js).
//
// Environment: QUOTELINE_BIN, the server binary; QUOTELINE_BROWSER_DATABASES, the
// database URLs to run on, separated by spaces, each a new database (tests/browser/run
// sets both up).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Person, launch } from './lib/browser.js';
import { seedDemo, serve } from './lib/server.js';

const BIN = process.env.QUOTELINE_BIN;
const DATABASES = (process.env.QUOTELINE_BROWSER_DATABASES ?? '').split(/\s+/).filter(Boolean);
assert.ok(BIN, 'QUOTELINE_BIN must name the quoteline binary (tests/browser/run sets it)');
assert.ok(DATABASES.length > 0, 'QUOTELINE_BROWSER_DATABASES must name a database (tests/browser/run sets it)');

const APPLICANT = 'Meera Iyr';
const APPLICANT_CORRECTED = 'Meera Iyer';
const REFERRAL_NOTE = 'Please check the phone number with the applicant.';

for (const databaseUrl of DATABASES) {
  const backend = new URL(databaseUrl).protocol.replace(':', '');

  describe(`a quote's life on ${backend}`, () => {
    let server;
    let browser;
    let signIns;
    const people = {};
    let quotePath; // /quotes/{id}
    let reference; // Q-…
    let failed = false;
    const pageFailures = [];

    before(async () => {
      signIns = await seedDemo(BIN, databaseUrl);
      server = await serve(BIN, databaseUrl);
      browser = await launch();
    });

    after(async () => {
      await browser?.close();
      await server?.stop();
      const log = server?.log() ?? '';
      if (failed && log) console.log(`quoteline's log on ${backend}:\n${log}`);
    });

    // The steps are one story: after a step that went wrong the rest cannot mean
    // anything. A page that fails axe or html-validate fails its step, but the story
    // goes on, so one run lists every page's failures.
    const step = (name, body) =>
      it(name, async (t) => {
        if (failed) return t.skip('an earlier step failed');
        try {
          await body();
        } catch (error) {
          failed = true;
          throw error;
        }
        if (pageFailures.length > 0) {
          assert.fail(`pages that fail their checks:\n${pageFailures.splice(0).join('\n')}`);
        }
      });

    /** Opens a browser context for `username` and signs in with the keyboard, by label. */
    async function signIn(username, role, home) {
      const person = await Person.open(browser, server.baseUrl, `${backend}-${role}`, pageFailures);
      people[role] = person;
      await person.goto('/login', { title: /^Sign in/ });
      const { password } = signIns.get(username);
      await person.typeAndSubmit(
        [
          ['Username', username],
          ['Password', password],
        ],
        { title: home },
      );
      return person;
    }

    step('the agent signs in and starts a quote', async () => {
      const agent = await signIn('asha', 'agent', /^My quotes/);
      // The first Tab reaches the skip link, and following it puts the focus on the content.
      await agent.page.keyboard.press('Tab');
      await agent.assertFocused(agent.page.getByRole('link', { name: 'Skip to main content' }), 'the skip link');
      await agent.page.keyboard.press('Enter');
      await agent.assertFocused(agent.page.locator('main'), 'the main content');
      await agent.visit(() => agent.press(agent.page.getByRole('link', { name: 'Start a new quote' })), {
        title: /^Start a new quote/,
      });
      const started = await agent.typeAndSubmit([['Applicant name', APPLICANT]], { title: /^Quote Q-/ });
      quotePath = new URL(started.url()).pathname;
      reference = (await agent.page.title()).match(/Q-[0-9A-Z]+/)[0];
      await assert.doesNotReject(agent.page.getByRole('heading', { level: 1, name: APPLICANT }).waitFor());
    });

    step('the agent fills the geographic details with the keyboard', async () => {
      const agent = people.agent;
      await agent.visit(() => agent.press(agent.page.getByRole('link', { name: 'Geographic details' })), {
        title: /^Geographic details/,
      });
      await agent.typeAndSubmit(
        [
          ['Country', 'India'],
          ['State', 'Karnataka'],
          ['City', 'Bengaluru'],
          ['Postal code', '560001'],
        ],
        { title: /^Contact details/ },
      );
    });

    step('the agent meets an error summary on the contact details, follows it and fixes the email', async () => {
      const agent = people.agent;
      await agent.typeAndSubmit(
        [
          ['Email', 'meera.example.com'],
          ['Phone number', '+91 98765 43210'],
        ],
        { status: 422, title: /^Error: Contact details/ },
      );
      const summary = agent.page.getByRole('alert').filter({ hasText: 'There is a problem' });
      const link = summary.getByRole('link');
      assert.equal(await link.count(), 1, 'one error, one link in the summary');
      await agent.press(link);
      const email = agent.field('Email');
      await agent.assertFocused(email, 'the email field the error summary links to');
      assert.equal(await email.getAttribute('aria-invalid'), 'true');
      assert.equal(await email.inputValue(), 'meera.example.com', 'what was typed is kept');
      assert.equal(await agent.field('Phone number').inputValue(), '+91 98765 43210');
      await agent.typeAndSubmit(
        [
          ['Email', 'meera@example.com'],
          ['Phone number', '+91 98765 43210'],
        ],
        { title: /^Family details/ },
      );
    });

    step('the agent adds a child and fills the family details with the keyboard', async () => {
      const agent = people.agent;
      await agent.visit(() => agent.press(agent.page.getByRole('button', { name: 'Add another child' })), {
        title: /^Family details/,
      });
      await agent.typeAndSubmit(
        [
          ['Number of dependents', '2'],
          ['Spouse name', 'Arjun Iyer'],
          ['Child name 1', 'Kavya Iyer'],
        ],
        { title: /^Check your answers/ },
      );
    });

    step('the agent checks the answers, corrects the applicant\'s name and submits the quote', async () => {
      const agent = people.agent;
      await agent.visit(() => agent.press(agent.page.getByRole('link', { name: 'Change applicant name' })), {
        title: /^The applicant's name/,
      });
      await agent.typeAndSubmit([['Applicant name', APPLICANT_CORRECTED]], { title: /^Check your answers/ });
      const answers = await agent.page.locator('dl.summary-list').allInnerTexts();
      for (const text of [APPLICANT_CORRECTED, 'India', 'Karnataka', 'Bengaluru', '560001', 'meera@example.com', 'Arjun Iyer', 'Kavya Iyer']) {
        assert.ok(answers.some((list) => list.includes(text)), `check your answers shows ${text}`);
      }
      await agent.visit(() => agent.press(agent.page.getByRole('button', { name: 'Submit for approval' })), {
        title: /^Quote Q-/,
      });
      await assert.doesNotReject(agent.page.getByText('submitted for approval').first().waitFor());
    });

    step('an underwriter finds it in the queue and refers it back', async () => {
      const underwriter = await signIn('uma', 'underwriter', /^Approval queue/);
      await underwriter.visit(() => underwriter.page.getByRole('link', { name: reference, exact: true }).click(), {
        title: new RegExp(`^Quote ${reference}`),
      });
      await underwriter.visit(() => underwriter.page.getByRole('link', { name: 'Refer back to agent' }).click(), {
        title: /^Refer this quote back/,
      });
      // An empty note is refused with the page's own error summary.
      await underwriter.visit(() => underwriter.page.getByRole('button', { name: 'Refer back to agent' }).click(), {
        status: 422,
        title: /^Error: Refer this quote back/,
      });
      await underwriter.field('Note to the agent').fill(REFERRAL_NOTE);
      await underwriter.visit(() => underwriter.page.getByRole('button', { name: 'Refer back to agent' }).click(), {
        title: /^Quote referred back/,
      });
    });

    step('the agent reads the note, changes the phone number and submits again', async () => {
      const agent = people.agent;
      await agent.goto(quotePath, { title: new RegExp(`^Quote ${reference}`) });
      await assert.doesNotReject(agent.page.getByText(REFERRAL_NOTE).waitFor());
      await agent.visit(() => agent.press(agent.page.getByRole('link', { name: 'Check and submit' })), {
        title: /^Check your answers/,
      });
      await agent.visit(() => agent.press(agent.page.getByRole('link', { name: 'Change phone number' })), {
        title: /^Contact details/,
      });
      await agent.typeAndSubmit([['Phone number', '+91 98765 43211']], { title: /^Check your answers/ });
      await agent.visit(() => agent.press(agent.page.getByRole('button', { name: 'Submit for approval' })), {
        title: /^Quote Q-/,
      });
    });

    step('the underwriter approves it', async () => {
      const underwriter = people.underwriter;
      await underwriter.goto('/underwriting/queue', { title: /^Approval queue/ });
      await underwriter.visit(() => underwriter.page.getByRole('link', { name: reference, exact: true }).click(), {
        title: new RegExp(`^Quote ${reference}`),
      });
      await assert.doesNotReject(underwriter.page.getByText('referred back 1 time').first().waitFor());
      await underwriter.visit(() => underwriter.page.getByRole('link', { name: 'Approve', exact: true }).click(), {
        title: /^Approve this quote/,
      });
      await underwriter.visit(() => underwriter.page.getByRole('button', { name: 'Approve quote' }).click(), {
        title: /^Quote approved/,
      });
    });

    step('an auditor reads the log, the timeline and the quote after an event, and checks the chains', async () => {
      const auditor = await signIn('ada', 'auditor', /^Audit log/);
      await auditor.typeAndSubmit([['Quote reference', reference]], { title: /^Audit log/ });
      const rows = auditor.page.locator('table.audit-log tbody tr');
      assert.ok((await rows.count()) >= 10, 'the log lists every event of the quote');
      await auditor.visit(() => auditor.page.getByRole('link', { name: reference }).first().click(), {
        title: new RegExp(`^Timeline of quote ${reference}`),
      });
      const entries = auditor.page.locator('ol.timeline > li');
      assert.equal(await entries.first().getByRole('heading').innerText(), 'Quote approved · event ' + (await entries.count()));
      // The quote as it stood after the referral: back with its agent, the note kept.
      const referral = entries.filter({ hasText: 'Quote referred back to the agent' });
      await auditor.visit(() => referral.getByRole('link', { name: 'See the quote as it stood after this event' }).click(), {
        title: new RegExp(`^Quote ${reference} after event`),
      });
      await assert.doesNotReject(auditor.page.getByText(REFERRAL_NOTE).first().waitFor());
      assert.match(await auditor.page.locator('#as-of-status').innerText(), /Saved/);
      // What changed between the referral and the approval: the phone number, by the agent.
      await auditor.visit(() => auditor.page.getByRole('link', { name: 'Back to the timeline' }).click(), {
        title: new RegExp(`^Timeline of quote ${reference}`),
      });
      await referral.getByLabel('Compare from this event').check();
      await entries.first().getByLabel('Compare to this event').check();
      await auditor.visit(() => auditor.page.getByRole('button', { name: 'Compare the chosen events' }).click(), {
        title: new RegExp(`^Quote ${reference}: event \\d+ compared with event \\d+`),
      });
      const differences = auditor.page.locator('tr.compare__difference');
      assert.equal(await differences.count(), 1, 'one answer differs');
      assert.match(await differences.first().innerText(), /Phone number\s+\+919876543210\s+\+919876543211\s+Event \d+ by asha/);
      // Who approved it, and the roles their record gave them at that moment.
      await auditor.goto(quotePath + '/timeline', { title: new RegExp(`^Timeline of quote ${reference}`) });
      await auditor.visit(() => entries.first().getByRole('link', { name: "uma's record at that moment" }).click(), {
        title: /^uma/,
      });
      assert.equal(await auditor.page.locator('#roles-then').innerText(), 'underwriter');
      await auditor.goto('/audit/verify', { title: /^Hash-chain verification/ });
      await auditor.visit(() => auditor.page.getByRole('button', { name: 'Check the chain now' }).click(), {
        title: /^Hash-chain verification/,
      });
      assert.match(await auditor.page.locator('#verify-result').innerText(), /Every hash chain is intact/);
    });

    step('the admin adds a person, who must choose their own password at the first sign-in', async () => {
      const admin = await signIn('root', 'admin', /^People/);
      await admin.visit(() => admin.press(admin.page.getByRole('link', { name: 'Add a person' })), {
        title: /^Add a person/,
      });
      // Nothing chosen: the error summary, then the form filled in.
      await admin.visit(() => admin.page.getByRole('button', { name: 'Continue' }).click(), {
        status: 422,
        title: /^Error: Add a person/,
      });
      await admin.page.getByLabel('Username').fill('nora');
      await admin.page.getByLabel('underwriter', { exact: true }).check();
      await admin.visit(() => admin.page.getByRole('button', { name: 'Continue' }).click(), {
        title: /^Add nora as underwriter\?/,
      });
      await admin.visit(() => admin.page.getByRole('button', { name: 'Add this person' }).click(), {
        title: /^nora was added/,
      });
      const password = await admin.page.locator('#one-time-password').innerText();
      await admin.visit(() => admin.page.getByRole('link', { name: "Go to nora's record" }).click(), {
        title: /^nora/,
      });
      const nora = await Person.open(browser, server.baseUrl, `${backend}-new-person`, pageFailures);
      await nora.goto('/login', { title: /^Sign in/ });
      await nora.typeAndSubmit(
        [
          ['Username', 'nora'],
          ['Password', password],
        ],
        { title: /^Change your password/ },
      );
      await nora.typeAndSubmit(
        [
          ['Current password', password],
          ['New password', 'amber quilt meadow 31'],
          ['New password again', 'amber quilt meadow 31'],
        ],
        { title: /^Your password was changed/ },
      );
      await nora.goto('/underwriting/queue', { title: /^Approval queue/ });
    });

    step('the agent sees the quote approved in their list, and a page that is not there', async () => {
      const agent = people.agent;
      await agent.goto('/quotes', { title: /^My quotes/ });
      const row = agent.page.getByRole('row').filter({ hasText: reference });
      assert.match(await row.innerText(), /Approved/);
      await agent.goto('/quotes/01900000-0000-7000-8000-000000000000', { status: 404 });
    });
  });
}
