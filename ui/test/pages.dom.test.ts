// Component tests of the Twin and Settings pages (jsdom) with fakes for the shell and for core.
import { describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, within } from "@testing-library/svelte";
import Twin from "../src/pages/Twin.svelte";
import Settings from "../src/pages/Settings.svelte";
import type { RpcCaller, ServerInfo, TwinProcess } from "../src/lib/api";
import { THEME_STORAGE_KEY } from "../src/lib/theme";

describe("Twin page", () => {
  it("starts a live twin that follows the printer", async () => {
    const openTwin = vi.fn(async (_path: string | null, _live?: boolean) => ({
      pid: 99,
      path: "the printer's job",
    }));
    render(Twin, { openTwin, pickGcodeFile: async () => null, desktop: true });
    await fireEvent.click(screen.getByRole("button", { name: /Follow the printer live/ }));
    await within(screen.getByTestId("twin-result")).findByText("99");
    expect(openTwin).toHaveBeenCalledWith(null, true);
  });

  it("opens the sample print and shows the process id", async () => {
    const openTwin = vi.fn(async (path: string | null): Promise<TwinProcess> => ({
      pid: 4242,
      path: path ?? "/opt/gantry/sample.gcode",
    }));
    render(Twin, { openTwin, pickGcodeFile: async () => null, desktop: true });
    await fireEvent.click(screen.getByRole("button", { name: /Open sample print in twin/ }));
    const result = screen.getByTestId("twin-result");
    await within(result).findByText("4242");
    expect(openTwin).toHaveBeenCalledWith(null);
    expect(result.textContent).toContain("/opt/gantry/sample.gcode");
  });

  it("opens a chosen file, and says when none was chosen", async () => {
    const openTwin = vi.fn(async (path: string | null) => ({ pid: 7, path: path ?? "" }));
    const pick = vi
      .fn<() => Promise<string | null>>()
      .mockResolvedValueOnce(null)
      .mockResolvedValueOnce("/home/me/benchy.gcode");
    render(Twin, { openTwin, pickGcodeFile: pick, desktop: true });
    const choose = screen.getByRole("button", { name: /Choose G-code file/ });
    await fireEvent.click(choose);
    await screen.findByText("No file chosen.");
    expect(openTwin).not.toHaveBeenCalled();
    await fireEvent.click(choose);
    await screen.findByText("/home/me/benchy.gcode");
    expect(openTwin).toHaveBeenCalledWith("/home/me/benchy.gcode");
  });

  it("shows the error", async () => {
    render(Twin, {
      openTwin: () => Promise.reject(new Error("gantry twin: no display")),
      pickGcodeFile: async () => null,
      desktop: false,
    });
    expect(screen.getByTestId("twin-browser-note")).toBeTruthy();
    await fireEvent.click(screen.getByRole("button", { name: /Open sample print in twin/ }));
    expect((await screen.findByRole("alert")).textContent).toContain("gantry twin: no display");
  });
});

describe("Settings page", () => {
  const INFO: ServerInfo = {
    gantry_version: "0.1.0",
    api_version: [0, 1, 0],
    api_version_string: "0.1.0",
    klippy_connected: false,
    klippy_state: "disconnected",
    hostname: "farm-pc",
    platform: "linux",
    methods: ["printers.list", "server.info"],
  };

  it("shows server.info in About", async () => {
    const rpc: RpcCaller = {
      call: async <T>(m: string) => (m === "server.info" ? INFO : null) as T,
    };
    render(Settings, { source: { ready: async () => rpc } });
    const about = screen.getByTestId("about");
    await within(about).findByText("farm-pc");
    for (const text of ["0.1.0", "linux", "printers.list", "server.info"]) {
      expect(within(about).getAllByText(text).length).toBeGreaterThan(0);
    }
  });

  it("chooses and remembers the theme", async () => {
    render(Settings, { source: { ready: () => Promise.reject(new Error("offline")) } });
    const group = screen.getByRole("group", { name: "Theme" });
    const system = within(group).getByRole("radio", { name: /System/ });
    expect((system as HTMLInputElement).checked).toBe(true);
    await fireEvent.click(within(group).getByRole("radio", { name: /Dark/ }));
    expect(localStorage.getItem(THEME_STORAGE_KEY)).toBe("dark");
    expect(document.documentElement.dataset.theme).toBe("dark");
    await fireEvent.click(within(group).getByRole("radio", { name: /Light/ }));
    expect(localStorage.getItem(THEME_STORAGE_KEY)).toBe("light");
    expect(document.documentElement.dataset.theme).toBe("light");
    expect((await screen.findByRole("alert")).textContent).toContain("offline");
  });
});
