// The selected printer, live: the fleet core serves (with each printer's link and problem), the
// chosen printer's Klipper status objects kept current from `notify_status_update` deltas, its
// console lines, temperature series and webcams; and what core finds (mDNS, USB) once the Printers
// page asks. Pages read this store; every call goes through api.ts.
import {
  addBoard,
  addPrinter,
  discoveredPrinters,
  errorMessage,
  gcodeScript,
  listFleet,
  listObjects,
  listWebcams,
  printerNotification,
  removePrinter,
  renamePrinter,
  subscribeObjects,
  subscribePrinters,
  temperatureStore,
  type AddBoardParams,
  type AddBoardResult,
  type AddPrinterParams,
  type AddPrinterResult,
  type Discovered,
  type FleetPrinter,
  type ObjectQuery,
  type PrintersChange,
  type RpcCaller,
  type StatusObjects,
  type Webcam,
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
  /** The selected printer's cameras (`server.webcams.list`), enabled ones only. */
  webcams = $state<Webcam[]>([]);
  /** What core finds (after `watchPrinters`); null until it answered. */
  discovered = $state<Discovered | null>(null);
  discoverError = $state<string | null>(null);
  private nextLine = 1;
  private sampler: ReturnType<typeof setInterval> | null = null;
  private generation = 0;
  private fleetGeneration = 0;
  private watchCall: Promise<void> | null = null;
  private discoverGeneration = 0;

  constructor(private readonly connection: Connection) {
    connection.onNotification((method, params) => this.notify(method, params));
    connection.onConnected(() => {
      void this.refresh();
      // The fleet's links and what core finds stay current on every page.
      void this.watchPrinters();
    });
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
    this.webcams = [];
    if (id === null) return;
    const client = rpc ?? (await this.connection.ready());
    void this.loadWebcams(client, id);
    const { objects } = await listObjects(client, id);
    const query: ObjectQuery = {};
    for (const name of objects) query[name] = null;
    // Klipper's usual objects too, listed or not yet: a remote printer's objects appear as its
    // server reports them (OctoPrint's temperatures come with its first push), and a
    // subscription made before then must still carry them.
    for (const name of [
      "webhooks",
      "virtual_sdcard",
      "display_status",
      "idle_timeout",
      "print_stats",
      "toolhead",
      "motion_report",
      "gcode_move",
      "fan",
      "extruder",
      "heater_bed",
    ]) {
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

  /** The selected printer's enabled cameras; none when it has none or cannot say. */
  private async loadWebcams(rpc: RpcCaller, id: string): Promise<void> {
    try {
      const { webcams } = await listWebcams(rpc, id);
      if (this.selected === id) this.webcams = webcams.filter((w) => w.enabled);
    } catch {
      // A backend without cameras (or one that cannot list them) shows none.
    }
  }

  /**
   * Follows the fleet and what core finds: subscribes to `notify_printers_changed` and loads the
   * discovered printers. Runs after every (re)connection.
   */
  watchPrinters(): Promise<void> {
    // One call at a time: the connection and the Printers page may both ask at once.
    this.watchCall ??= this.subscribePrinters().finally(() => {
      this.watchCall = null;
    });
    return this.watchCall;
  }

  private async subscribePrinters(): Promise<void> {
    const mine = ++this.discoverGeneration;
    try {
      const rpc = await this.connection.ready();
      const state = await subscribePrinters(rpc);
      if (mine !== this.discoverGeneration) return;
      this.discovered = { mdns: state.mdns, network: state.network, usb: state.usb };
      this.applyFleet(state.fleet);
      this.discoverError = null;
    } catch (error) {
      if (mine === this.discoverGeneration) this.discoverError = errorMessage(error);
    }
  }

  /** Loads what core finds again. */
  async reloadDiscovered(): Promise<void> {
    const mine = ++this.discoverGeneration;
    try {
      const rpc = await this.connection.ready();
      const found = await discoveredPrinters(rpc);
      if (mine !== this.discoverGeneration) return;
      this.discovered = found;
      this.discoverError = null;
    } catch (error) {
      if (mine === this.discoverGeneration) this.discoverError = errorMessage(error);
    }
  }

  /** Loads the fleet again without touching the selected printer's live state. */
  async reloadFleet(): Promise<void> {
    const mine = ++this.fleetGeneration;
    try {
      const rpc = await this.connection.ready();
      const { printers } = await listFleet(rpc);
      if (mine === this.fleetGeneration) this.applyFleet(printers);
    } catch (error) {
      this.loadError = errorMessage(error);
    }
  }

  private applyFleet(printers: FleetPrinter[]): void {
    this.fleet = printers;
    // The selected printer left: show the first one instead.
    if (!printers.some((p) => p.id === this.selected)) {
      void this.select(printers[0]?.id ?? null).catch(() => {});
    }
  }

  /** Adds a printer by address; it becomes the selected one. Rejects with core's sentence. */
  async add(params: AddPrinterParams): Promise<AddPrinterResult> {
    const rpc = await this.connection.ready();
    const result = await addPrinter(rpc, params);
    await this.joined(rpc, result.printer);
    return result;
  }

  /**
   * Adds a board Gantry drives with its printer.cfg; it becomes the selected one. Rejects with
   * core's sentence.
   */
  async addBoard(params: AddBoardParams): Promise<AddBoardResult> {
    const rpc = await this.connection.ready();
    const result = await addBoard(rpc, params);
    await this.joined(rpc, result.printer);
    return result;
  }

  /** A printer just added: listed at once, selected, and the fleet reloaded behind it. */
  private async joined(rpc: RpcCaller, printer: FleetPrinter): Promise<void> {
    if (!this.fleet.some((p) => p.id === printer.id)) {
      this.fleet = [...this.fleet, printer];
    }
    await this.select(printer.id, rpc).catch(() => {});
    void this.reloadFleet();
  }

  /** Removes a printer: a remote one, or a board Gantry drives (not the built-in `sim`). */
  async remove(id: string): Promise<void> {
    const rpc = await this.connection.ready();
    await removePrinter(rpc, id);
    this.applyFleet(this.fleet.filter((p) => p.id !== id));
    void this.reloadFleet();
  }

  /** Renames a printer of the fleet; whether Gantry keeps the name for its next start. */
  async rename(id: string, name: string): Promise<boolean> {
    const rpc = await this.connection.ready();
    const { printer, saved } = await renamePrinter(rpc, id, name);
    this.applyFleet(this.fleet.map((p) => (p.id === id ? printer : p)));
    return saved;
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
    if (method === "notify_printers_changed") {
      const change = (Array.isArray(params) ? params[0] : null) as PrintersChange | null;
      if (change?.source === "fleet") void this.reloadFleet();
      else if (change?.source === "network" || change?.source === "usb") void this.reloadDiscovered();
      return;
    }
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
