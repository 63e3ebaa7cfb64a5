//! The printers this machine can reach right now: serial ports (with their USB identity) and the
//! built-in simulated printer.
//!
//! Ports come from the operating system's enumeration (`serialport`, udev on Linux); nothing is
//! opened or probed, so listing never disturbs a running print. A VID:PID table names what a USB
//! serial device usually is — Klipper firmware announces itself as 1d50:614e — so the user can tell
//! a printer board from a phone charger. On Linux each port also gets its stable
//! `/dev/serial/by-id/…` name (udev's link, such as
//! `usb-Klipper_stm32f446xx_33002D000750534E4E313020-if00`), which survives replugging where
//! `/dev/ttyACM0` does not. No port is opened and no baud rate is tried.

use serde::Serialize;

/// The printer.cfg of the built-in simulated printer.
pub const SIMULATED_CONFIG: &str = include_str!("../../../assets/printers/gantry-sim.cfg");

/// File name under which the simulated printer's config is presented.
pub const SIMULATED_CONFIG_NAME: &str = "gantry-sim.cfg";

/// What kind of connection a printer entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrinterKind {
    /// Gantry's simulated MCU, always available.
    Simulated,
    /// A serial port that may have a printer board behind it.
    Serial,
}

/// How the operating system attaches a serial port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortType {
    /// A USB device (CDC-ACM, or a USB-UART bridge).
    Usb,
    /// A PCI or on-board UART.
    Pci,
    /// A Bluetooth serial link.
    Bluetooth,
    /// The operating system did not say.
    Unknown,
}

/// The USB identity of a serial port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsbIdentity {
    /// Vendor id, 4 lower-case hex digits.
    pub vid: String,
    /// Product id, 4 lower-case hex digits.
    pub pid: String,
    /// The device's manufacturer string, if it has one.
    pub manufacturer: Option<String>,
    /// The device's product string, if it has one.
    pub product: Option<String>,
    /// The device's serial number, if it has one.
    pub serial_number: Option<String>,
}

/// One entry of `printers.list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrinterEntry {
    /// Stable id: `sim`, or `serial:` followed by the port path.
    pub id: String,
    /// What to call it in the UI.
    pub name: String,
    /// Simulated or serial.
    pub kind: PrinterKind,
    /// One sentence on what this is (simulated printer only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The printer.cfg it uses (simulated printer only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// The port path (serial only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// How the port is attached (serial only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_type: Option<PortType>,
    /// The port's stable `/dev/serial/by-id/…` path, where udev made one (Linux).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_id: Option<String>,
    /// USB identity; null when the entry is not a USB port.
    pub usb: Option<UsbIdentity>,
    /// What this VID:PID usually is, from [`board_hint`]; null when unknown.
    pub board: Option<String>,
}

/// The built-in simulated printer's entry.
pub fn simulated() -> PrinterEntry {
    PrinterEntry {
        id: "sim".to_owned(),
        name: "Gantry simulated printer".to_owned(),
        kind: PrinterKind::Simulated,
        description: Some(
            "Built-in simulated Klipper MCU: a 220 × 220 × 250 mm cartesian printer that needs no hardware"
                .to_owned(),
        ),
        config: Some(SIMULATED_CONFIG_NAME.to_owned()),
        port: None,
        port_type: None,
        by_id: None,
        usb: None,
        board: None,
    }
}

/// Lists the simulated printer first, then every serial port, sorted by path.
///
/// Enumeration failures are logged and give an empty port list: the simulated printer is always
/// there. This call blocks (it reads sysfs and udev); async callers use `spawn_blocking`.
pub fn list() -> Vec<PrinterEntry> {
    let mut ports = match serialport::available_ports() {
        Ok(ports) => ports,
        Err(e) => {
            tracing::warn!(error = %e, "cannot enumerate serial ports");
            Vec::new()
        }
    };
    ports.sort_by(|a, b| a.port_name.cmp(&b.port_name));
    let by_id = by_id_links(std::path::Path::new(BY_ID_DIR));
    std::iter::once(simulated())
        .chain(ports.into_iter().map(|info| {
            let mut entry = from_port(info);
            if let Some(port) = &entry.port {
                entry.by_id = by_id.get(std::path::Path::new(port)).cloned();
            }
            entry
        }))
        .collect()
}

