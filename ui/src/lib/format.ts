// Display helpers for printer data: USB ids, port types, missing values.
import type { PortType, Printer, SerialPrinter, SimulatedPrinter, UsbInfo } from "./api";

/** A USB vendor or product id as 4 lower-case hex digits, or null when it is not one. */
export function normalizeUsbId(id: string | null | undefined): string | null {
  if (typeof id !== "string") return null;
  const trimmed = id.trim().replace(/^0x/i, "");
  if (!/^[0-9a-f]{1,4}$/i.test(trimmed)) return null;
  return trimmed.toLowerCase().padStart(4, "0");
}

/** "1d50:614e", or null without USB information or with malformed ids. */
export function formatVidPid(usb: Pick<UsbInfo, "vid" | "pid"> | null | undefined): string | null {
  if (usb == null) return null;
  const vid = normalizeUsbId(usb.vid);
  const pid = normalizeUsbId(usb.pid);
  return vid !== null && pid !== null ? `${vid}:${pid}` : null;
}

const PORT_TYPE_LABELS: Record<PortType, string> = {
  usb: "USB",
  pci: "PCI",
  bluetooth: "Bluetooth",
  unknown: "Unknown",
};

/** Badge text for a port type; anything unexpected reads "Unknown". */
export function portTypeLabel(portType: string | null | undefined): string {
  return Object.hasOwn(PORT_TYPE_LABELS, portType ?? "")
    ? PORT_TYPE_LABELS[portType as PortType]
    : "Unknown";
}

/** Text for a value the device did not report. */
export const NOT_REPORTED = "—";

/** The value, or the "not reported" dash for null, undefined and blank strings. */
export function orDash(value: string | null | undefined): string {
  return value == null || value.trim() === "" ? NOT_REPORTED : value;
}

export interface PrinterGroups {
  simulated: SimulatedPrinter[];
  serial: SerialPrinter[];
  /** Kinds this UI does not know yet (a newer core); shown by name only. */
  other: { id: string; name: string; kind: string }[];
}

/** Splits `printers.list` into the sections the Printers page shows, keeping core's order. */
export function groupPrinters(printers: readonly Printer[]): PrinterGroups {
  const groups: PrinterGroups = { simulated: [], serial: [], other: [] };
  for (const p of printers) {
    if (p.kind === "simulated") groups.simulated.push(p);
    else if (p.kind === "serial") groups.serial.push(p);
    else {
      const unknown = p as { id?: unknown; name?: unknown; kind?: unknown };
      groups.other.push({
        id: String(unknown.id ?? ""),
        name: String(unknown.name ?? unknown.id ?? "Unnamed printer"),
        kind: String(unknown.kind ?? "unknown"),
      });
    }
  }
  return groups;
}

/** A stable, attribute-safe test id for a printer: "printer-sim", "printer-serial-dev-ttyACM0". */
export function printerTestId(id: string): string {
  return `printer-${id.replace(/[^A-Za-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "")}`;
}
