//! Loading in the background: the G-code streams from disk through motion's toolpath reader into
//! GPU-ready pages (shown as they come, with a progress bar), then the levels of detail are
//! built and the planner times the whole file for playback. The app never waits for any of it.
//!
//! Two threads, started at start-up: the loader (read, pack, then levels of detail) and the
//! planner (motion's planner over the same bytes; it starts once the toolpath is loaded, so the
//! two do not compete for the CPU while the file loads). They talk to the app through channels;
//! [`receive`] takes what arrived each frame into [`LoadState`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

use bevy::prelude::*;
use gantry_core::motion::config::Config;
use gantry_core::motion::printer::Response;
use gantry_core::motion::toolpath::{Reader, ToolpathOptions};

use crate::lod::{self, Lods};
use crate::ribbons::{RibbonPages, SharedDevice};
use crate::timeline::{Planning, TimedMove, Timeline};
use crate::toolpath_data::{Builder, Chunk, LoadedToolpath, Page, ToolpathMeta};

/// Bytes read from disk at a time.
const READ_BLOCK: usize = 4 << 20;
/// A line offset is kept for every this many lines (to show a line's text).
const LINE_INDEX_STRIDE: u32 = 256;

/// Where the G-code comes from.
#[derive(Clone, Debug)]
pub enum GcodeSource {
    /// A file.
    File(PathBuf),
    /// Bytes in memory (the bundled sample).
    Memory(Arc<[u8]>),
}

impl GcodeSource {
    fn open(&self) -> std::io::Result<(Box<dyn std::io::Read + Send>, u64)> {
        match self {
            Self::File(path) => {
                let f = std::fs::File::open(path)?;
                let len = f.metadata()?.len();
                Ok((Box::new(f), len))
            }
            Self::Memory(bytes) => Ok((
                Box::new(std::io::Cursor::new(bytes.clone())),
                bytes.len() as u64,
            )),
        }
    }
}

/// Offsets of every [`LINE_INDEX_STRIDE`]-th line, to find a line's text without keeping the file.
#[derive(Clone, Debug, Default)]
pub struct LineIndex {
    /// Byte offset of line 1 + k·stride.
    offsets: Vec<u64>,
}

impl LineIndex {
    /// The text of 1-based `line`, without its newline.
    pub fn line_text(&self, source: &GcodeSource, line: u32) -> Option<String> {
        if line == 0 {
            return None;
        }
        let k = (line - 1) / LINE_INDEX_STRIDE;
        let start = *self.offsets.get(k as usize)?;
        let skip = (line - 1) % LINE_INDEX_STRIDE;
        let mut buf = vec![0u8; 64 << 10];
        let n = match source {
            GcodeSource::File(path) => {
                use std::io::{Seek as _, SeekFrom};
                let mut f = std::fs::File::open(path).ok()?;
                f.seek(SeekFrom::Start(start)).ok()?;
                read_full(&mut f, &mut buf).ok()?
            }
            GcodeSource::Memory(bytes) => {
                let from = usize::try_from(start).ok()?.min(bytes.len());
                let n = (bytes.len() - from).min(buf.len());
                buf[..n].copy_from_slice(&bytes[from..from + n]);
                n
            }
        };
        let text = &buf[..n];
        let mut lines = text.split(|&c| c == b'\n');
        let line = lines.nth(skip as usize)?;
        Some(String::from_utf8_lossy(line).trim_end().to_owned())
    }

    /// The 1-based line holding byte `offset` of the file: the line a host reading the file is
    /// at when it reports `offset` as its position (Klipper's `virtual_sdcard.file_position`,
    /// the start of the next line to run). Counts the newlines from the indexed line before it
    /// (at most [`LINE_INDEX_STRIDE`] lines of text); `None` when the file cannot be read or
    /// nothing is indexed.
    pub fn line_at_byte(&self, source: &GcodeSource, offset: u64) -> Option<u32> {
        // Lines longer than this on average are not G-code; the count would be a guess.
        const MAX_SPAN: u64 = 4 << 20;
        let k = self
            .offsets
            .partition_point(|&o| o <= offset)
            .checked_sub(1)?;
        let start = self.offsets[k];
        let span = usize::try_from((offset - start).min(MAX_SPAN)).ok()?;
        if offset - start > MAX_SPAN {
            return None;
        }
        let newlines = match source {
            GcodeSource::File(path) => {
                use std::io::{Seek as _, SeekFrom};
                let mut f = std::fs::File::open(path).ok()?;
                f.seek(SeekFrom::Start(start)).ok()?;
                let mut buf = vec![0u8; span];
                let n = read_full(&mut f, &mut buf).ok()?;
                count_newlines(&buf[..n])
            }
            GcodeSource::Memory(bytes) => {
                let from = usize::try_from(start).ok()?.min(bytes.len());
                let to = (from + span).min(bytes.len());
                count_newlines(&bytes[from..to])
            }
        };
        let k = u32::try_from(k).ok()?;
        Some(1 + k * LINE_INDEX_STRIDE + newlines)
    }

