// Unit tests of the shell side of api.ts: finding core's endpoint (the ?ws=…&token=… query, the Tauri
// shell's api_endpoint, the error when neither is there), the URL the client opens, and the twin and
// file-chooser calls with Tauri's invoke and dialog plugin mocked.
import { afterEach, describe, expect, it, vi } from "vitest";

const invokeMock = vi.hoisted(() => vi.fn());
const dialogOpenMock = vi.hoisted(() => vi.fn());
vi.mock("@tauri-apps/api/core", () => ({ invoke: invokeMock }));
vi.mock("@tauri-apps/plugin-dialog", () => ({ open: dialogOpenMock }));

import {
  NOT_IN_GANTRY,
  ShellError,
  connectUrl,
  endpoint,
  endpointFromQuery,
  errorMessage,
  inTauri,
  openTwin,
  pickGcodeFile,
} from "../src/lib/api";

const TOKEN = "ab".repeat(32);

afterEach(() => {
  vi.unstubAllGlobals();
  invokeMock.mockReset();
  dialogOpenMock.mockReset();
});

describe("endpointFromQuery", () => {
  it("reads ws and token, with or without the leading ?", () => {
    const ep = { ws_url: "ws://127.0.0.1:7125/websocket", token: TOKEN };
    expect(endpointFromQuery(`?ws=ws://127.0.0.1:7125/websocket&token=${TOKEN}`)).toEqual(ep);
    expect(endpointFromQuery(`token=${TOKEN}&ws=ws%3A%2F%2F127.0.0.1%3A7125%2Fwebsocket`)).toEqual(
      ep,
    );
  });
  it("is null when something is missing or not a WebSocket URL", () => {
    expect(endpointFromQuery("")).toBeNull();
    expect(endpointFromQuery("?ws=ws://127.0.0.1:1/websocket")).toBeNull();
    expect(endpointFromQuery(`?token=${TOKEN}`)).toBeNull();
    expect(endpointFromQuery(`?ws=&token=${TOKEN}`)).toBeNull();
    expect(endpointFromQuery(`?ws=http://127.0.0.1:1/websocket&token=${TOKEN}`)).toBeNull();
    expect(endpointFromQuery(`?ws=not a url&token=${TOKEN}`)).toBeNull();
  });
  it("accepts wss", () => {
    expect(endpointFromQuery(`?ws=wss://host/websocket&token=t`)?.ws_url).toBe(
      "wss://host/websocket",
    );
  });
});

describe("connectUrl", () => {
  it("puts the token in the query as Moonraker does", () => {
    expect(connectUrl({ ws_url: "ws://127.0.0.1:7125/websocket", token: TOKEN })).toBe(
      `ws://127.0.0.1:7125/websocket?token=${TOKEN}`,
    );
  });
});

describe("endpoint()", () => {
  it("asks the Tauri shell inside the desktop app", async () => {
    vi.stubGlobal("window", { __TAURI_INTERNALS__: {} });
    vi.stubGlobal("location", { search: "" });
    invokeMock.mockResolvedValue({ ws_url: "ws://127.0.0.1:9/websocket", token: TOKEN });
    expect(inTauri()).toBe(true);
    await expect(endpoint()).resolves.toEqual({
      ws_url: "ws://127.0.0.1:9/websocket",
      token: TOKEN,
    });
    expect(invokeMock).toHaveBeenCalledWith("api_endpoint");
  });

  it("rejects a malformed answer from the shell", async () => {
    vi.stubGlobal("window", { __TAURI_INTERNALS__: {} });
    invokeMock.mockResolvedValue({ url: "x" });
    await expect(endpoint()).rejects.toThrow(/malformed/);
  });

  it("reads the query string in a plain browser", async () => {
    vi.stubGlobal("window", {});
    vi.stubGlobal("location", { search: `?ws=ws://127.0.0.1:5/websocket&token=${TOKEN}` });
    expect(inTauri()).toBe(false);
    await expect(endpoint()).resolves.toEqual({
      ws_url: "ws://127.0.0.1:5/websocket",
      token: TOKEN,
    });
    expect(invokeMock).not.toHaveBeenCalled();
  });

  it("says clearly when it is neither", async () => {
    vi.stubGlobal("window", {});
    vi.stubGlobal("location", { search: "" });
    await expect(endpoint()).rejects.toThrow(NOT_IN_GANTRY);
    expect(NOT_IN_GANTRY).toBe("Not running inside Gantry: open the page with ?ws=…&token=…");
  });
});

describe("shell commands", () => {
  const inDesktop = () => vi.stubGlobal("window", { __TAURI_INTERNALS__: {} });

  it("opens the twin with twin_open { path, live }", async () => {
    inDesktop();
    invokeMock.mockResolvedValue({ pid: 99, path: "sample" });
    await expect(openTwin(null)).resolves.toEqual({ pid: 99, path: "sample" });
    expect(invokeMock).toHaveBeenLastCalledWith("twin_open", { path: null, live: false });
    await openTwin("/tmp/a.gcode");
    expect(invokeMock).toHaveBeenLastCalledWith("twin_open", { path: "/tmp/a.gcode", live: false });
    await openTwin(null, true);
    expect(invokeMock).toHaveBeenLastCalledWith("twin_open", { path: null, live: true });
  });

  it("turns a command's { kind, message } rejection into a ShellError", async () => {
    inDesktop();
    invokeMock.mockRejectedValue({ kind: "not_found", message: "No such file: /tmp/x.gcode" });
    const err = await openTwin("/tmp/x.gcode").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ShellError);
    expect(err).toMatchObject({ kind: "not_found", message: "No such file: /tmp/x.gcode" });
  });

  it("asks the dialog plugin for one G-code file", async () => {
    inDesktop();
    dialogOpenMock.mockResolvedValueOnce("/home/me/part.bgcode").mockResolvedValueOnce(null);
    await expect(pickGcodeFile()).resolves.toBe("/home/me/part.bgcode");
    expect(dialogOpenMock).toHaveBeenCalledWith(
      expect.objectContaining({
        multiple: false,
        directory: false,
        filters: [{ name: "G-code", extensions: ["gcode", "gco", "g", "bgcode"] }],
      }),
    );
    await expect(pickGcodeFile()).resolves.toBeNull();
  });

  it("turns a plugin's string rejection into a ShellError", async () => {
    inDesktop();
    dialogOpenMock.mockRejectedValue("dialog.open not allowed");
    await expect(pickGcodeFile()).rejects.toMatchObject({
      name: "ShellError",
      message: "dialog.open not allowed",
    });
  });

  it("refuses clearly outside the desktop app", async () => {
    vi.stubGlobal("window", {});
    await expect(openTwin(null)).rejects.toThrow(/desktop app/);
    await expect(pickGcodeFile()).rejects.toThrow(/desktop app/);
    expect(invokeMock).not.toHaveBeenCalled();
    expect(dialogOpenMock).not.toHaveBeenCalled();
  });
});

describe("errorMessage", () => {
  it("finds a message in errors, strings and plain objects", () => {
    expect(errorMessage(new Error("a"))).toBe("a");
    expect(errorMessage("b")).toBe("b");
    expect(errorMessage({ kind: "x", message: "c" })).toBe("c");
    expect(errorMessage({ weird: 1 })).toBe('{"weird":1}');
    expect(errorMessage(undefined)).toBe("undefined");
  });
});
