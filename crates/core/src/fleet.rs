//! The printers this Gantry controls right now: the local printer (Gantry's own Klipper host on
//! a board or `gantry sim`) and remote ones (Moonraker, OctoPrint, PrusaLink), each behind the
//! one [`PrinterBackend`] interface, by id. The API serves them; the UI picks one.
//!
//! The fleet owns nothing but the list: each backend owns its connection and its thread or
//! tasks. Removing a printer drops the fleet's handle; the backend closes when the last handle
//! goes (an API call that still holds one finishes first).

use std::sync::{Arc, PoisonError, RwLock};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::model::{BackendKind, KlippyState, SharedBackend};

/// One printer in the fleet.
#[derive(Clone)]
pub struct FleetPrinter {
    /// Its id in the API (`sim`, `moonraker:voron.local:7125`, …).
    pub id: String,
    /// The name shown to the user.
    pub name: String,
    /// Where it is: a port, a URL.
    pub address: String,
    /// The backend.
    pub backend: SharedBackend,
}

impl std::fmt::Debug for FleetPrinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetPrinter")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("address", &self.address)
            .field("kind", &self.backend.kind())
            .finish()
    }
}

/// What the API lists of a fleet printer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetEntry {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Where it is.
    pub address: String,
    /// Which kind of backend.
    pub kind: BackendKind,
    /// Klippy's state as the backend last saw it (`webhooks.state`), when it knows one.
    pub state: Option<KlippyState>,
    /// `webhooks.state_message`, when not empty.
    pub state_message: Option<String>,
}

/// A change to the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FleetEvent {
    /// A printer was added.
    Added {
        /// Its id.
        id: String,
    },
    /// A printer was removed.
    Removed {
        /// Its id.
        id: String,
    },
    /// A printer was given another name.
    Renamed {
        /// Its id.
        id: String,
    },
}

/// The printers, in the order they were added (the first is the default of API calls that
/// name none).
#[derive(Debug)]
pub struct Fleet {
    printers: RwLock<Vec<FleetPrinter>>,
    events: broadcast::Sender<FleetEvent>,
}

impl Default for Fleet {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a fleet change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// The id is taken.
    #[error("a printer with id '{0}' is already in the list")]
    Duplicate(String),
    /// No such printer.
    #[error("no printer with id '{0}'")]
    Unknown(String),
}

impl Fleet {
    /// An empty fleet.
    pub fn new() -> Self {
        Self {
            printers: RwLock::new(Vec::new()),
            events: broadcast::channel(64).0,
        }
    }

    /// Adds a printer.
    ///
    /// # Errors
    /// [`FleetError::Duplicate`] when its id is taken.
    pub fn add(&self, printer: FleetPrinter) -> Result<(), FleetError> {
        let mut list = self
            .printers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if list.iter().any(|p| p.id == printer.id) {
            return Err(FleetError::Duplicate(printer.id));
        }
        let id = printer.id.clone();
        list.push(printer);
        drop(list);
        let _ = self.events.send(FleetEvent::Added { id });
        Ok(())
    }

    /// Removes a printer and returns it (its backend closes once no call holds it).
    ///
    /// # Errors
    /// [`FleetError::Unknown`] when there is none with that id.
    pub fn remove(&self, id: &str) -> Result<FleetPrinter, FleetError> {
        let mut list = self
            .printers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let pos = list
            .iter()
            .position(|p| p.id == id)
            .ok_or_else(|| FleetError::Unknown(id.to_owned()))?;
        let printer = list.remove(pos);
        drop(list);
        let _ = self.events.send(FleetEvent::Removed { id: id.to_owned() });
        Ok(printer)
    }

    /// Gives the printer with `id` the name `name`.
    ///
    /// # Errors
    /// [`FleetError::Unknown`] when there is none with that id.
    pub fn rename(&self, id: &str, name: &str) -> Result<(), FleetError> {
        let mut list = self
            .printers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let printer = list
            .iter_mut()
            .find(|p| p.id == id)
            .ok_or_else(|| FleetError::Unknown(id.to_owned()))?;
        name.clone_into(&mut printer.name);
        drop(list);
        let _ = self.events.send(FleetEvent::Renamed { id: id.to_owned() });
        Ok(())
    }

    /// The printer with `id`, or the first one when `id` is `None`.
    pub fn get(&self, id: Option<&str>) -> Option<FleetPrinter> {
        let list = self.printers.read().unwrap_or_else(PoisonError::into_inner);
        match id {
            Some(id) => list.iter().find(|p| p.id == id).cloned(),
            None => list.first().cloned(),
        }
    }

    /// Every printer, with the state its backend last saw.
    pub fn list(&self) -> Vec<FleetEntry> {
        let list = self.printers.read().unwrap_or_else(PoisonError::into_inner);
        list.iter()
            .map(|p| {
                let status = p.backend.status();
                FleetEntry {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    address: p.address.clone(),
                    kind: p.backend.kind(),
                    state: status.klippy_state(),
                    state_message: status
                        .str("webhooks", "state_message")
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned),
                }
            })
            .collect()
    }

    /// Changes to the fleet from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<FleetEvent> {
        self.events.subscribe()
    }

    /// Removes every printer (at shutdown), returning them so the caller can close them.
    pub fn drain(&self) -> Vec<FleetPrinter> {
        let mut list = self
            .printers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *list)
    }
}

/// A shared fleet.
pub type SharedFleet = Arc<Fleet>;