    /// A line at or after the one holding byte `offset` (at most [`LINE_INDEX_STRIDE`] lines
    /// later); `u32::MAX` past the last indexed line.
    pub fn line_at_offset(&self, offset: u64) -> u32 {
        let k = self.offsets.partition_point(|&o| o <= offset);
        if k >= self.offsets.len() {
            return u32::MAX;
        }
        u32::try_from(k)
            .unwrap_or(u32::MAX)
            .saturating_mul(LINE_INDEX_STRIDE)
    }

    fn add_block(&mut self, block: &[u8], offset: u64, lines_before: &mut u32) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let mut i = 0;
        while let Some(k) = gantry_core::motion::toolpath::memchr_nl(&block[i..]) {
            i += k + 1;
            *lines_before += 1;
            if lines_before.is_multiple_of(LINE_INDEX_STRIDE) {
                self.offsets.push(offset + i as u64);
            }
        }
    }
}

fn count_newlines(bytes: &[u8]) -> u32 {
    let n = bytes.iter().filter(|&&c| c == b'\n').count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What the threads send.
enum LoadMsg {
    Progress(u64),
    Pages(Vec<(Page, Vec<Chunk>)>),
    Parsed(Box<ToolpathMeta>, LineIndex),
    Lods(Box<Lods>),
    Moves(Vec<TimedMove>),
    Responses(Vec<Response>),
    Planned,
    PlanError(String),
    Error(String),
}

/// How the load goes, and what has arrived.
#[derive(Resource)]
pub struct LoadState {
    /// The file's name for titles.
    pub source_name: String,
    /// Where the G-code comes from.
    pub source: GcodeSource,
    /// The file's size.
    pub file_bytes: u64,
    /// Bytes read so far.
    pub bytes_read: u64,
    /// When loading started.
    pub started: Instant,
    /// How long parsing took (file to pages), once done.
    pub parse_time: Option<Duration>,
    /// Level-0 chunks so far.
    pub chunks: Vec<Chunk>,
    /// Level-0 pages so far (the renderer's first pages, at the same indices).
    pub pages: Vec<Page>,
    /// Everything else, once parsed.
    pub meta: Option<Arc<ToolpathMeta>>,
    /// Line offsets, once parsed.
    pub line_index: LineIndex,
    /// Levels of detail, once built.
    pub lods: Option<Arc<Lods>>,
    /// How long the levels of detail took.
    pub lod_time: Option<Duration>,
    /// The planner's moves so far.
    pub timeline: Timeline,
    /// Whether the planner reached the end of the file.
    pub planned: bool,
    /// How long planning took.
    pub plan_time: Option<Duration>,
    /// The planner's messages (Klipper's errors and notices), the first few hundred.
    pub responses: Vec<Response>,
    /// A failure that stopped loading or planning.
    pub error: Option<String>,
    /// Planning failed (the toolpath is still shown).
    pub plan_error: Option<String>,
    /// Which load this is: 0 at start, one more for each file shown instead (see [`replace`]).
    pub generation: u32,
    rx: Option<std::sync::Mutex<Receiver<LoadMsg>>>,
}

impl LoadState {
    /// Whether the toolpath is fully read.
    pub fn parsed(&self) -> bool {
        self.meta.is_some()
    }

    /// Load progress 0–1.
    pub fn progress(&self) -> f32 {
        if self.parsed() {
            return 1.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let p = self.bytes_read as f32 / self.file_bytes.max(1) as f32;
        p.min(1.0)
    }

    /// The whole toolpath, once parsed (cheap: pages are shared).
    pub fn loaded(&self) -> Option<LoadedToolpath> {
        let meta = self.meta.as_ref()?;
        Some(LoadedToolpath {
            pages: self.pages.clone(),
            chunks: self.chunks.clone(),
            meta: (**meta).clone(),
        })
    }

    /// Segments so far.
    pub fn segments(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.count)).sum()
    }
}