/// Where udev keeps stable serial port names.
pub const BY_ID_DIR: &str = "/dev/serial/by-id";

/// The links in a by-id directory, keyed by the device each resolves to (`/dev/ttyACM0` →
/// `/dev/serial/by-id/usb-Klipper_…`). A missing directory (no USB serial device, or not Linux)
/// gives an empty map.
pub fn by_id_links(dir: &std::path::Path) -> std::collections::HashMap<std::path::PathBuf, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return std::collections::HashMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let link = e.path();
            let target = std::fs::canonicalize(&link).ok()?;
            Some((target, link.to_string_lossy().into_owned()))
        })
        .collect()
}

fn from_port(info: serialport::SerialPortInfo) -> PrinterEntry {
    let (port_type, usb) = match info.port_type {
        serialport::SerialPortType::UsbPort(u) => (
            PortType::Usb,
            Some(UsbIdentity {
                vid: format!("{:04x}", u.vid),
                pid: format!("{:04x}", u.pid),
                manufacturer: u.manufacturer,
                product: u.product,
                serial_number: u.serial_number,
            }),
        ),
        serialport::SerialPortType::PciPort => (PortType::Pci, None),
        serialport::SerialPortType::BluetoothPort => (PortType::Bluetooth, None),
        serialport::SerialPortType::Unknown => (PortType::Unknown, None),
    };
    let board = usb.as_ref().and_then(|u| {
        let vid = u16::from_str_radix(&u.vid, 16).ok()?;
        let pid = u16::from_str_radix(&u.pid, 16).ok()?;
        board_hint(vid, pid).map(str::to_owned)
    });
    let name = match &usb {
        Some(UsbIdentity {
            product: Some(p),
            manufacturer: Some(m),
            ..
        }) => format!("{m} {p}"),
        Some(UsbIdentity {
            product: Some(p), ..
        }) => p.clone(),
        _ => board.clone().unwrap_or_else(|| info.port_name.clone()),
    };
    PrinterEntry {
        id: format!("serial:{}", info.port_name),
        name,
        kind: PrinterKind::Serial,
        description: None,
        config: None,
        port: Some(info.port_name),
        port_type: Some(port_type),
        by_id: None,
        usb,
        board,
    }
}

