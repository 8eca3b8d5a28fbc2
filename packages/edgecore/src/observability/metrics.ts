/**
 * A small Prometheus text-format registry (exposition format 0.0.4). Collectors are read at scrape
 * time from the modules' own counters, so the hot paths keep plain integer increments.
 */
export interface Sample {
  labels?: Record<string, string>;
  value: number;
}
export interface MetricFamily {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  samples: Sample[];
}
export type Collector = () => MetricFamily[];

export class MetricsRegistry {
  private readonly collectors: Collector[] = [];

  register(c: Collector): void {
    this.collectors.push(c);
  }

  render(): string {
    const out: string[] = [];
    for (const c of this.collectors) {
      for (const f of c()) {
        out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
        for (const s of f.samples)
          out.push(`${f.name}${renderLabels(s.labels)} ${Number.isFinite(s.value) ? s.value : 0}`);
      }
    }
    return out.join('\n') + '\n';
  }
}

function renderLabels(l?: Record<string, string>): string {
  if (!l) return '';
  const parts = Object.entries(l).map(
    ([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`,
  );
  return parts.length ? `{${parts.join(',')}}` : '';
}