/// Starts loading `source` (and planning it on `config`); the state goes in as a resource.
/// The ribbons plugin must be added first (its shared device receives the GPU).
pub fn start(
    app: &mut App,
    source_name: String,
    source: GcodeSource,
    config: Config,
    options: ToolpathOptions,
    plan: bool,
) {
    let pages = app.world().resource::<RibbonPages>().clone();
    let epoch = pages.epoch();
    let (state, job) = new_load(
        source_name,
        source,
        config,
        options,
        plan,
        0,
        (pages, epoch),
    );
    app.insert_resource(state)
        .insert_resource(PendingLoad(Some(job)))
        .add_systems(First, begin.after(crate::ribbons::ShareDevice))
        .add_systems(PreUpdate, receive);
}

/// Shows another file instead (the live feed's job): the drawn toolpath is dropped and `source`
/// loads as [`start`] loads, without planning. A load still running sends into the void and ends.
pub fn replace(
    commands: &mut Commands,
    ribbon_pages: &RibbonPages,
    generation: u32,
    source_name: String,
    source: GcodeSource,
    config: Config,
    options: ToolpathOptions,
) {
    let epoch = ribbon_pages.replace();
    let (state, job) = new_load(
        source_name,
        source,
        config,
        options,
        false,
        generation,
        (ribbon_pages.clone(), epoch),
    );
    commands.insert_resource(state);
    commands.insert_resource(PendingLoad(Some(job)));
}

