// Child processes of a test cluster. Each one runs in its own process group, so
// stopping it also stops what it forked; the tracker stops all of them on teardown.

import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { ErrorCode, NodemeshError } from '../../core/errors.ts';

const OUTPUT_LIMIT = 1 << 20;

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Also append stdout and stderr to this file. */
  logFile?: string;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class ClusterProcess {
  readonly argv: string[];
  readonly child: ChildProcess;
  readonly pid: number;
  /** Resolves when the process has exited and its output is drained. */
  readonly exited: Promise<Exit>;
  #stdout = '';
  #stderr = '';
  #exit: Exit | undefined;
  readonly #log: WriteStream | undefined;
  readonly #watchers = new Set<() => void>();

  constructor(argv: string[], opts: SpawnOptions = {}) {
    this.argv = argv;
    this.#log = opts.logFile ? createWriteStream(opts.logFile, { flags: 'a' }) : undefined;
    this.child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], detached: true, env: opts.env ?? process.env, cwd: opts.cwd });
    this.child.stdin!.on('error', () => {});
    this.exited = new Promise((resolve) => {
      this.child.on('error', (err) => {
        this.#stderr += `cannot start ${argv[0]}: ${err.message}\n`;
      });
      this.child.on('close', (code, signal) => {
        this.#exit = { code, signal };
        this.#log?.end();
        this.#notify();
        resolve(this.#exit);
      });
    });
    this.pid = this.child.pid ?? -1;
    this.child.stdout!.on('data', (b: Buffer) => this.#append('stdout', b));
    this.child.stderr!.on('data', (b: Buffer) => this.#append('stderr', b));
  }

  get stdout(): string {
    return this.#stdout;
  }

  get stderr(): string {
    return this.#stderr;
  }

  get exitStatus(): Exit | undefined {
    return this.#exit;
  }

  #append(stream: 'stdout' | 'stderr', chunk: Buffer): void {
    this.#log?.write(chunk);
    const text = chunk.toString();
    // Keep the tail: long-running daemons log without end.
    if (stream === 'stdout') this.#stdout = (this.#stdout + text).slice(-OUTPUT_LIMIT);
    else this.#stderr = (this.#stderr + text).slice(-OUTPUT_LIMIT);
    this.#notify();
  }

  #notify(): void {
    for (const w of [...this.#watchers]) w();
  }

  /** Waits until stdout or stderr matches; rejects with the output when the process exits first or time runs out. */
  waitForOutput(pattern: string | RegExp, timeoutMs = 10_000): Promise<void> {
    const matches = () => (typeof pattern === 'string' ? this.#stdout.includes(pattern) || this.#stderr.includes(pattern) : pattern.test(this.#stdout) || pattern.test(this.#stderr));
    return new Promise((resolve, reject) => {
      const check = () => {
        if (matches()) done();
        else if (this.#exit) done(new NodemeshError(ErrorCode.CLUSTER_PROCESS, `${this.describe()} exited (${this.#exit.code ?? this.#exit.signal}) before printing ${pattern}\n${this.outputTail()}`));
      };
      const timer = setTimeout(() => done(new NodemeshError(ErrorCode.CLUSTER_PROCESS, `${this.describe()} did not print ${pattern} within ${timeoutMs} ms\n${this.outputTail()}`)), timeoutMs);
      const done = (err?: Error) => {
        clearTimeout(timer);
        this.#watchers.delete(check);
        if (err) reject(err);
        else resolve();
      };
      this.#watchers.add(check);
      check();
    });
  }

  /** Resolves with the exit once the process has exited; rejects with its output when it has not within `timeoutMs`. */
  async waitForExit(timeoutMs: number): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new NodemeshError(ErrorCode.CLUSTER_PROCESS, `${this.describe()} did not exit within ${timeoutMs} ms\n${this.outputTail()}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  describe(): string {
    return `process ${this.pid} (${this.argv.join(' ')})`;
  }

  outputTail(chars = 4000): string {
    return `--- stdout ---\n${this.#stdout.slice(-chars)}\n--- stderr ---\n${this.#stderr.slice(-chars)}`;
  }

  /** Signals the whole process group; a no-op once it has exited. */
  signal(sig: NodeJS.Signals): void {
    if (this.#exit || this.pid < 0) return;
    try {
      process.kill(-this.pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  async stop(graceMs = 2000): Promise<Exit> {
    if (this.#exit) return this.#exit;
    this.signal('SIGTERM');
    const timer = setTimeout(() => this.signal('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

export class ProcessTracker {
  readonly #live = new Set<ClusterProcess>();

  spawn(argv: string[], opts?: SpawnOptions): ClusterProcess {
    const proc = new ClusterProcess(argv, opts);
    this.#live.add(proc);
    void proc.exited.then(() => this.#live.delete(proc));
    return proc;
  }

  async stopAll(graceMs = 2000): Promise<void> {
    await Promise.all([...this.#live].map((p) => p.stop(graceMs)));
  }

  /** For the process 'exit' hook, where nothing asynchronous runs any more. */
  killAllSync(): void {
    for (const p of this.#live) p.signal('SIGKILL');
  }
}
