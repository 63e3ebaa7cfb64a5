// The one module that talks to Gantry's core (JSON-RPC 2.0 over a WebSocket, docs/api.md) and to the
// Tauri shell (invoke, dialog plugin). Everything else in the UI goes through the functions here.
import { invoke } from "@tauri-apps/api/core";
import { open as openDialog } from "@tauri-apps/plugin-dialog";

// ---------------------------------------------------------------------------------------------
// Types of the API contract (docs/api.md)
// ---------------------------------------------------------------------------------------------

/** Where core's API listens, as handed out by the shell or by `gantry serve`. */
export interface Endpoint {
  /** `ws://127.0.0.1:PORT/websocket` */
  ws_url: string;
  /** 64 lower-case hex digits, new at every launch. */
  token: string;
}

/** `server.info` result. */
export interface ServerInfo {
  gantry_version: string;
  api_version: [number, number, number];
  api_version_string: string;
  klippy_connected: boolean;
  klippy_state: string;
  hostname: string;
  platform: string;
  methods: string[];
}

export type PortType = "usb" | "pci" | "bluetooth" | "unknown";

export interface UsbInfo {
  /** 4 lower-case hex digits */
  vid: string;
  /** 4 lower-case hex digits */
  pid: string;
  manufacturer: string | null;
  product: string | null;
  serial_number: string | null;
}

export interface SimulatedPrinter {
  id: string;
  name: string;
  kind: "simulated";
  description: string;
  config: string;
}

export interface SerialPrinter {
  id: string;
  name: string;
  kind: "serial";
  port: string;
  port_type: PortType;
  usb: UsbInfo | null;
  board: string | null;
  /** The port's stable `/dev/serial/by-id/…` path, where udev made one (Linux). */
  by_id?: string | null;
}

export type Printer = SimulatedPrinter | SerialPrinter;

/** `printers.list` result. */
export interface PrinterList {
  printers: Printer[];
}

/** `twin_open` result. */
export interface TwinProcess {
  pid: number;
  path: string;
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/** Standard JSON-RPC 2.0 error codes. */
export const RpcErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
} as const;

/** A JSON-RPC error object returned by the server for one call. */
export class RpcError extends Error {
  override readonly name = "RpcError";
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message);
  }
}

/** The call never got an answer: the socket could not open, closed, or the server was too slow. */
export class TransportError extends Error {
  override readonly name = "TransportError";
  constructor(
    readonly kind: "connect" | "closed" | "timeout",
    message: string,
  ) {
    super(message);
  }
}

/** Turns whatever sits in a response's `error` member into an RpcError, tolerating bad shapes. */
export function toRpcError(error: unknown): RpcError {
  if (typeof error === "object" && error !== null) {
    const e = error as { code?: unknown; message?: unknown; data?: unknown };
    const code =
      typeof e.code === "number" && Number.isInteger(e.code) ? e.code : RpcErrorCode.InternalError;
    const message =
      typeof e.message === "string" && e.message !== "" ? e.message : `JSON-RPC error ${code}`;
    return new RpcError(code, message, e.data);
  }
  return new RpcError(RpcErrorCode.InternalError, `Malformed JSON-RPC error: ${String(error)}`);
}

/**
 * A Tauri command or plugin call failed. Gantry's commands reject with `{ kind, message }`
 * (e.g. `not_found`, `spawn_failed`); plugins reject with a plain string.
 */
export class ShellError extends Error {
  override readonly name = "ShellError";
  constructor(
    readonly kind: string,
    message: string,
  ) {
    super(message);
  }
}

/** Turns whatever a Tauri `invoke` or plugin call rejected with into a ShellError. */
export function toShellError(error: unknown): ShellError {
  if (error instanceof ShellError) return error;
  if (typeof error === "string") return new ShellError("error", error);
  if (typeof error === "object" && error !== null) {
    const e = error as { kind?: unknown; message?: unknown };
    if (typeof e.message === "string") {
      return new ShellError(typeof e.kind === "string" ? e.kind : "error", e.message);
    }
  }
  return new ShellError("error", errorMessage(error));
}

