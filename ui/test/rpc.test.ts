// Unit tests of the JSON-RPC client against an in-memory fake socket: request/response correlation,
// error mapping, notifications, timeouts and closing. The real-socket tests are in rpc.ws.test.ts.
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  RpcClient,
  RpcError,
  TransportError,
  classifyMessage,
  parseFrame,
  toRpcError,
  type WebSocketLike,
} from "../src/lib/api";
import { rejection } from "./helpers";

/** A socket whose other end is the test: it records what the client sends and lets the test reply. */
class FakeSocket implements WebSocketLike {
  static last: FakeSocket | null = null;
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;

  constructor(readonly url: string) {
    FakeSocket.last = this;
  }
  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }
  close(code = 1000, reason = ""): void {
    this.serverClose(code, reason);
  }
  // Test side:
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  reply(msg: unknown): void {
    this.onmessage?.({ data: typeof msg === "string" ? msg : JSON.stringify(msg) });
  }
  serverClose(code = 1006, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

async function openClient(options = {}): Promise<{ client: RpcClient; socket: FakeSocket }> {
  const client = new RpcClient("ws://fake/websocket?token=abc", FakeSocket, options);
  const socket = FakeSocket.last!;
  socket.open();
  await client.opened;
  return { client, socket };
}

/** Lets the client's awaits run so its send happens. */
const flush = () => new Promise((r) => setTimeout(r, 0));

afterEach(() => {
  vi.useRealTimers();
});

describe("RpcClient correlation", () => {
  it("sends JSON-RPC 2.0 requests with fresh ids", async () => {
    const { client, socket } = await openClient();
    void client.call("server.info");
    void client.call("printers.list", { verbose: true });
    await flush();
    expect(socket.sent).toEqual([
      { jsonrpc: "2.0", method: "server.info", id: 1 },
      { jsonrpc: "2.0", method: "printers.list", id: 2, params: { verbose: true } },
    ]);
  });

  it("matches responses to calls by id, in any order", async () => {
    const { client, socket } = await openClient();
    const a = client.call("a");
    const b = client.call("b");
    const c = client.call("c");
    await flush();
    const ids = socket.sent.map((m) => m.id);
    socket.reply({ jsonrpc: "2.0", id: ids[2], result: "C" });
    socket.reply({ jsonrpc: "2.0", id: ids[0], result: "A" });
    socket.reply({ jsonrpc: "2.0", id: ids[1], result: { b: [1, 2] } });
    await expect(a).resolves.toBe("A");
    await expect(b).resolves.toEqual({ b: [1, 2] });
    await expect(c).resolves.toBe("C");
    expect(client.pendingCount).toBe(0);
  });

  it("handles a batch frame and ignores unknown ids and garbage", async () => {
    const { client, socket } = await openClient();
    const a = client.call("a");
    const b = client.call("b");
    await flush();
    socket.reply("this is not json");
    socket.reply({ jsonrpc: "2.0", id: 999, result: "stray" });
    socket.reply([
      { jsonrpc: "2.0", id: 2, result: "B" },
      { jsonrpc: "2.0", id: 1, result: "A" },
    ]);
    await expect(a).resolves.toBe("A");
    await expect(b).resolves.toBe("B");
  });

  it("waits for the socket to open before sending", async () => {
    const client = new RpcClient("ws://fake/websocket", FakeSocket);
    const socket = FakeSocket.last!;
    const p = client.call("server.info");
    await flush();
    expect(socket.sent).toHaveLength(0);
    socket.open();
    await flush();
    expect(socket.sent).toHaveLength(1);
    socket.reply({ jsonrpc: "2.0", id: socket.sent[0]!.id, result: 42 });
    await expect(p).resolves.toBe(42);
  });

  it("delivers notifications to listeners", async () => {
    const { client, socket } = await openClient();
    const seen: [string, unknown][] = [];
    const off = client.onNotification((m, p) => seen.push([m, p]));
    socket.reply({ jsonrpc: "2.0", method: "notify_status_update", params: [{ x: 1 }] });
    off();
    socket.reply({ jsonrpc: "2.0", method: "notify_other" });
    expect(seen).toEqual([["notify_status_update", [{ x: 1 }]]]);
  });
});

describe("RpcClient errors", () => {
  it("turns an error object into an RpcError with code and message", async () => {
    const { client, socket } = await openClient();
    const p = client.call("nope");
    await flush();
    socket.reply({
      jsonrpc: "2.0",
      id: socket.sent[0]!.id,
      error: { code: -32601, message: "Method not found: nope", data: { hint: 1 } },
    });
    const err = await rejection(p);
    expect(err).toBeInstanceOf(RpcError);
    expect(err).toMatchObject({
      code: -32601,
      message: "Method not found: nope",
      data: { hint: 1 },
    });
  });

  it("rejects pending calls when the socket closes, and later calls at once", async () => {
    const { client, socket } = await openClient();
    const a = client.call("a");
    const b = client.call("b");
    await flush();
    socket.serverClose(1011, "core stopping");
    for (const p of [a, b]) {
      const err = await rejection(p);
      expect(err).toBeInstanceOf(TransportError);
      expect(err).toMatchObject({ kind: "closed" });
      expect((err as Error).message).toContain("core stopping");
    }
    await expect(client.closed).resolves.toEqual({ code: 1011, reason: "core stopping" });
    await expect(client.call("c")).rejects.toMatchObject({ kind: "closed" });
    expect(client.pendingCount).toBe(0);
  });

  it("fails opening when the socket closes before it opens, without leaking the token", async () => {
    const client = new RpcClient("ws://fake/websocket?token=secret123", FakeSocket);
    const pending = client.call("server.info");
    FakeSocket.last!.serverClose(1006);
    const err = await rejection(client.opened);
    expect(err).toBeInstanceOf(TransportError);
    expect(err).toMatchObject({ kind: "connect" });
    expect((err as Error).message).not.toContain("secret123");
    await expect(pending).rejects.toMatchObject({ kind: "connect" });
  });

  it("times out a call that gets no answer", async () => {
    vi.useFakeTimers();
    const { client, socket } = await openClient({ timeoutMs: 500 });
    const p = client.call("slow");
    const q = client.call("slower", undefined, { timeoutMs: 2000 });
    const pErr = p.catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(501);
    expect(await pErr).toMatchObject({ name: "TransportError", kind: "timeout" });
    expect(client.pendingCount).toBe(1);
    // A late answer to the timed-out call is ignored; the other call still succeeds.
    socket.reply({ jsonrpc: "2.0", id: 1, result: "late" });
    socket.reply({ jsonrpc: "2.0", id: 2, result: "ok" });
    await expect(q).resolves.toBe("ok");
  });
});

describe("message parsing", () => {
  it("maps malformed error objects to internal errors", () => {
    expect(toRpcError({ code: -32602, message: "bad params" })).toMatchObject({
      code: -32602,
      message: "bad params",
    });
    expect(toRpcError({ message: "no code" })).toMatchObject({ code: -32603, message: "no code" });
    expect(toRpcError({ code: 1.5 })).toMatchObject({ code: -32603 });
    expect(toRpcError("boom")).toMatchObject({ code: -32603 });
  });

  it("classifies results, errors, notifications and junk", () => {
    expect(classifyMessage({ jsonrpc: "2.0", id: 1, result: null })).toEqual({
      kind: "result",
      id: 1,
      result: null,
    });
    expect(
      classifyMessage({ jsonrpc: "2.0", id: null, error: { code: -32700, message: "x" } }),
    ).toMatchObject({ kind: "error", id: null });
    expect(classifyMessage({ jsonrpc: "2.0", method: "notify" })).toMatchObject({
      kind: "notification",
    });
    expect(classifyMessage({ id: 1, result: 1 })).toMatchObject({ kind: "invalid" });
    expect(classifyMessage({ jsonrpc: "2.0", id: { x: 1 }, result: 1 })).toMatchObject({
      kind: "invalid",
    });
    expect(classifyMessage([1])).toMatchObject({ kind: "invalid" });
    expect(parseFrame("{")).toEqual([{ kind: "invalid", reason: "not JSON" }]);
  });
});
