// The selected printer, live: the fleet core serves, the chosen printer's Klipper status objects
// kept current from `notify_status_update` deltas, its console lines and its temperature series.
// Pages read this store; every call goes through api.ts.
import {
  errorMessage,
  gcodeScript,
  listFleet,
  listObjects,
  printerNotification,
  subscribeObjects,
  temperatureStore,
  type FleetPrinter,
  type ObjectQuery,
  type RpcCaller,
  type StatusObjects,
} from "./api";
import type { Connection } from "./connection.svelte";
import { heaters, mergeStatus, pushSample } from "./status";

/** One line of the console. */
export interface ConsoleLine {
  id: number;
  kind: "command" | "response" | "error" | "info";
  text: string;
  at: number;
}

/** Samples the chart keeps per heater (20 minutes at 1 Hz). */
export const SERIES_CAPACITY = 1200;
/** Console lines kept. */
export const CONSOLE_CAPACITY = 1000;

export interface Series {
  temperatures: number[];
  targets: number[];
}

/** The kind of a console line from the text Klipper sent. */
export function lineKind(text: string): ConsoleLine["kind"] {
  if (text.startsWith("!!")) return "error";
  if (text.startsWith("//")) return "info";
  return "response";
}

export class PrinterStore {
  fleet = $state<FleetPrinter[]>([]);
  selected = $state<string | null>(null);
  status = $state<StatusObjects>({});
  consoleLines = $state<ConsoleLine[]>([]);
  series = $state<Record<string, Series>>({});
  loadError = $state<string | null>(null);
  loading = $state(false);
  private nextLine = 1;
  private sampler: ReturnType<typeof setInterval> | null = null;
  private generation = 0;

  constructor(private readonly connection: Connection) {
    connection.onNotification((method, params) => this.notify(method, params));
    connection.onConnected(() => void this.refresh());
  }

  /** The selected printer's fleet entry. */
  get printer(): FleetPrinter | null {
    return this.fleet.find((p) => p.id === this.selected) ?? null;
  }

  /** Loads the fleet, keeps or picks the selection, and subscribes to it. */
  async refresh(): Promise<void> {
    const mine = ++this.generation;
    this.loading = true;
    try {
      const rpc = await this.connection.ready();
      const { printers } = await listFleet(rpc);
      if (mine !== this.generation) return;
      this.fleet = printers;
      const keep = printers.some((p) => p.id === this.selected);
      const id = keep ? this.selected : (printers[0]?.id ?? null);
      await this.select(id, rpc);
      this.loadError = null;
    } catch (error) {
      if (mine === this.generation) this.loadError = errorMessage(error);
    } finally {
      if (mine === this.generation) this.loading = false;
    }
  }

  /** Shows printer `id` (null: none) and subscribes to every status object of it. */
  async select(id: string | null, rpc?: RpcCaller): Promise<void> {
    this.selected = id;
    this.status = {};
    this.series = {};
    if (id === null) return;
    const client = rpc ?? (await this.connection.ready());
    const { objects } = await listObjects(client, id);
    const query: ObjectQuery = {};
    for (const name of objects) query[name] = null;
    for (const name of ["webhooks", "virtual_sdcard", "display_status", "idle_timeout"]) {
      query[name] = null;
    }
    const result = await subscribeObjects(client, id, query);
    if (this.selected !== id) return;
    this.status = result.status;
    try {
      const store = await temperatureStore(client, id);
      const series: Record<string, Series> = {};
      for (const [name, s] of Object.entries(store)) {
        series[name] = {
          temperatures: s.temperatures.slice(-SERIES_CAPACITY),
          targets: s.targets.slice(-SERIES_CAPACITY),
        };
      }
      if (this.selected === id) this.series = series;
    } catch {
      // A printer without a temperature store starts its chart empty.
    }
    this.startSampler();
  }

  /** Runs G-code on the selected printer, echoing it in the console. */
  async send(script: string): Promise<void> {
    const id = this.selected;
    if (id === null) throw new Error("No printer is selected");
    this.append("command", script);
    try {
      const rpc = await this.connection.ready();
      await gcodeScript(rpc, id, script);
    } catch (error) {
      this.append("error", `!! ${errorMessage(error)}`);
      throw error;
    }
  }

  /** Clears the console. */
  clearConsole(): void {
    this.consoleLines = [];
  }

  dispose(): void {
    if (this.sampler !== null) clearInterval(this.sampler);
    this.sampler = null;
  }

  private append(kind: ConsoleLine["kind"], text: string): void {
    const line = { id: this.nextLine++, kind, text, at: Date.now() };
    const next =
      this.consoleLines.length >= CONSOLE_CAPACITY
        ? this.consoleLines.slice(this.consoleLines.length - CONSOLE_CAPACITY + 1)
        : this.consoleLines.slice();
    next.push(line);
    this.consoleLines = next;
  }

  private notify(method: string, params: unknown): void {
    const n = printerNotification(method, params);
    if (n === null || (n.printer !== null && n.printer !== this.selected)) return;
    if (n.method === "notify_status_update") {
      const delta = n.params[0];
      if (delta !== null && typeof delta === "object") {
        this.status = mergeStatus(this.status, delta as StatusObjects);
      }
    } else if (n.method === "notify_gcode_response") {
      const text = n.params[0];
      if (typeof text === "string") this.append(lineKind(text), text);
    } else if (n.method === "notify_filelist_changed" || n.method === "notify_history_changed") {
      this.changes++;
    }
  }

  /** Bumped when the printer's files or history change (pages reload on it). */
  changes = $state(0);

  /** One sample a second of each heater, for the chart. */
  private startSampler(): void {
    if (this.sampler !== null) return;
    this.sampler = setInterval(() => {
      const next: Record<string, Series> = { ...this.series };
      for (const h of heaters(this.status)) {
        const s = next[h.name] ?? { temperatures: [], targets: [] };
        next[h.name] = {
          temperatures: pushSample(s.temperatures, h.temperature, SERIES_CAPACITY),
          targets: pushSample(s.targets, h.target, SERIES_CAPACITY),
        };
      }
      this.series = next;
    }, 1000);
  }
}