/** A message to show a person for any error thrown by this module (or anything else). */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  if (typeof error === "string") return error;
  if (typeof error === "object" && error !== null) {
    const message = (error as { message?: unknown }).message;
    if (typeof message === "string") return message;
    try {
      return JSON.stringify(error);
    } catch {
      // Fall through to String().
    }
  }
  return String(error);
}

/** Runs a shell call, turning its rejection into a ShellError. */
async function shell<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw toShellError(error);
  }
}

// ---------------------------------------------------------------------------------------------
// Incoming messages
// ---------------------------------------------------------------------------------------------

export type Incoming =
  | { kind: "result"; id: number | string; result: unknown }
  | { kind: "error"; id: number | string | null; error: RpcError }
  | { kind: "notification"; method: string; params: unknown }
  | { kind: "invalid"; reason: string };

/** Classifies one decoded JSON value received from the server. */
export function classifyMessage(msg: unknown): Incoming {
  if (typeof msg !== "object" || msg === null || Array.isArray(msg)) {
    return { kind: "invalid", reason: "not a JSON object" };
  }
  const m = msg as Record<string, unknown>;
  if (m.jsonrpc !== "2.0") return { kind: "invalid", reason: "missing jsonrpc: 2.0" };
  if (typeof m.method === "string" && !("id" in m)) {
    return { kind: "notification", method: m.method, params: m.params };
  }
  const id = m.id;
  const validId = typeof id === "number" || typeof id === "string";
  if ("error" in m && m.error !== undefined) {
    if (!validId && id !== null) return { kind: "invalid", reason: "bad id" };
    return { kind: "error", id: validId ? id : null, error: toRpcError(m.error) };
  }
  if ("result" in m) {
    if (!validId) return { kind: "invalid", reason: "bad id" };
    return { kind: "result", id, result: m.result };
  }
  return { kind: "invalid", reason: "neither result, error nor notification" };
}

/** Decodes one WebSocket text frame into zero or more messages (a batch is an array). */
export function parseFrame(text: string): Incoming[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return [{ kind: "invalid", reason: "not JSON" }];
  }
  return Array.isArray(value) ? value.map(classifyMessage) : [classifyMessage(value)];
}

// ---------------------------------------------------------------------------------------------
// JSON-RPC client
// ---------------------------------------------------------------------------------------------

/** What the client needs of a WebSocket: the browser's, or the `ws` package's in Node tests. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export type RpcParams = Record<string, unknown> | unknown[];

/** Anything that can make a call: the real client, or a fake in tests. */
export interface RpcCaller {
  call<T = unknown>(method: string, params?: RpcParams, options?: CallOptions): Promise<T>;
}

export interface CallOptions {
  /** Milliseconds before the call fails with a TransportError("timeout"). */
  timeoutMs?: number;
}

export interface RpcClientOptions {
  /** Default per-call timeout in milliseconds (10 s). */
  timeoutMs?: number;
}

