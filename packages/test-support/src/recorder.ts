import type { BeehiveModule, Logger, Message } from '@edgecore/beehive';

/** A beehive module that keeps every message it receives (a stand-in for a module under test's peer). */
export function recorderModule(
  name: string,
  group: string,
): { module: BeehiveModule; messages: Message<unknown>[] } {
  const messages: Message<unknown>[] = [];
  return {
    messages,
    module: {
      name,
      group,
      enable: () => true,
      async start(c) {
        for await (const m of c.receive(name)) messages.push(m);
      },
    },
  };
}

/** A logger that keeps every line. */
export function recordingLogger(into: { level: string; obj: any; msg?: string }[]): Logger {
  const rec = (level: string) => (obj: object | string, msg?: string) => into.push({ level, obj, msg });
  return { debug: rec('debug'), info: rec('info'), warn: rec('warn'), error: rec('error') };
}
