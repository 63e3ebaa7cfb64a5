// Component tests of the Printers page with a fake client (jsdom): the list as core reports it, the
// empty, loading and error states, and Refresh.
import { describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import Printers from "../src/pages/Printers.svelte";
import { RpcError, type PrinterList, type RpcCaller } from "../src/lib/api";
import type { ClientSource } from "../src/lib/connection.svelte";

const SIM = {
  id: "sim",
  name: "Gantry simulated printer",
  kind: "simulated",
  description: "Built-in simulated Klipper MCU (test)",
  config: "gantry-sim.cfg",
} as const;

const FULL: PrinterList = {
  printers: [
    SIM,
    {
      id: "serial:/dev/ttyACM0",
      name: "Klipper (stm32f446xx)",
      kind: "serial",
      port: "/dev/ttyACM0",
      port_type: "usb",
      usb: {
        vid: "1d50",
        pid: "614e",
        manufacturer: "Klipper",
        product: "stm32f446xx",
        serial_number: "3A0028000851363131363530",
      },
      board: "Klipper firmware (USB)",
    },
    {
      id: "serial:/dev/ttyS0",
      name: "/dev/ttyS0",
      kind: "serial",
      port: "/dev/ttyS0",
      port_type: "pci",
      usb: null,
      board: null,
    },
  ],
};

/** A client source whose printers.list answers come from `answer`; records the methods called. */
function fakeSource(answer: () => Promise<unknown>): ClientSource & { calls: string[] } {
  const calls: string[] = [];
  const rpc: RpcCaller = {
    call: <T>(method: string) => {
      calls.push(method);
      return answer() as Promise<T>;
    },
  };
  return { calls, ready: () => Promise.resolve(rpc) };
}

describe("Printers page", () => {
  it("shows the simulated printer and each serial port with its details", async () => {
    const source = fakeSource(async () => FULL);
    render(Printers, { source });

    const sim = await screen.findByTestId("printer-sim");
    expect(sim.textContent).toContain("Gantry simulated printer");
    expect(sim.textContent).toContain("Simulated");
    expect(sim.textContent).toContain("gantry-sim.cfg");
    expect(source.calls).toEqual(["printers.list"]);

    const acm = within(screen.getByTestId("printer-serial-dev-ttyACM0"));
    for (const text of [
      "Klipper (stm32f446xx)",
      "/dev/ttyACM0",
      "USB",
      "1d50:614e",
      "Klipper",
      "stm32f446xx",
      "3A0028000851363131363530",
      "Klipper firmware (USB)",
    ]) {
      expect(acm.getAllByText(text).length).toBeGreaterThan(0);
    }

    const ttyS0 = screen.getByTestId("printer-serial-dev-ttyS0");
    expect(within(ttyS0).getByText("PCI")).toBeTruthy();
    expect(within(ttyS0).getAllByText("—").length).toBe(4);
    expect(within(ttyS0).getByText("Unknown")).toBeTruthy();
    expect(screen.queryByText("No serial ports found on this computer")).toBeNull();
    expect(screen.getByTestId("page-printers").id).toBe("page-printers");
  });

  it("says so when there are no serial ports", async () => {
    render(Printers, { source: fakeSource(async () => ({ printers: [SIM] })) });
    expect(await screen.findByText("No serial ports found on this computer")).toBeTruthy();
    expect(screen.getByTestId("printer-sim")).toBeTruthy();
  });

  it("shows a loading state until core answers", async () => {
    let answer!: (v: PrinterList) => void;
    const pending = new Promise<PrinterList>((r) => (answer = r));
    render(Printers, { source: fakeSource(() => pending) });
    expect(screen.getByTestId("printers-loading")).toBeTruthy();
    expect(screen.getByRole("button", { name: "Refresh the printer list" })).toHaveProperty(
      "disabled",
      true,
    );
    answer(FULL);
    await screen.findByTestId("printer-sim");
    expect(screen.queryByTestId("printers-loading")).toBeNull();
  });

  it("shows the error text when the call fails", async () => {
    const source = fakeSource(() =>
      Promise.reject(new RpcError(-32603, "serial enumeration failed")),
    );
    render(Printers, { source });
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain("Could not list printers.");
    expect(alert.textContent).toContain("serial enumeration failed");
  });

  it("shows the connection error when core cannot be reached", async () => {
    const source: ClientSource = {
      ready: () =>
        Promise.reject(new Error("Not running inside Gantry: open the page with ?ws=…&token=…")),
    };
    render(Printers, { source });
    expect((await screen.findByRole("alert")).textContent).toContain("Not running inside Gantry");
  });

  it("refreshes on demand", async () => {
    const answer = vi
      .fn<() => Promise<PrinterList>>()
      .mockResolvedValueOnce({ printers: [SIM] })
      .mockResolvedValueOnce(FULL);
    const source = fakeSource(answer);
    render(Printers, { source });
    await screen.findByText("No serial ports found on this computer");
    await fireEvent.click(screen.getByRole("button", { name: "Refresh the printer list" }));
    await screen.findByTestId("printer-serial-dev-ttyACM0");
    expect(source.calls).toEqual(["printers.list", "printers.list"]);
    expect(screen.queryByText("No serial ports found on this computer")).toBeNull();
  });
});
