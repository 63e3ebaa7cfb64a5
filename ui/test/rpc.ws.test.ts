// The JSON-RPC client over a REAL WebSocket: a small JSON-RPC 2.0 server built on the `ws` package
// runs in the test (token checked at the handshake, as core does), and the client talks to it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AddressInfo } from "node:net";
import { WebSocket, WebSocketServer } from "ws";
import {
  RpcClient,
  RpcError,
  TransportError,
  connectUrl,
  listPrinters,
  serverInfo,
  type WebSocketConstructor,
} from "../src/lib/api";
import { rejection } from "./helpers";

const TOKEN = "0123456789abcdef".repeat(4);
const NodeWebSocket = WebSocket as unknown as WebSocketConstructor;

type Handler = (params: unknown, socket: WebSocket) => unknown;

const methods: Record<string, Handler> = {
  "server.info": () => ({
    gantry_version: "0.0.0-test",
    api_version: [0, 1, 0],
    api_version_string: "0.1.0",
    klippy_connected: false,
    klippy_state: "disconnected",
    hostname: "test-host",
    platform: "linux",
    methods: Object.keys(methods).sort(),
  }),
  "printers.list": () => ({
    printers: [
      {
        id: "sim",
        name: "Gantry simulated printer",
        kind: "simulated",
        description: "test",
        config: "gantry-sim.cfg",
      },
    ],
  }),
  echo: (params) => params,
  fail: () => {
    throw { code: -32602, message: "Invalid params: expected x", data: { field: "x" } };
  },
  // Never answers: the test checks the client's timeout.
  hang: () => undefined,
  // Closes the connection instead of answering.
  drop: (_params, socket) => {
    socket.close(1011, "dropped by test");
    return undefined;
  },
};

let server: WebSocketServer;
let wsUrl: string;
const received: unknown[] = [];

beforeAll(async () => {
  server = new WebSocketServer({
    host: "127.0.0.1",
    port: 0,
    path: "/websocket",
    verifyClient: (info, done) => {
      const url = new URL(info.req.url ?? "/", "http://localhost");
      if (url.searchParams.get("token") === TOKEN) done(true);
      else done(false, 401, "Unauthorized");
    },
  });
  await new Promise<void>((resolve) => server.once("listening", () => resolve()));
  const { port } = server.address() as AddressInfo;
  wsUrl = `ws://127.0.0.1:${port}/websocket`;

  server.on("connection", (socket) => {
    socket.on("message", (raw) => {
      let req: { jsonrpc?: unknown; id?: unknown; method?: unknown; params?: unknown };
      try {
        req = JSON.parse(String(raw));
      } catch {
        socket.send(
          JSON.stringify({
            jsonrpc: "2.0",
            id: null,
            error: { code: -32700, message: "Parse error" },
          }),
        );
        return;
      }
      received.push(req);
      const { id, method, params } = req;
      if (typeof method !== "string" || !(method in methods)) {
        socket.send(
          JSON.stringify({
            jsonrpc: "2.0",
            id,
            error: { code: -32601, message: `Method not found: ${String(method)}` },
          }),
        );
        return;
      }
      try {
        const result = methods[method]!(params, socket);
        if (result !== undefined) socket.send(JSON.stringify({ jsonrpc: "2.0", id, result }));
      } catch (error) {
        socket.send(JSON.stringify({ jsonrpc: "2.0", id, error }));
      }
    });
  });
});

afterAll(async () => {
  for (const c of server.clients) c.terminate();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

async function connected(timeoutMs?: number): Promise<RpcClient> {
  const client = new RpcClient(
    connectUrl({ ws_url: wsUrl, token: TOKEN }),
    NodeWebSocket,
    timeoutMs === undefined ? {} : { timeoutMs },
  );
  await client.opened;
  return client;
}

describe("RpcClient over a real WebSocket", () => {
  it("calls methods and gets typed results", async () => {
    const client = await connected();
    const info = await serverInfo(client);
    expect(info.hostname).toBe("test-host");
    expect(info.methods).toContain("printers.list");
    const list = await listPrinters(client);
    expect(list.printers[0]).toMatchObject({ id: "sim", name: "Gantry simulated printer" });
    expect(received.at(-1)).toEqual({ jsonrpc: "2.0", method: "printers.list", id: 2 });
    client.close();
    await client.closed;
  });

  it("keeps concurrent calls apart", async () => {
    const client = await connected();
    const values = await Promise.all(
      Array.from({ length: 20 }, (_, i) => client.call("echo", { i, s: `v${i}` })),
    );
    expect(values).toEqual(Array.from({ length: 20 }, (_, i) => ({ i, s: `v${i}` })));
    client.close();
  });

  it("maps an error object to RpcError", async () => {
    const client = await connected();
    const err = await rejection(client.call("fail", { y: 1 }));
    expect(err).toBeInstanceOf(RpcError);
    expect(err).toMatchObject({
      code: -32602,
      message: "Invalid params: expected x",
      data: { field: "x" },
    });
    client.close();
  });

  it("reports an unknown method as -32601", async () => {
    const client = await connected();
    await expect(client.call("no.such.method")).rejects.toMatchObject({
      name: "RpcError",
      code: -32601,
      message: "Method not found: no.such.method",
    });
    // The connection is still usable afterwards.
    await expect(client.call("echo", [1])).resolves.toEqual([1]);
    client.close();
  });

  it("rejects pending calls when the server closes the socket", async () => {
    const client = await connected();
    const hanging = client.call("hang");
    const dropping = client.call("drop");
    for (const p of [hanging, dropping]) {
      const err = await rejection(p);
      expect(err).toBeInstanceOf(TransportError);
      expect(err).toMatchObject({ kind: "closed" });
    }
    expect((await client.closed).code).toBe(1011);
    expect(client.connected).toBe(false);
  });

  it("times out a call the server never answers", async () => {
    const client = await connected(200);
    const started = Date.now();
    await expect(client.call("hang")).rejects.toMatchObject({ kind: "timeout" });
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);
    expect(client.pendingCount).toBe(0);
    client.close();
  });

  it("fails to connect without the right token", async () => {
    for (const url of [wsUrl, connectUrl({ ws_url: wsUrl, token: "f".repeat(64) })]) {
      const client = new RpcClient(url, NodeWebSocket);
      const err = await rejection(client.opened);
      expect(err).toBeInstanceOf(TransportError);
      expect(err).toMatchObject({ kind: "connect" });
      await expect(client.call("server.info")).rejects.toBeInstanceOf(TransportError);
    }
  });
});
