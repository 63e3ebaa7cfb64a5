// Tests of the connection store: connecting → connected, failure with its message, retry, and the
// switch to failed when an open connection closes.
import { describe, expect, it, vi } from "vitest";
import { Connection } from "../src/lib/connection.svelte";

function fakeClient() {
  let close!: (info: { code: number; reason: string }) => void;
  const closed = new Promise<{ code: number; reason: string }>((r) => (close = r));
  return {
    call: vi.fn(async () => "ok") as never,
    closed,
    close: vi.fn(() => close({ code: 1000, reason: "" })),
    serverClose: (code: number, reason: string) => close({ code, reason }),
  };
}

describe("Connection", () => {
  it("goes from connecting to connected and reuses the client", async () => {
    const client = fakeClient();
    const connector = vi.fn(async () => client);
    const conn = new Connection(connector);
    expect(conn.state).toEqual({ status: "connecting" });
    const a = conn.ready();
    const b = conn.ready();
    expect(await a).toBe(client);
    expect(await b).toBe(client);
    expect(await conn.ready()).toBe(client);
    expect(conn.state).toEqual({ status: "connected" });
    expect(connector).toHaveBeenCalledTimes(1);
  });

  it("fails with the error's message, and retries on demand", async () => {
    const client = fakeClient();
    const connector = vi
      .fn<() => Promise<ReturnType<typeof fakeClient>>>()
      .mockRejectedValueOnce(
        new Error("Not running inside Gantry: open the page with ?ws=…&token=…"),
      )
      .mockResolvedValueOnce(client);
    const conn = new Connection(connector);
    await expect(conn.ready()).rejects.toThrow("Not running inside Gantry");
    expect(conn.state).toEqual({
      status: "failed",
      message: "Not running inside Gantry: open the page with ?ws=…&token=…",
    });
    expect(await conn.retry()).toBe(client);
    expect(conn.state.status).toBe("connected");
  });

  it("turns failed when the connection closes, and reconnects on the next ready()", async () => {
    const first = fakeClient();
    const second = fakeClient();
    const connector = vi
      .fn<() => Promise<ReturnType<typeof fakeClient>>>()
      .mockResolvedValueOnce(first)
      .mockResolvedValueOnce(second);
    const conn = new Connection(connector);
    await conn.ready();
    first.serverClose(1011, "core stopped");
    await vi.waitFor(() => expect(conn.state.status).toBe("failed"));
    expect(conn.state).toMatchObject({ message: expect.stringContaining("core stopped") });
    expect(await conn.ready()).toBe(second);
    expect(conn.state.status).toBe("connected");
  });
});