fn new_load(
    source_name: String,
    source: GcodeSource,
    config: Config,
    options: ToolpathOptions,
    plan: bool,
    generation: u32,
    gpu: (RibbonPages, u32),
) -> (LoadState, LoadJob) {
    let (tx, rx) = channel();
    let file_bytes = match &source {
        GcodeSource::File(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
        GcodeSource::Memory(b) => b.len() as u64,
    };
    let state = LoadState {
        source_name,
        source: source.clone(),
        file_bytes,
        bytes_read: 0,
        started: Instant::now(),
        parse_time: None,
        chunks: Vec::new(),
        pages: Vec::new(),
        meta: None,
        line_index: LineIndex::default(),
        lods: None,
        lod_time: None,
        timeline: Timeline::default(),
        planned: false,
        plan_time: None,
        responses: Vec::new(),
        error: None,
        plan_error: None,
        generation,
        rx: Some(std::sync::Mutex::new(rx)),
    };
    let job = LoadJob {
        source,
        options,
        config: plan.then_some(config),
        gpu,
        tx,
    };
    (state, job)
}

/// What the loader thread needs, until it starts.
struct LoadJob {
    source: GcodeSource,
    options: ToolpathOptions,
    config: Option<Config>,
    /// Where the pages go for the GPU, and the epoch they belong to.
    gpu: (RibbonPages, u32),
    tx: Sender<LoadMsg>,
}

/// The load waiting for the renderer's device.
#[derive(Resource)]
struct PendingLoad(Option<LoadJob>);

/// Starts the loader thread once the renderer has its device (the window's surface comes first
/// on a desktop): the load is timed from here. Pages go to the GPU from the render world
/// ([`crate::ribbons`]), before the frame that first draws them.
fn begin(
    mut pending: ResMut<PendingLoad>,
    device: Res<SharedDevice>,
    mut state: ResMut<LoadState>,
) {
    if device.0.get().is_none() {
        return;
    }
    let Some(job) = pending.0.take() else { return };
    state.started = Instant::now();
    let started = state.started;
    std::thread::Builder::new()
        .name("twin-loader".into())
        .spawn(move || {
            let LoadJob {
                source,
                options,
                config,
                gpu,
                tx,
            } = job;
            load_thread(&source, options, config, &gpu, &tx, started);
        })
        .map(|_| ())
        .unwrap_or_else(|e| bevy::log::error!("cannot start the loader thread: {e}"));
}

fn load_thread(
    source: &GcodeSource,
    options: ToolpathOptions,
    config: Option<Config>,
    (gpu, epoch): &(RibbonPages, u32),
    tx: &Sender<LoadMsg>,
    started: Instant,
) {
    // Each page goes to the renderer as it fills, and to the app (its CPU copy, for playback).
    let send = |pages: Vec<(Page, Vec<Chunk>)>| {
        for (p, _) in &pages {
            gpu.push(*epoch, p.clone());
        }
        let _ = tx.send(LoadMsg::Pages(pages));
    };
    let (mut input, _) = match source.open() {
        Ok(x) => x,
        Err(e) => {
            let _ = tx.send(LoadMsg::Error(format!("cannot read the G-code: {e}")));
            return;
        }
    };
    let mut reader = Reader::new(options);
    let mut builder = Builder::new(options.filament_diameter_mm);
    let mut index = LineIndex::default();
    let mut lines = 0u32;
    let mut block = vec![0u8; READ_BLOCK];
    let mut offset = 0u64;
    let mut loaded = LoadedToolpath::default();
    let (mut t_read, mut t_parse, mut t_index) = (0.0, 0.0, 0.0);
    loop {
        let t = Instant::now();
        let n = match read_full(&mut input, &mut block) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(LoadMsg::Error(format!("cannot read the G-code: {e}")));
                return;
            }
        };
        if n == 0 {
            break;
        }
        let t1 = Instant::now();
        reader.feed(&block[..n], &mut builder);
        let t2 = Instant::now();
        index.add_block(&block[..n], offset, &mut lines);
        let t3 = Instant::now();
        offset += n as u64;
        let pages = builder.take_finished();
        if !pages.is_empty() {
            for (p, c) in &pages {
                loaded.pages.push(p.clone());
                loaded.chunks.extend_from_slice(c);
            }
            send(pages);
        }
        t_read += (t1 - t).as_secs_f64();
        t_parse += (t2 - t1).as_secs_f64();
        t_index += (t3 - t2).as_secs_f64();
        let _ = tx.send(LoadMsg::Progress(offset));
    }
    let t = Instant::now();
    reader.finish(&mut builder);
    let (pages, meta) = builder.finish(reader.lines_read());
    for (p, c) in &pages {
        loaded.pages.push(p.clone());
        loaded.chunks.extend_from_slice(c);
    }
    loaded.meta = meta.clone();
    if !pages.is_empty() {
        send(pages);
    }
    let _ = tx.send(LoadMsg::Parsed(Box::new(meta), index));
    let t_finish = t.elapsed().as_secs_f64();
    bevy::log::info!(
        "toolpath: {} segments in {:.3} s (read {t_read:.3} s, parse {t_parse:.3} s, \
         line index {t_index:.3} s, finish {t_finish:.3} s)",
        loaded.meta.segments,
        started.elapsed().as_secs_f64()
    );

    // The planner in its own thread, now that the CPU is free of parsing.
    if let Some(config) = config {
        let plan_source = source.clone();
        let plan_tx = tx.clone();
        let planner = std::thread::Builder::new()
            .name("twin-planner".into())
            .spawn(move || plan_thread(&plan_source, &config, &plan_tx));
        if let Err(e) = planner {
            let _ = tx.send(LoadMsg::PlanError(format!("cannot start the planner: {e}")));
        }
    }

    let lod_start = Instant::now();
    #[allow(clippy::cast_possible_truncation)]
    let mut lods = lod::build(&loaded, loaded.pages.len() as u32);
    // The renderer's copy is the only one: freed once on the GPU.
    for page in std::mem::take(&mut lods.pages) {
        gpu.push(*epoch, page);
    }
    bevy::log::info!(
        "levels of detail: {} segments in {:.3} s",
        (1..=lod::LEVELS.len())
            .map(|l| lods.segments(l))
            .sum::<u64>(),
        lod_start.elapsed().as_secs_f64()
    );
    let _ = tx.send(LoadMsg::Lods(Box::new(lods)));
}

fn plan_thread(source: &GcodeSource, config: &Config, tx: &Sender<LoadMsg>) {
    let mut planning = match Planning::new(config) {
        Ok(p) => p,
        Err(e) => {
            let _ = tx.send(LoadMsg::PlanError(format!(
                "the planner cannot use the printer.cfg: {e}"
            )));
            return;
        }
    };
    let Ok((mut input, _)) = source.open() else {
        let _ = tx.send(LoadMsg::PlanError(
            "cannot read the G-code for planning".into(),
        ));
        return;
    };
    let mut block = vec![0u8; 1 << 20];
    let mut moves = Vec::new();
    loop {
        let n = match read_full(&mut input, &mut block) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(LoadMsg::PlanError(format!("cannot read the G-code: {e}")));
                return;
            }
        };
        let result = if n == 0 {
            planning.finish(&mut moves)
        } else {
            planning.feed(&block[..n], &mut moves)
        };
        if let Err(e) = result {
            let _ = tx.send(LoadMsg::PlanError(format!("the planner failed: {e}")));
            return;
        }
        if !moves.is_empty() {
            let _ = tx.send(LoadMsg::Moves(std::mem::take(&mut moves)));
        }
        let responses = planning.new_responses();
        if !responses.is_empty() {
            let _ = tx.send(LoadMsg::Responses(responses));
        }
        if n == 0 {
            break;
        }
    }
    let _ = tx.send(LoadMsg::Planned);
}

