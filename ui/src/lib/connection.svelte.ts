// The API connection store: one client to core, its state (connecting / connected / failed) as a
// Svelte 5 rune, and `ready()` for pages that need a client. Reconnects on demand after a failure.
import { connect as defaultConnect, errorMessage, type RpcCaller, type RpcClient } from "./api";

export type ConnectionState =
  { status: "connecting" } | { status: "connected" } | { status: "failed"; message: string };

/** What pages need from the connection: a client once there is one. */
export interface ClientSource {
  ready(): Promise<RpcCaller>;
}

/** Opens a client; the default finds the endpoint and opens a WebSocket (api.ts). */
export type Connector = () => Promise<
  Pick<RpcClient, "call" | "closed" | "close"> & Partial<Pick<RpcClient, "onNotification">>
>;

type NotificationListener = (method: string, params: unknown) => void;

export class Connection implements ClientSource {
  state = $state<ConnectionState>({ status: "connecting" });
  private client: Awaited<ReturnType<Connector>> | null = null;
  private attempt: Promise<RpcCaller> | null = null;
  private readonly listeners = new Set<NotificationListener>();
  private readonly connectedListeners = new Set<() => void>();

  constructor(private readonly connector: Connector = () => defaultConnect()) {}

  /** Resolves with a connected client, connecting (again) when there is none. */
  ready(): Promise<RpcCaller> {
    if (this.client !== null && this.state.status === "connected") {
      return Promise.resolve(this.client);
    }
    return this.attempt ?? this.start();
  }

  /** Starts a fresh connection attempt unless one is under way or a client is connected. */
  retry(): Promise<RpcCaller> {
    return this.ready();
  }

  /** Hears every server notification, on this client and the ones after a reconnect. */
  onNotification(listener: NotificationListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Called after each (re)connection, e.g. to subscribe again. */
  onConnected(listener: () => void): () => void {
    this.connectedListeners.add(listener);
    return () => this.connectedListeners.delete(listener);
  }

  /** Closes the current client (used when the page goes away). */
  dispose(): void {
    this.client?.close();
    this.client = null;
  }

  private start(): Promise<RpcCaller> {
    this.state = { status: "connecting" };
    const attempt = this.connector().then(
      (client) => {
        this.client = client;
        this.attempt = null;
        this.state = { status: "connected" };
        client.onNotification?.((method, params) => {
          for (const l of this.listeners) l(method, params);
        });
        queueMicrotask(() => {
          for (const l of this.connectedListeners) l();
        });
        void client.closed.then((info) => {
          if (this.client !== client) return;
          this.client = null;
          this.state = {
            status: "failed",
            message: `Connection to Gantry core closed (code ${info.code}${info.reason ? `: ${info.reason}` : ""})`,
          };
        });
        return client as RpcCaller;
      },
      (error: unknown) => {
        this.attempt = null;
        this.state = { status: "failed", message: errorMessage(error) };
        throw error;
      },
    );
    this.attempt = attempt;
    return attempt;
  }
}

/** The app's one connection to core. */
export const connection = new Connection();