interface Pending {
  method: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

const WS_OPEN = 1;

/** Removes the token from a URL before it appears in an error message. */
function redactUrl(url: string): string {
  return url.replace(/([?&]token=)[^&#]*/i, "$1…");
}

/**
 * A JSON-RPC 2.0 client over one WebSocket. The socket opens in the constructor; calls made
 * before it is open wait for it. Each call gets its own numeric id and promise; when the socket
 * closes, every pending call is rejected.
 */
export class RpcClient implements RpcCaller {
  readonly opened: Promise<void>;
  readonly closed: Promise<{ code: number; reason: string }>;
  private readonly socket: WebSocketLike;
  private readonly pending = new Map<number | string, Pending>();
  private readonly notificationListeners = new Set<(method: string, params: unknown) => void>();
  private readonly defaultTimeoutMs: number;
  private nextId = 1;
  private isOpen = false;
  private closeInfo: { code: number; reason: string } | null = null;

  constructor(
    readonly url: string,
    WebSocketImpl?: WebSocketConstructor,
    options: RpcClientOptions = {},
  ) {
    this.defaultTimeoutMs = options.timeoutMs ?? 10_000;
    const Impl =
      WebSocketImpl ??
      (globalThis as unknown as { WebSocket?: WebSocketConstructor }).WebSocket ??
      null;
    if (Impl === null) {
      throw new TransportError("connect", "No WebSocket implementation is available here");
    }

    let resolveOpened!: () => void;
    let rejectOpened!: (e: Error) => void;
    this.opened = new Promise<void>((resolve, reject) => {
      resolveOpened = resolve;
      rejectOpened = reject;
    });
    // Callers that never await `opened` must not cause an unhandled rejection.
    this.opened.catch(() => {});
    let resolveClosed!: (info: { code: number; reason: string }) => void;
    this.closed = new Promise((resolve) => {
      resolveClosed = resolve;
    });

    this.socket = new Impl(url);
    this.socket.onopen = () => {
      this.isOpen = true;
      resolveOpened();
    };
    this.socket.onerror = () => {
      // Browsers give no detail here; the close event that follows settles everything.
    };
    this.socket.onclose = (ev) => {
      const info = { code: ev?.code ?? 1006, reason: ev?.reason ?? "" };
      this.closeInfo = info;
      const wasOpen = this.isOpen;
      this.isOpen = false;
      if (!wasOpen) {
        rejectOpened(
          new TransportError(
            "connect",
            `Could not connect to Gantry core at ${redactUrl(url)} (refused, or wrong token)`,
          ),
        );
      }
      this.rejectAll(
        new TransportError(
          "closed",
          `Connection to Gantry core closed${info.reason ? `: ${info.reason}` : ""}`,
        ),
      );
      resolveClosed(info);
    };
    this.socket.onmessage = (ev) => this.receive(ev.data);
  }

  /** True while the socket is open. */
  get connected(): boolean {
    return this.isOpen && this.socket.readyState === WS_OPEN;
  }

  /** Number of calls waiting for an answer. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** Calls `method` and resolves with its result, or rejects with RpcError / TransportError. */
  async call<T = unknown>(
    method: string,
    params?: RpcParams,
    options: CallOptions = {},
  ): Promise<T> {
    if (this.closeInfo !== null) {
      throw new TransportError("closed", "Connection to Gantry core is closed");
    }
    if (!this.isOpen) await this.opened;
    if (this.closeInfo !== null) {
      throw new TransportError("closed", "Connection to Gantry core is closed");
    }
    const id = this.nextId++;
    const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs;
    const request: Record<string, unknown> = { jsonrpc: "2.0", method, id };
    if (params !== undefined) request.params = params;

    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) {
          reject(
            new TransportError(
              "timeout",
              `${method}: no answer from Gantry core in ${timeoutMs} ms`,
            ),
          );
        }
      }, timeoutMs);
      this.pending.set(id, {
        method,
        resolve: resolve as (value: unknown) => void,
        reject,
        timer,
      });
      try {
        this.socket.send(JSON.stringify(request));
      } catch (e) {
        this.settle(id, (p) =>
          p.reject(new TransportError("closed", `${method}: could not send: ${errorMessage(e)}`)),
        );
      }
    });
  }

  /** Subscribes to server notifications (messages without an id); returns the unsubscribe. */
  onNotification(listener: (method: string, params: unknown) => void): () => void {
    this.notificationListeners.add(listener);
    return () => this.notificationListeners.delete(listener);
  }

  /** Closes the socket; pending calls are rejected. */
  close(): void {
    try {
      this.socket.close(1000, "client closing");
    } catch {
      // Already closing or closed.
    }
  }

  private receive(data: unknown): void {
    let text: string;
    if (typeof data === "string") {
      text = data;
    } else if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
      text = new TextDecoder().decode(data as ArrayBuffer | ArrayBufferView);
    } else {
      return;
    }
    for (const msg of parseFrame(text)) {
      switch (msg.kind) {
        case "result":
          this.settle(msg.id, (p) => p.resolve(msg.result));
          break;
        case "error":
          if (msg.id !== null) this.settle(msg.id, (p) => p.reject(msg.error));
          break;
        case "notification":
          for (const listener of this.notificationListeners) listener(msg.method, msg.params);
          break;
        case "invalid":
          break;
      }
    }
  }

  private settle(id: number | string, action: (p: Pending) => void): void {
    // Ids we send are numbers; tolerate a server that echoes them back as strings.
    const key = this.pending.has(id) ? id : typeof id === "string" ? Number(id) : id;
    const p = this.pending.get(key);
    if (p === undefined) return;
    this.pending.delete(key);
    clearTimeout(p.timer);
    action(p);
  }

  private rejectAll(error: Error): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) {
      clearTimeout(p.timer);
      p.reject(error);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Finding the endpoint
// ---------------------------------------------------------------------------------------------

export const NOT_IN_GANTRY = "Not running inside Gantry: open the page with ?ws=…&token=…";

/** Reads `?ws=…&token=…` from a query string; null when either is missing or `ws` is not a ws URL. */
export function endpointFromQuery(search: string): Endpoint | null {
  const query = new URLSearchParams(search.startsWith("?") ? search.slice(1) : search);
  const ws = query.get("ws")?.trim() ?? "";
  const token = query.get("token")?.trim() ?? "";
  if (ws === "" || token === "") return null;
  let url: URL;
  try {
    url = new URL(ws);
  } catch {
    return null;
  }
  if (url.protocol !== "ws:" && url.protocol !== "wss:") return null;
  return { ws_url: ws, token };
}

/** The URL to open: `ws_url` with `?token=` set (docs/api.md, Moonraker's query name). */
export function connectUrl(ep: Endpoint): string {
  const url = new URL(ep.ws_url);
  url.searchParams.set("token", ep.token);
  return url.toString();
}

/** True inside the Tauri webview. */
export function inTauri(): boolean {
  return typeof window !== "undefined" && "__TAURI_INTERNALS__" in window;
}

function isEndpoint(value: unknown): value is Endpoint {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v.ws_url === "string" && typeof v.token === "string";
}

/**
 * Where core listens: from the shell (`api_endpoint`) in the desktop app, else from the page's
 * `?ws=…&token=…`. Throws when neither is available.
 */
export async function endpoint(): Promise<Endpoint> {
  if (inTauri()) {
    const ep: unknown = await shell(() => invoke("api_endpoint"));
    if (!isEndpoint(ep)) throw new Error("The Gantry shell returned a malformed API endpoint");
    return ep;
  }
  const search = typeof location !== "undefined" ? location.search : "";
  const ep = endpointFromQuery(search);
  if (ep === null) throw new Error(NOT_IN_GANTRY);
  return ep;
}

/** Finds the endpoint and opens a client; resolves once the socket is open. */
export async function connect(
  WebSocketImpl?: WebSocketConstructor,
  options?: RpcClientOptions,
): Promise<RpcClient> {
  const ep = await endpoint();
  const client = new RpcClient(connectUrl(ep), WebSocketImpl, options);
  await client.opened;
  return client;
}

// ---------------------------------------------------------------------------------------------
// Typed wrappers
// ---------------------------------------------------------------------------------------------

/** `server.info` */
export function serverInfo(rpc: RpcCaller): Promise<ServerInfo> {
  return rpc.call<ServerInfo>("server.info");
}

/** `printers.list` */
export function listPrinters(rpc: RpcCaller): Promise<PrinterList> {
  return rpc.call<PrinterList>("printers.list");
}

const DESKTOP_ONLY = "needs the Gantry desktop app (this page is running in a plain browser)";

/** Starts the digital twin on a G-code file, or on the bundled sample print when `path` is null;
 *  with `live`, the twin follows the app's printer (its job's file as the ghost). */
export async function openTwin(path: string | null, live = false): Promise<TwinProcess> {
  if (!inTauri()) throw new Error(`Opening the twin ${DESKTOP_ONLY}`);
  return shell(() => invoke<TwinProcess>("twin_open", { path, live }));
}

/** The G-code extensions the file chooser offers. */
export const GCODE_EXTENSIONS = ["gcode", "gco", "g", "bgcode"] as const;

/** Shows the system file chooser for one G-code file; null when the person cancels. */
export async function pickGcodeFile(): Promise<string | null> {
  if (!inTauri()) throw new Error(`The file chooser ${DESKTOP_ONLY}`);
  const picked = await shell(() =>
    openDialog({
      title: "Choose a G-code file",
      multiple: false,
      directory: false,
      filters: [{ name: "G-code", extensions: [...GCODE_EXTENSIONS] }],
    }),
  );
  return picked ?? null;
}

// ---------------------------------------------------------------------------------------------
// Printers served by core (the fleet) and their Moonraker-style methods
// ---------------------------------------------------------------------------------------------

/** Klippy's state as `webhooks.state` names it. */
export type KlippyState = "startup" | "ready" | "error" | "shutdown" | "disconnected";

/** The connection to a remote printer's server (`notify_printer_link`, fleet entries). */
export type LinkState =
  | { state: "connected" }
  /** A saved printer not connected yet since Gantry started. */
  | { state: "connecting"; reason: string; retry_in_ms: number }
  | { state: "reconnecting"; reason: string; retry_in_ms: number }
  | { state: "closed"; reason: string };

/** What is wrong with a fleet printer and what to do about it. */
export interface PrinterProblem {
  cause: string;
  advice: string;
}

export type BackendKind = "moonraker" | "octoprint" | "prusalink" | "local";

/** One printer core controls (`printers.fleet`). */
export interface FleetPrinter {
  id: string;
  name: string;
  address: string;
  kind: BackendKind;
  state: KlippyState | null;
  state_message: string | null;
  /** Remote printers: the link as last seen; null for Gantry's own. */
  link?: LinkState | null;
  /** Null when all is well. */
  problem?: PrinterProblem | null;
}

/** A printer advertised over mDNS (`printers.discovered`). */
export interface DiscoveredPrinter {
  id: string;
  kind: "moonraker" | "octoprint" | "prusalink" | "gantry";
  name: string;
  host: string;
  addresses: string[];
  port: number;
  url: string;
  uuid: string | null;
  version: string | null;
  txt: Record<string, string>;
  services: string[];
  /** The fleet kind `printers.add` would use; null for another Gantry. */
  backend: BackendKind | null;
  /** The fleet id when this printer is already added. */
  added: string | null;
}

/** Where mDNS browsing stands. */
export type MdnsState =
  | { state: "idle" }
  | { state: "browsing"; interfaces: string }
  | { state: "off"; message: string }
  | { state: "failed"; message: string };

/** `printers.discovered` result. */
export interface Discovered {
  mdns: MdnsState;
  network: DiscoveredPrinter[];
  usb: SerialPrinter[];
}

/** `printers.add` params: credentials stay in core once sent. */
export interface AddPrinterParams {
  url: string;
  api_key?: string;
  username?: string;
  password?: string;
  name?: string;
}

/** `printers.add` result. */
export interface AddPrinterResult {
  printer: FleetPrinter;
  probe: { kind: BackendKind; version: string | null; message: string };
  /** Kept for the next start (the desktop app keeps every printer added). */
  saved: boolean;
}

/** `printers.add` params for a board Gantry drives: the full path of its printer.cfg. */
export interface AddBoardParams {
  config: string;
  name?: string;
}

/** `printers.add` result for a board Gantry drives (no probe: Gantry is its Klipper host). */
export interface AddBoardResult {
  printer: FleetPrinter;
  /** Kept for the next start. */
  saved: boolean;
}

/** One change of `notify_printers_changed`. */
export interface PrintersChange {
  source: "fleet" | "network" | "usb";
  action: string;
  id?: string;
}

/** A camera of `server.webcams.list`, URLs absolute. */
export interface Webcam {
  name: string;
  service: string;
  enabled: boolean;
  stream_url: string;
  snapshot_url: string | null;
  flip_horizontal: boolean;
  flip_vertical: boolean;
  rotation: number;
}

/** Klipper's status objects: object name → fields (docs/api.md, Klipper's Status_Reference). */
export type StatusObjects = Record<string, Record<string, unknown>>;

/** `printer.objects.query` / `subscribe` parameter: object → null (all fields) or field names. */
export type ObjectQuery = Record<string, string[] | null>;

/** `printer.objects.subscribe` / `query` result. */
export interface StatusResult {
  eventtime: number;
  status: StatusObjects;
}

/** One file in a printer's G-code folder (`server.files.list`). */
export interface GcodeFile {
  path: string;
  size: number;
  modified: number;
  permissions: string;
}

/** `server.files.metadata` result. */
export interface FileMetadata {
  filename: string;
  size: number | null;
  modified: number | null;
  slicer: string | null;
  slicer_version: string | null;
  estimated_time: number | null;
  filament_total: number | null;
  layer_height: number | null;
  object_height: number | null;
}

/** One job of `server.history.list`. */
export interface HistoryJob {
  job_id: string;
  filename: string;
  status: string;
  start_time: number;
  end_time: number | null;
  print_duration: number;
  total_duration: number;
  filament_used: number;
}

/** One heater's series in `server.temperature_store`. */
export interface TemperatureSeries {
  temperatures: number[];
  targets: number[];
  powers: number[];
}

/** Adds the printer id to a method's params. */
function forPrinter(printer: string | null, params: Record<string, unknown> = {}) {
  return printer === null ? params : { ...params, printer };
}

/** `printers.fleet`: the printers core controls now. */
export function listFleet(rpc: RpcCaller): Promise<{ printers: FleetPrinter[] }> {
  return rpc.call<{ printers: FleetPrinter[] }>("printers.fleet");
}

/** Drops empty optional fields so core sees only what the person typed. */
function addParams(p: AddPrinterParams): Record<string, string> {
  const out: Record<string, string> = { url: p.url.trim() };
  for (const key of ["api_key", "username", "password", "name"] as const) {
    const v = p[key];
    if (v !== undefined && v.trim() !== "") out[key] = key === "password" ? v : v.trim();
  }
  return out;
}

/**
 * `printers.add`: core probes the address, connects and adds the printer. A probe that meets
 * timeouts takes a while, hence the long call timeout.
 */
export function addPrinter(rpc: RpcCaller, params: AddPrinterParams): Promise<AddPrinterResult> {
  return rpc.call<AddPrinterResult>("printers.add", addParams(params), { timeoutMs: 90_000 });
}

/**
 * `printers.add` with `config`: Gantry becomes the Klipper host of the boards the printer.cfg
 * names, connects and configures them (up to ~20 s, longer when the board is slow to answer),
 * and adds the printer `klipper:PATH`. Rejects with core's sentence: a printer.cfg error with its
 * file and line (-32602), already added (409), or what to check when the boards do not connect
 * (503).
 */
export function addBoard(rpc: RpcCaller, params: AddBoardParams): Promise<AddBoardResult> {
  const out: Record<string, string> = { config: params.config.trim() };
  const name = params.name?.trim() ?? "";
  if (name !== "") out.name = name;
  return rpc.call<AddBoardResult>("printers.add", out, { timeoutMs: 90_000 });
}

/**
 * `printers.remove`: closes a remote printer's connection, or a driven board's ports, and drops
 * it from the fleet (the built-in `sim` stays).
 */
export function removePrinter(rpc: RpcCaller, id: string): Promise<{ removed: string }> {
  return rpc.call<{ removed: string }>("printers.remove", { id }, { timeoutMs: 30_000 });
}

/**
 * `printers.rename`: gives a printer of the fleet another name (trimmed; 1 to 80 characters on
 * one line). `saved` says whether Gantry keeps it for its next start (a printer it restores).
 */
export function renamePrinter(
  rpc: RpcCaller,
  id: string,
  name: string,
): Promise<{ printer: FleetPrinter; saved: boolean }> {
  return rpc.call<{ printer: FleetPrinter; saved: boolean }>("printers.rename", { id, name }, { timeoutMs: 30_000 });
}

/** `printers.discovered`: mDNS advertisements and USB boards. */
export function discoveredPrinters(rpc: RpcCaller): Promise<Discovered> {
  return rpc.call<Discovered>("printers.discovered", {}, { timeoutMs: 30_000 });
}

/** `printers.subscribe`: the state now; `notify_printers_changed` follows. */
export function subscribePrinters(
  rpc: RpcCaller,
): Promise<Discovered & { fleet: FleetPrinter[] }> {
  return rpc.call("printers.subscribe", {}, { timeoutMs: 30_000 });
}

/** `server.webcams.list` */
export function listWebcams(rpc: RpcCaller, printer: string | null): Promise<{ webcams: Webcam[] }> {
  return rpc.call("server.webcams.list", forPrinter(printer));
}

/** `printer.objects.subscribe`: the status now; deltas follow as `notify_status_update`. */
export function subscribeObjects(
  rpc: RpcCaller,
  printer: string | null,
  objects: ObjectQuery,
): Promise<StatusResult> {
  return rpc.call<StatusResult>("printer.objects.subscribe", forPrinter(printer, { objects }));
}

/** `printer.objects.list` */
export function listObjects(rpc: RpcCaller, printer: string | null): Promise<{ objects: string[] }> {
  return rpc.call("printer.objects.list", forPrinter(printer));
}

/** `printer.gcode.script`: resolves when the printer has run it (M109 waits for heat). */
export function gcodeScript(rpc: RpcCaller, printer: string | null, script: string): Promise<string> {
  return rpc.call<string>("printer.gcode.script", forPrinter(printer, { script }), {
    timeoutMs: 60 * 60 * 1000,
  });
}

/** `printer.print.start` */
export function printStart(rpc: RpcCaller, printer: string | null, filename: string): Promise<string> {
  return rpc.call<string>("printer.print.start", forPrinter(printer, { filename }), {
    timeoutMs: 60_000,
  });
}

/** `printer.print.pause` / `resume` / `cancel` */
export function printControl(
  rpc: RpcCaller,
  printer: string | null,
  action: "pause" | "resume" | "cancel",
): Promise<string> {
  return rpc.call<string>(`printer.print.${action}`, forPrinter(printer), { timeoutMs: 60_000 });
}

/** `printer.emergency_stop` */
export function emergencyStop(rpc: RpcCaller, printer: string | null): Promise<string> {
  return rpc.call<string>("printer.emergency_stop", forPrinter(printer));
}

/** `server.files.list` */
export function listFiles(rpc: RpcCaller, printer: string | null): Promise<GcodeFile[]> {
  return rpc.call<GcodeFile[]>("server.files.list", forPrinter(printer, { root: "gcodes" }));
}

/** `server.files.metadata`: the printer's own estimate of the file (planner on Gantry's host). */
export function fileMetadata(
  rpc: RpcCaller,
  printer: string | null,
  filename: string,
): Promise<FileMetadata> {
  return rpc.call<FileMetadata>("server.files.metadata", forPrinter(printer, { filename }), {
    timeoutMs: 120_000,
  });
}

/** Bytes → base64, in chunks (large files would overflow `String.fromCharCode(...bytes)`). */
export function toBase64(bytes: Uint8Array): string {
  let binary = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) {
    binary += String.fromCharCode(...bytes.subarray(i, i + chunk));
  }
  return btoa(binary);
}