/// What a USB VID:PID usually is on a 3D printer, or `None` when unknown.
///
/// Exact pairs come first; a few vendors are recognised by VID alone.
pub fn board_hint(vid: u16, pid: u16) -> Option<&'static str> {
    let exact = match (vid, pid) {
        (0x1d50, 0x614e) => Some("Klipper firmware (USB)"),
        (0x1d50, 0x6177) => Some("Katapult bootloader"),
        (0x1a86, 0x7523) => Some("CH340 USB-serial adapter"),
        (0x1a86, 0x55d4) => Some("CH9102 USB-serial adapter"),
        (0x0403, 0x6001) => Some("FTDI FT232R USB-serial adapter"),
        (0x0403, 0x6015) => Some("FTDI FT-X USB-serial adapter"),
        (0x10c4, 0xea60) => Some("Silicon Labs CP210x USB-serial adapter"),
        (0x0483, 0x5740) => Some("STM32 virtual COM port (Marlin or stock firmware)"),
        (0x0483, 0xdf11) => Some("STM32 in DFU bootloader"),
        (0x2341, 0x0042 | 0x0010) => Some("Arduino Mega 2560 (RAMPS-style board)"),
        (0x2e8a, 0x0003) => Some("RP2040 in BOOTSEL mode"),
        (0x2e8a, 0x000a) => Some("RP2040 USB serial"),
        (0x1eaf, 0x0004) => Some("Maple USB serial (STM32F1)"),
        (0x1a86, 0x5523) => Some("CH341 USB-serial adapter"),
        (0x0403, 0x6010 | 0x6011 | 0x6014) => Some("FTDI multi-port/high-speed USB-serial adapter"),
        (0x10c4, 0xea70) => Some("Silicon Labs CP2105 USB-serial adapter"),
        (0x1d50, 0x60ec) => Some("Duet (RepRapFirmware)"),
        (0x1d50, 0x6015) => Some("Smoothieboard"),
        (0x2c99, 0x0002) => Some("Prusa i3 MK3/MK3S (Einsy RAMBo)"),
        (0x27b1, 0x0001) => Some("Ultimaker board"),
        _ => None,
    };
    exact.or(match vid {
        0x2c99 => Some("Prusa Research printer"),
        0x2341 | 0x2a03 => Some("Arduino board"),
        0x1d50 => Some("OpenMoko-allocated device (Klipper family)"),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn klipper_and_common_bridges_are_recognised() {
        assert_eq!(board_hint(0x1d50, 0x614e), Some("Klipper firmware (USB)"));
        assert_eq!(board_hint(0x1a86, 0x7523), Some("CH340 USB-serial adapter"));
        assert_eq!(
            board_hint(0x2c99, 0x0002),
            Some("Prusa i3 MK3/MK3S (Einsy RAMBo)")
        );
        assert_eq!(board_hint(0x2c99, 0x000d), Some("Prusa Research printer"));
        assert_eq!(board_hint(0xdead, 0xbeef), None);
    }

    #[test]
    fn usb_ports_carry_their_identity() {
        let info = serialport::SerialPortInfo {
            port_name: "/dev/ttyACM0".into(),
            port_type: serialport::SerialPortType::UsbPort(serialport::UsbPortInfo {
                vid: 0x1d50,
                pid: 0x614e,
                serial_number: Some("3A0029000F50".into()),
                manufacturer: Some("Klipper".into()),
                product: Some("stm32f446xx".into()),
            }),
        };
        let v = serde_json::to_value(from_port(info)).expect("serialisable");
        assert_eq!(
            v,
            json!({
                "id": "serial:/dev/ttyACM0", "name": "Klipper stm32f446xx", "kind": "serial",
                "port": "/dev/ttyACM0", "port_type": "usb",
                "usb": { "vid": "1d50", "pid": "614e", "manufacturer": "Klipper",
                         "product": "stm32f446xx", "serial_number": "3A0029000F50" },
                "board": "Klipper firmware (USB)"
            })
        );
    }

    #[cfg(unix)]
    #[test]
    fn by_id_links_map_devices_to_stable_names() {
        let dir = std::env::temp_dir().join(format!("gantry-by-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("by-id")).expect("dir");
        let dev = dir.join("ttyACM7");
        std::fs::write(&dev, b"").expect("device stand-in");
        let link = dir.join("by-id/usb-Klipper_rp2040_E66198F1CF801D27-if00");
        std::os::unix::fs::symlink("../ttyACM7", &link).expect("symlink");
        let map = by_id_links(&dir.join("by-id"));
        let canonical = std::fs::canonicalize(&dev).expect("canonical");
        assert_eq!(
            map.get(&canonical),
            Some(&link.to_string_lossy().into_owned())
        );
        assert!(by_id_links(&dir.join("missing")).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn non_usb_ports_show_null_usb() {
        let info = serialport::SerialPortInfo {
            port_name: "/dev/ttyS0".into(),
            port_type: serialport::SerialPortType::PciPort,
        };
        let v = serde_json::to_value(from_port(info)).expect("serialisable");
        assert_eq!(v["usb"], serde_json::Value::Null);
        assert_eq!(v["port_type"], "pci");
        assert_eq!(v["name"], "/dev/ttyS0");
    }

    #[test]
    fn the_simulated_printer_comes_first_and_its_config_is_bundled() {
        let list = list();
        assert_eq!(list[0], simulated());
        assert!(SIMULATED_CONFIG.contains("[stepper_x]"));
        let v = serde_json::to_value(&list[0]).expect("serialisable");
        assert!(v["usb"].is_null() && v["board"].is_null() && v.get("port").is_none());
    }
}
