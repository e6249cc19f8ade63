// The quoteline server under test, as a process of its own: `demo --no-serve` fills the
// database given (demo people of every role, a dozen quotes in every status, so lists
// and the log have rows of every kind), then `serve` listens on a port the system picks.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

/** Runs `quoteline demo --no-serve` and returns the sign-ins it prints, by username. */
export async function seedDemo(bin, databaseUrl) {
  const { stdout } = await run(bin, ['demo', '--no-serve', '--quiet'], databaseUrl);
  // The table it prints: a header line `username password role`, then one line a person.
  const signIns = new Map();
  const lines = stdout.split('\n');
  const header = lines.findIndex((line) => /^\s*username\s+password\s+role\s*$/.test(line));
  if (header < 0) throw new Error(`quoteline demo printed no table of sign-ins:\n${stdout}`);
  for (const line of lines.slice(header + 1)) {
    const [username, password, ...roles] = line.trim().split(/[\s,]+/);
    if (username && password) signIns.set(username, { username, password, roles });
  }
  return signIns;
}

/**
 * Starts `quoteline serve` on 127.0.0.1 and a free port, and resolves once it says where
 * it serves. `stop()` ends it and resolves when it has exited.
 */
export async function serve(bin, databaseUrl) {
  const child = spawn(bin, ['serve'], {
    env: { ...process.env, DATABASE_URL: databaseUrl, BIND: '127.0.0.1:0', RUST_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Never outlive the test, however it ends.
  const orphanGuard = () => child.kill('SIGKILL');
  process.on('exit', orphanGuard);
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const exited = once(child, 'exit').finally(() => process.off('exit', orphanGuard));
  const lines = createInterface({ input: child.stdout });
  const address = await new Promise((resolve, reject) => {
    lines.on('line', (line) => {
      const found = /serving on (http:\/\/\S+)/.exec(line);
      if (found) resolve(found[1]);
    });
    exited.then(([code, signal]) =>
      reject(new Error(`quoteline serve exited (${code ?? signal}) before serving:\n${stderr}`)),
    );
  });
  return {
    baseUrl: address,
    /** What the server wrote to standard error so far (its warnings and errors). */
    log: () => stderr,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
      await exited;
    },
  };
}

async function run(bin, args, databaseUrl) {
  const child = spawn(bin, args, {
    env: { ...process.env, DATABASE_URL: databaseUrl },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => {
    stdout += chunk;
  });
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  // 'close', not 'exit': the output is whole only once its pipes are closed.
  const [code, signal] = await once(child, 'close');
  if (code !== 0) {
    throw new Error(`quoteline ${args.join(' ')} failed (${code ?? signal}):\n${stdout}${stderr}`);
  }
  return { stdout, stderr };
}