/** `server.files.upload` (Gantry's form: the content as base64 over the WebSocket). */
export function uploadFile(
  rpc: RpcCaller,
  printer: string | null,
  filename: string,
  content: Uint8Array,
  print = false,
): Promise<{ item: { path: string; size: number } }> {
  return rpc.call(
    "server.files.upload",
    forPrinter(printer, { filename, content_base64: toBase64(content), print }),
    { timeoutMs: 10 * 60_000 },
  );
}

/** `server.files.delete_file` */
export function deleteFile(rpc: RpcCaller, printer: string | null, path: string): Promise<unknown> {
  return rpc.call("server.files.delete_file", forPrinter(printer, { path: `gcodes/${path}` }));
}

/** `server.history.list` */
export function listHistory(
  rpc: RpcCaller,
  printer: string | null,
  limit = 50,
): Promise<{ count: number; jobs: HistoryJob[] }> {
  return rpc.call("server.history.list", forPrinter(printer, { limit }));
}

/** `server.temperature_store`: the heaters' last 20 minutes, one sample a second. */
export function temperatureStore(
  rpc: RpcCaller,
  printer: string | null,
): Promise<Record<string, TemperatureSeries>> {
  return rpc.call("server.temperature_store", forPrinter(printer));
}

/** Notifications core sends about a printer: the method and the printer id (last param). */
export interface PrinterNotification {
  method: string;
  printer: string | null;
  params: unknown[];
}

/** Splits a notification's params into its own and the printer id core appends. */
export function printerNotification(method: string, params: unknown): PrinterNotification | null {
  if (!method.startsWith("notify_") || !Array.isArray(params)) return null;
  const last = params[params.length - 1];
  const printer = typeof last === "string" && method !== "notify_gcode_response" ? last : null;
  if (method === "notify_gcode_response") {
    const id = params.length >= 2 && typeof params[1] === "string" ? params[1] : null;
    return { method, printer: id, params: params.slice(0, 1) };
  }
  return { method, printer, params: printer === null ? params : params.slice(0, -1) };
}