/// Responses kept for the HUD.
const RESPONSES_KEPT: usize = 500;

/// Takes what the threads sent since the last frame.
pub fn receive(mut state: ResMut<LoadState>) {
    let Some(rx) = state.rx.take() else { return };
    let mut keep = true;
    // A bounded number per frame, so a flood of messages cannot stall a frame.
    for _ in 0..256 {
        let next = rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_recv();
        match next {
            Ok(msg) => state.take(msg),
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) => {
                keep = false;
                break;
            }
        }
    }
    if keep {
        state.rx = Some(rx);
    }
}

impl LoadState {
    fn take(&mut self, msg: LoadMsg) {
        match msg {
            LoadMsg::Progress(b) => self.bytes_read = b,
            LoadMsg::Pages(pages) => {
                for (points, chunks) in pages {
                    self.pages.push(points);
                    self.chunks.extend(chunks);
                }
            }
            LoadMsg::Parsed(meta, index) => {
                self.parse_time = Some(self.started.elapsed());
                self.bytes_read = self.file_bytes;
                self.meta = Some(Arc::new(*meta));
                self.line_index = index;
            }
            LoadMsg::Lods(lods) => {
                self.lod_time = Some(self.started.elapsed());
                self.lods = Some(Arc::new(*lods));
            }
            LoadMsg::Moves(moves) => self.timeline.extend(moves),
            LoadMsg::Responses(r) => {
                let room = RESPONSES_KEPT.saturating_sub(self.responses.len());
                self.responses.extend(r.into_iter().take(room));
            }
            LoadMsg::Planned => {
                self.timeline.shrink_to_fit();
                self.planned = true;
                self.plan_time = Some(self.started.elapsed());
            }
            LoadMsg::PlanError(e) => {
                bevy::log::warn!("{e}");
                self.plan_error = Some(e);
                self.planned = true;
            }
            LoadMsg::Error(e) => {
                bevy::log::error!("{e}");
                self.error = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_finds_any_line() {
        let mut text = String::new();
        for i in 1..=1000 {
            text.push_str(&format!("G1 X{i}\n"));
        }
        let bytes: Arc<[u8]> = text.as_bytes().into();
        let mut index = LineIndex::default();
        let mut lines = 0;
        // Two blocks, cut inside a line.
        index.add_block(&bytes[..5000], 0, &mut lines);
        index.add_block(&bytes[5000..], 5000, &mut lines);
        let src = GcodeSource::Memory(bytes);
        for i in [1, 2, 255, 256, 257, 512, 513, 999, 1000] {
            assert_eq!(
                index.line_text(&src, i),
                Some(format!("G1 X{i}")),
                "line {i}"
            );
        }
        assert_eq!(index.line_text(&src, 0), None);
    }

    #[test]
    fn a_byte_offset_maps_to_its_line() {
        let mut text = String::new();
        let mut starts = vec![0u64];
        for i in 1..=1000 {
            text.push_str(&format!("G1 X{i} ; {}\n", "x".repeat(i % 7)));
            starts.push(text.len() as u64);
        }
        let bytes: Arc<[u8]> = text.as_bytes().into();
        let mut index = LineIndex::default();
        let mut lines = 0;
        index.add_block(&bytes[..3000], 0, &mut lines);
        index.add_block(&bytes[3000..], 3000, &mut lines);
        let mem = GcodeSource::Memory(bytes.clone());
        let path = std::env::temp_dir().join(format!("twin-offsets-{}.gcode", std::process::id()));
        std::fs::write(&path, &bytes[..]).expect("temp file");
        let file = GcodeSource::File(path.clone());
        for src in [&mem, &file] {
            for line in [1u32, 2, 255, 256, 257, 258, 511, 512, 513, 1000] {
                let start = starts[line as usize - 1];
                let end = starts[line as usize] - 1; // its newline
                // The host reports the start of the next line to run: that line.
                assert_eq!(
                    index.line_at_byte(src, start),
                    Some(line),
                    "start of {line}"
                );
                assert_eq!(index.line_at_byte(src, end), Some(line), "end of {line}");
                assert_eq!(
                    index
                        .line_text(src, line)
                        .map(|t| t.starts_with(&format!("G1 X{line} "))),
                    Some(true)
                );
            }
        }
        std::fs::remove_file(&path).ok();
        assert_eq!(LineIndex::default().line_at_byte(&mem, 10), None);
    }
}
