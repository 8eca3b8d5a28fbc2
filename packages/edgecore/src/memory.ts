import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import { scrapedCounter, type MetricsContribution } from '@edgecore/beehive';
import type { Registry } from 'prom-client';

/** What the releaser watches and when it acts. */
export interface MemoryReleaseOptions {
  /** Release when V8's heap has grown this far past what the last release left (MiB); 0: never. */
  growthMiB: number;
  /** The window the event loop must have been quiet over before a release (ms). */
  quietMs: number;
  /** Quiet means the loop was busy less than this share of the window (0–1). */
  quietUtilization?: number;
  /**
   * Gives the C allocator's free pages back after the collection (the addon's `trimMalloc`): what
   * the burst freed outside V8's heap — SQLite's pages, buffers, V8's own malloc — stays resident
   * in glibc's arenas otherwise (~3 MiB at 10,000 services).
   */
  trim?: () => unknown;
}

export interface MemoryReleaseStats {
  releases: number;
  /** Time the releases paused the process, in total (s). */
  pauseSeconds: number;
  /** Heap given back by the releases, in total (bytes; V8's committed heap before minus after). */
  releasedBytes: number;
}

/**
 * Gives the memory a burst left behind back to the system once the process is quiet again.
 *
 * A burst (a node joining 10,000 services, a catalog churning) grows V8's heap far past the data
 * that survives it: at 10,000 services 100 MiB committed for 52 MiB live. V8's own memory reducer
 * gives it back, but only after 30–60 s of low allocation; until then the node's resident memory
 * stays ~45 MiB higher. When the committed heap has grown `growthMiB` past what the last release
 * left and the event loop was quiet over the last `quietMs`, this asks V8 for the collection
 * its reducer would make (a low-memory notification: full collections that also shrink the young
 * generation), through the in-process inspector session — no port is opened. The collection is
 * a pause (0.1–0.2 s at 10,000 services: several full collections), which is why it waits for a quiet loop and only follows
 * growth: a steady node never pays it.
 */
export class MemoryReleaser implements MetricsContribution {
  readonly stats: MemoryReleaseStats = { releases: 0, pauseSeconds: 0, releasedBytes: 0 };
  private timer?: NodeJS.Timeout;
  private elu?: EventLoopUtilization;
  private baseline = getHeapStatistics().total_heap_size;
  private releasing = false;

  constructor(private readonly opts: MemoryReleaseOptions) {}

  get enabled(): boolean {
    return this.opts.growthMiB > 0;
  }

  registerMetrics(registry: Registry): void {
    const st = this.stats;
    scrapedCounter(
      registry,
      'edgecore_memory_releases_total',
      'Collections that gave back the heap a burst left (memory.releaseAfterGrowthMiB).',
      () => st.releases,
    );
    scrapedCounter(
      registry,
      'edgecore_memory_release_pause_seconds_total',
      'Time those collections paused the node.',
      () => st.pauseSeconds,
    );
    scrapedCounter(
      registry,
      'edgecore_memory_released_bytes_total',
      "V8's committed heap those collections gave back.",
      () => st.releasedBytes,
    );
  }

  start(): void {
    if (!this.enabled || this.timer) return;
    this.elu = performance.eventLoopUtilization();
    this.timer = setInterval(() => this.check(), this.opts.quietMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One look: the loop's business over the window since the last look, and the heap's growth. */
  private check(): void {
    const now = performance.eventLoopUtilization();
    const busy = performance.eventLoopUtilization(now, this.elu).utilization;
    this.elu = now;
    if (this.releasing || busy >= (this.opts.quietUtilization ?? 0.1)) return;
    const total = getHeapStatistics().total_heap_size;
    // a heap that shrank on its own (V8's reducer) is the new baseline
    if (total < this.baseline) this.baseline = total;
    if (total - this.baseline >= this.opts.growthMiB * 1024 * 1024) void this.release();
  }

  /** Collect now (resolves once V8 is done); the heap it leaves is the new baseline. */
  async release(): Promise<void> {
    this.releasing = true;
    let inspector: typeof import('node:inspector');
    try {
      // loaded when first needed: a node built without the inspector throws on loading it
      inspector = await import('node:inspector');
    } catch {
      this.stop(); // leave it to V8's reducer from now on
      this.releasing = false;
      return;
    }
    const before = getHeapStatistics().total_heap_size;
    const t0 = performance.now();
    return new Promise<void>((resolve) => {
      const session = new inspector.Session();
      const done = (): void => {
        // (not from inside the session's own callback: that leaves the process hanging)
        setImmediate(() => session.disconnect());
        this.opts.trim?.();
        const after = getHeapStatistics().total_heap_size;
        this.stats.releases += 1;
        this.stats.pauseSeconds += (performance.now() - t0) / 1000;
        this.stats.releasedBytes += Math.max(0, before - after);
        this.baseline = after;
        this.releasing = false;
        resolve();
      };
      try {
        session.connect();
        session.post('HeapProfiler.collectGarbage', done);
      } catch {
        this.stop();
        this.releasing = false;
        resolve();
      }
    });
  }
}
