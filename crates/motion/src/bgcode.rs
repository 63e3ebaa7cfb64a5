//! Prusa binary G-code (`.bgcode`, the format of prusa3d/libbgcode's doc/specifications.md):
//! the G-code text inside, decoded from bytes in memory (no I/O).
//!
//! A file is a 10-byte header (`GCDE`, version 1, checksum type) and a run of blocks, each a
//! header (type, compression, uncompressed size, and the compressed size when compressed),
//! parameters (2 bytes; 6 for thumbnails), data and — with checksum type 1 — a CRC-32 of header,
//! parameters and data. G-code blocks are compressed with Deflate (zlib stream) or Heatshrink
//! (window 2¹¹ or 2¹², look-ahead 2⁴) and encoded plainly or with MeatPack (digits, `.`, space,
//! newline, `G`, `X` and — without spaces — `E` in 4 bits; whole comment lines kept verbatim in
//! encoding 2). Decoding follows libbgcode's `unbinarize`: the spaces the packer removed from `G`
//! lines are put back before each parameter letter, and empty lines do not come back.
//!
//! [`BgcodeReader`] walks the blocks and yields the G-code one block at a time (each block holds
//! whole lines, about 64 KiB of text), so a caller can plan a file without holding its text;
//! [`decode_gcode`] returns all of it. Every block's CRC is checked; a damaged file is an error
//! naming the block's byte offset, never a silent skip.

use std::fmt;

use gantry_proto::crc::crc32;

/// The magic number at the start of every binary G-code file.
pub const MAGIC: &[u8; 4] = b"GCDE";

/// The format version this reader knows.
pub const VERSION: u32 = 1;

/// Bytes of the file header.
const FILE_HEADER_SIZE: usize = 10;

/// Whether `bytes` begin like binary G-code.
pub fn is_bgcode(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Why a binary G-code file cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BgcodeError {
    /// The file does not start with `GCDE`.
    #[error("not binary G-code (the file does not begin with GCDE)")]
    NotBgcode,
    /// The file ends inside its header.
    #[error("binary G-code header truncated")]
    HeaderTruncated,
    /// A version this reader does not know.
    #[error("binary G-code version {0} is not supported (Gantry reads version {VERSION})")]
    Version(u32),
    /// A checksum type this reader does not know.
    #[error("binary G-code checksum type {0} is not supported")]
    ChecksumType(u16),
    /// Something wrong with the block at byte `offset`.
    #[error("binary G-code block at byte {offset}: {problem}")]
    Block {
        /// Byte offset of the block's header in the file.
        offset: usize,
        /// What is wrong.
        problem: BlockProblem,
    },
}

/// What is wrong with a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockProblem {
    /// The file ends inside the block.
    Truncated,
    /// An unknown block type.
    Type(u16),
    /// An unknown compression.
    Compression(u16),
    /// An unknown G-code encoding.
    Encoding(u16),
    /// The stored CRC-32 differs from the block's.
    Checksum {
        /// The CRC the file holds.
        stored: u32,
        /// The CRC of the block's bytes.
        computed: u32,
    },
    /// The compressed data do not decompress (or not to the size the header gives).
    Corrupt(&'static str),
}

impl fmt::Display for BlockProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => write!(f, "the file ends inside the block"),
            Self::Type(t) => write!(f, "unknown block type {t}"),
            Self::Compression(c) => write!(f, "unknown compression {c}"),
            Self::Encoding(e) => write!(f, "unknown G-code encoding {e}"),
            Self::Checksum { stored, computed } => write!(
                f,
                "CRC-32 mismatch (stored {stored:08x}, computed {computed:08x}): the file is damaged"
            ),
            Self::Corrupt(what) => write!(f, "{what}"),
        }
    }
}

/// A block's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockType {
    /// Key-value pairs about the file (producer).
    FileMetadata,
    /// G-code.
    GCode,
    /// The slicer's settings.
    SlicerMetadata,
    /// What the printer reads (model, nozzle, temperatures).
    PrinterMetadata,
    /// About the print (filament used, estimated times).
    PrintMetadata,
    /// A thumbnail image.
    Thumbnail,
}

impl BlockType {
    fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0 => Self::FileMetadata,
            1 => Self::GCode,
            2 => Self::SlicerMetadata,
            3 => Self::PrinterMetadata,
            4 => Self::PrintMetadata,
            5 => Self::Thumbnail,
            _ => return None,
        })
    }
}

/// How a block's data are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Stored.
    None,
    /// Deflate, in a zlib stream.
    Deflate,
    /// Heatshrink with a 2¹¹-byte window and 2⁴-byte look-ahead.
    Heatshrink11_4,
    /// Heatshrink with a 2¹²-byte window and 2⁴-byte look-ahead.
    Heatshrink12_4,
}

impl Compression {
    fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0 => Self::None,
            1 => Self::Deflate,
            2 => Self::Heatshrink11_4,
            3 => Self::Heatshrink12_4,
            _ => return None,
        })
    }
}

/// One block, borrowed from the file.
#[derive(Clone, Copy, Debug)]
pub struct Block<'a> {
    /// Byte offset of the block's header in the file.
    pub offset: usize,
    /// The block's type.
    pub kind: BlockType,
    /// Its compression.
    pub compression: Compression,
    /// The data's size once decompressed, bytes.
    pub uncompressed_size: usize,
    /// The block's parameters (the encoding, or a thumbnail's format, width and height).
    pub params: &'a [u8],
    /// The data as stored.
    pub data: &'a [u8],
}

impl Block<'_> {
    /// The first parameter: the encoding of metadata and G-code blocks, the format of a
    /// thumbnail.
    pub fn encoding(&self) -> u16 {
        u16_at(self.params, 0).unwrap_or(0)
    }

    fn error(&self, problem: BlockProblem) -> BgcodeError {
        BgcodeError::Block {
            offset: self.offset,
            problem,
        }
    }

    /// Appends the decompressed data to `out`.
    ///
    /// # Errors
    /// Data that do not decompress to the block's uncompressed size.
    pub fn decompress(&self, out: &mut Vec<u8>) -> Result<(), BgcodeError> {
        let start = out.len();
        match self.compression {
            Compression::None => out.extend_from_slice(self.data),
            Compression::Deflate => {
                let data = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(
                    self.data,
                    self.uncompressed_size,
                )
                .map_err(|_| self.error(BlockProblem::Corrupt("Deflate data corrupt")))?;
                out.extend_from_slice(&data);
            }
            Compression::Heatshrink11_4 => {
                heatshrink_decode(self.data, 11, 4, self.uncompressed_size, out)
                    .map_err(|e| self.error(BlockProblem::Corrupt(e)))?;
            }
            Compression::Heatshrink12_4 => {
                heatshrink_decode(self.data, 12, 4, self.uncompressed_size, out)
                    .map_err(|e| self.error(BlockProblem::Corrupt(e)))?;
            }
        }
        if out.len() - start != self.uncompressed_size {
            return Err(self.error(BlockProblem::Corrupt(
                "decompressed size differs from the block header's",
            )));
        }
        Ok(())
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Walks a binary G-code file's blocks (see the module docs).
#[derive(Clone, Debug)]
pub struct BgcodeReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    crc: bool,
    /// Scratch: a G-code block's data once decompressed, before decoding.
    scratch: Vec<u8>,
}

impl<'a> BgcodeReader<'a> {
    /// Reads the file header.
    ///
    /// # Errors
    /// Not binary G-code, an unknown version or checksum type.
    pub fn new(bytes: &'a [u8]) -> Result<Self, BgcodeError> {
        if !is_bgcode(bytes) {
            return Err(BgcodeError::NotBgcode);
        }
        let (Some(version), Some(checksum)) = (u32_at(bytes, 4), u16_at(bytes, 8)) else {
            return Err(BgcodeError::HeaderTruncated);
        };
        if version != VERSION {
            return Err(BgcodeError::Version(version));
        }
        if checksum > 1 {
            return Err(BgcodeError::ChecksumType(checksum));
        }
        Ok(Self {
            bytes,
            pos: FILE_HEADER_SIZE,
            crc: checksum == 1,
            scratch: Vec::new(),
        })
    }

    /// The next block, its CRC checked; `None` at the end of the file.
    ///
    /// # Errors
    /// A truncated or damaged block, an unknown type or compression. After an error the
    /// reader stays at the end (a damaged file is not read further).
    pub fn next_block(&mut self) -> Option<Result<Block<'a>, BgcodeError>> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        let result = self.read_block();
        if result.is_err() {
            self.pos = self.bytes.len();
        }
        Some(result)
    }

    fn read_block(&mut self) -> Result<Block<'a>, BgcodeError> {
        let offset = self.pos;
        let bytes = self.bytes;
        let err = |problem| BgcodeError::Block { offset, problem };
        let truncated = || err(BlockProblem::Truncated);
        let kind_raw = u16_at(bytes, offset).ok_or_else(truncated)?;
        let comp_raw = u16_at(bytes, offset + 2).ok_or_else(truncated)?;
        let uncompressed = u32_at(bytes, offset + 4).ok_or_else(truncated)? as usize;
        let kind = BlockType::from_u16(kind_raw).ok_or(err(BlockProblem::Type(kind_raw)))?;
        let compression =
            Compression::from_u16(comp_raw).ok_or(err(BlockProblem::Compression(comp_raw)))?;
        let (header, stored) = if compression == Compression::None {
            (8, uncompressed)
        } else {
            (
                12,
                u32_at(bytes, offset + 8).ok_or_else(truncated)? as usize,
            )
        };
        let params = if kind == BlockType::Thumbnail { 6 } else { 2 };
        let data_end = (offset + header + params)
            .checked_add(stored)
            .ok_or_else(truncated)?;
        let crc_size = if self.crc { 4 } else { 0 };
        let end = data_end.checked_add(crc_size).ok_or_else(truncated)?;
        if end > bytes.len() {
            return Err(truncated());
        }
        if self.crc {
            let stored_crc = u32_at(bytes, data_end).ok_or_else(truncated)?;
            let computed = crc32(&bytes[offset..data_end]);
            if stored_crc != computed {
                return Err(err(BlockProblem::Checksum {
                    stored: stored_crc,
                    computed,
                }));
            }
        }
        self.pos = end;
        Ok(Block {
            offset,
            kind,
            compression,
            uncompressed_size: uncompressed,
            params: &bytes[offset + header..offset + header + params],
            data: &bytes[offset + header + params..data_end],
        })
    }

    /// Appends the next G-code block's text to `out`, skipping other blocks. Returns `false`
    /// at the end of the file.
    ///
    /// # Errors
    /// See [`BgcodeReader::next_block`]; data that do not decompress; an unknown encoding.
    pub fn next_gcode(&mut self, out: &mut Vec<u8>) -> Result<bool, BgcodeError> {
        while let Some(block) = self.next_block() {
            let block = block?;
            if block.kind != BlockType::GCode {
                continue;
            }
            match block.encoding() {
                0 => block.decompress(out)?,
                1 | 2 => {
                    let mut scratch = std::mem::take(&mut self.scratch);
                    scratch.clear();
                    let result = block.decompress(&mut scratch);
                    if result.is_ok() {
                        meatpack_decode(&scratch, out);
                    }
                    self.scratch = scratch;
                    result?;
                }
                e => return Err(block.error(BlockProblem::Encoding(e))),
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// The key-value pairs of the first metadata block of `kind` (`key=value` lines, INI
    /// encoding), in file order. Reads the file from its start, whatever this reader's
    /// position.
    ///
    /// # Errors
    /// See [`BgcodeReader::next_block`].
    pub fn metadata(&self, kind: BlockType) -> Result<Vec<(String, String)>, BgcodeError> {
        let mut reader = Self {
            bytes: self.bytes,
            pos: FILE_HEADER_SIZE,
            crc: self.crc,
            scratch: Vec::new(),
        };
        while let Some(block) = reader.next_block() {
            let block = block?;
            if block.kind != kind {
                continue;
            }
            let mut data = Vec::new();
            block.decompress(&mut data)?;
            let text = String::from_utf8_lossy(&data);
            return Ok(text
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect());
        }
        Ok(Vec::new())
    }
}

/// The whole G-code text of a binary G-code file.
///
/// # Errors
/// See [`BgcodeReader`].
pub fn decode_gcode(bytes: &[u8]) -> Result<Vec<u8>, BgcodeError> {
    let mut reader = BgcodeReader::new(bytes)?;
    let mut out = Vec::new();
    while reader.next_gcode(&mut out)? {}
    Ok(out)
}

/// Heatshrink decompression (LZSS with a `2^window_bits`-byte window; bits read from the most
/// significant end of each byte): a 1 bit is followed by an 8-bit literal, a 0 bit by a
/// back-reference — `window_bits` bits of distance − 1, then `lookahead_bits` bits of
/// length − 1. The window starts zeroed. Stops after `size` bytes (the rest is padding).
///
/// # Errors
/// The data end before `size` bytes came out.
fn heatshrink_decode(
    data: &[u8],
    window_bits: u32,
    lookahead_bits: u32,
    size: usize,
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    let start = out.len();
    out.reserve(size);
    let mut bits = BitReader { data, pos: 0 };
    while out.len() - start < size {
        let Some(tag) = bits.read(1) else {
            return Err("Heatshrink data end early");
        };
        if tag == 1 {
            let Some(byte) = bits.read(8) else {
                return Err("Heatshrink data end early");
            };
            out.push(byte as u8);
            continue;
        }
        let (Some(index), Some(count)) = (bits.read(window_bits), bits.read(lookahead_bits)) else {
            return Err("Heatshrink data end early");
        };
        let distance = index as usize + 1;
        let count = (count as usize + 1).min(size - (out.len() - start));
        for _ in 0..count {
            // Before the start of the block the window holds zeros.
            let produced = out.len() - start;
            let byte = if distance > produced {
                0
            } else {
                out[out.len() - distance]
            };
            out.push(byte);
        }
    }
    Ok(())
}

/// Reads bits most significant first.
struct BitReader<'a> {
    data: &'a [u8],
    /// Bit position.
    pos: usize,
}

impl BitReader<'_> {
    fn read(&mut self, n: u32) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            let bit = (byte >> (7 - (self.pos % 8))) & 1;
            v = (v << 1) | u32::from(bit);
            self.pos += 1;
        }
        Some(v)
    }
}

/// MeatPack's signal byte; two in a row announce a command byte.
const MP_SIGNAL: u8 = 0xFF;
const MP_ENABLE_PACKING: u8 = 251;
const MP_DISABLE_PACKING: u8 = 250;
const MP_RESET_ALL: u8 = 249;
const MP_ENABLE_NO_SPACES: u8 = 247;
const MP_DISABLE_NO_SPACES: u8 = 246;
/// The nibble that stands for "a whole byte follows".
const MP_FULL: u8 = 0xF;

/// Decodes MeatPack-encoded G-code (see the module docs) and appends the text to `out`.
pub fn meatpack_decode(src: &[u8], out: &mut Vec<u8>) {
    let mut mp = MeatPack::default();
    let mut fix = SpaceFixer::new(out);
    for &b in src {
        mp.byte(b, &mut |c| fix.push(c));
    }
}

/// MeatPack's decoder state.
#[derive(Default)]
struct MeatPack {
    packing: bool,
    no_spaces: bool,
    /// A command follows (two signal bytes came).
    command: bool,
    /// Signal bytes seen in a row (0 or 1).
    signals: u8,
    /// Whole bytes still to come for the current packed byte.
    full_pending: u8,
    /// A packed character that comes out after the next whole byte.
    held: Option<u8>,
}

impl MeatPack {
    fn byte(&mut self, b: u8, emit: &mut impl FnMut(u8)) {
        if b == MP_SIGNAL {
            if self.signals > 0 {
                self.command = true;
                self.signals = 0;
            } else {
                self.signals = 1;
            }
            return;
        }
        if self.command {
            self.command = false;
            match b {
                MP_ENABLE_PACKING => self.packing = true,
                MP_DISABLE_PACKING | MP_RESET_ALL => self.packing = false,
                MP_ENABLE_NO_SPACES => self.no_spaces = true,
                MP_DISABLE_NO_SPACES => self.no_spaces = false,
                _ => {}
            }
            return;
        }
        if self.signals > 0 {
            // A lone signal byte was data (two whole characters follow it).
            self.signals = 0;
            self.data(MP_SIGNAL, emit);
        }
        self.data(b, emit);
    }

    fn data(&mut self, b: u8, emit: &mut impl FnMut(u8)) {
        if !self.packing {
            emit(b);
            return;
        }
        if self.full_pending > 0 {
            emit(b);
            if let Some(h) = self.held.take() {
                emit(h);
            }
            self.full_pending -= 1;
            return;
        }
        let (lo, hi) = (b & 0xF, b >> 4);
        if lo == MP_FULL {
            self.full_pending += 1;
            if hi == MP_FULL {
                self.full_pending += 1;
            } else {
                self.held = Some(self.unpack(hi));
            }
            return;
        }
        let first = self.unpack(lo);
        emit(first);
        if first == b'\n' {
            return;
        }
        if hi == MP_FULL {
            self.full_pending += 1;
        } else {
            emit(self.unpack(hi));
        }
    }

    fn unpack(&self, nibble: u8) -> u8 {
        match nibble {
            0..=9 => b'0' + nibble,
            10 => b'.',
            11 if self.no_spaces => b'E',
            11 => b' ',
            12 => b'\n',
            13 => b'G',
            14 => b'X',
            _ => 0,
        }
    }
}

/// Puts back the spaces MeatPack's packer took out of `G` lines (before each parameter letter)
/// and drops empty lines, as libbgcode's decoder does.
struct SpaceFixer<'a> {
    out: &'a mut Vec<u8>,
    /// The output's length when this block began (what came before is another block's).
    start: usize,
    /// The current line is a `G` line.
    g_line: bool,
}

impl<'a> SpaceFixer<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        let start = out.len();
        Self {
            out,
            start,
            g_line: false,
        }
    }

    fn prev(&self) -> Option<u8> {
        if self.out.len() > self.start {
            self.out.last().copied()
        } else {
            None
        }
    }

    fn push(&mut self, c: u8) {
        let prev = self.prev();
        let line_start = prev.is_none_or(|p| p == b'\n');
        let mut new_line = false;
        if c == b'G' && line_start {
            self.g_line = true;
            new_line = true;
        } else if c == b'\n' {
            self.g_line = false;
        }
        if !new_line
            && self.g_line
            && prev != Some(b' ')
            && matches!(
                c,
                b'X' | b'Y'
                    | b'Z'
                    | b'E'
                    | b'F'
                    | b'I'
                    | b'J'
                    | b'R'
                    | b'S'
                    | b'G'
                    | b'P'
                    | b'W'
                    | b'H'
                    | b'C'
                    | b'A'
            )
        {
            self.out.push(b' ');
        }
        if c != b'\n' || prev != Some(b'\n') {
            self.out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packs `text` as libbgcode's MeatPack packer does for one line (spaces omitted, `E`
    /// packed), for the round-trip test.
    fn pack_line(line: &str, out: &mut Vec<u8>) {
        let code = |c: u8| -> Option<u8> {
            Some(match c {
                b'0'..=b'9' => c - b'0',
                b'.' => 10,
                b'E' => 11,
                b'\n' => 12,
                b'G' => 13,
                b'X' => 14,
                _ => return None,
            })
        };
        let mut s: Vec<u8> = line.bytes().filter(|&c| c != b' ').collect();
        s.push(b'\n');
        let mut i = 0;
        while i < s.len() {
            let a = s[i];
            let b = if i + 1 < s.len() { s[i + 1] } else { b'\n' };
            match (code(a), code(b)) {
                (Some(x), Some(y)) => out.push(y << 4 | x),
                (Some(x), None) => out.extend_from_slice(&[0xF0 | x, b]),
                (None, Some(y)) => out.extend_from_slice(&[y << 4 | 0xF, a]),
                (None, None) => out.extend_from_slice(&[0xFF, a, b]),
            }
            i += 2;
        }
    }

    #[test]
    fn meatpack_round_trips_g_lines_and_keeps_comment_lines() {
        let mut enc = vec![
            0xFF,
            0xFF,
            MP_ENABLE_PACKING,
            0xFF,
            0xFF,
            MP_ENABLE_NO_SPACES,
        ];
        pack_line("G1 X10.5 Y20 E.25", &mut enc);
        pack_line("G1 F1200", &mut enc);
        enc.extend_from_slice(&[0xFF, 0xFF, MP_DISABLE_PACKING]);
        enc.extend_from_slice(b";LAYER_CHANGE\n");
        enc.extend_from_slice(&[0xFF, 0xFF, MP_ENABLE_PACKING]);
        pack_line("G0 Z3 W1", &mut enc);
        let mut out = Vec::new();
        meatpack_decode(&enc, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("text"),
            "G1 X10.5 Y20 E.25\nG1 F1200\n;LAYER_CHANGE\nG0 Z3 W1\n"
        );
    }

    #[test]
    fn heatshrink_literals_and_back_references() {
        // "abcabcabc": three literals, then a back-reference of distance 3, length 6
        // (window 8 bits, look-ahead 4 bits for a short test).
        let mut bits = String::new();
        for &c in b"abc" {
            bits.push('1');
            bits.push_str(&format!("{c:08b}"));
        }
        bits.push('0');
        bits.push_str(&format!("{:08b}", 3 - 1));
        bits.push_str(&format!("{:04b}", 6 - 1));
        while !bits.len().is_multiple_of(8) {
            bits.push('0');
        }
        let data: Vec<u8> = bits
            .as_bytes()
            .chunks(8)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).expect("bits"), 2).expect("bits"))
            .collect();
        let mut out = Vec::new();
        heatshrink_decode(&data, 8, 4, 9, &mut out).expect("decodes");
        assert_eq!(out, b"abcabcabc");
        let mut short = Vec::new();
        assert!(heatshrink_decode(&data, 8, 4, 20, &mut short).is_err());
    }

    fn block(kind: u16, compression: u16, params: &[u8], raw_size: u32, data: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&kind.to_le_bytes());
        b.extend_from_slice(&compression.to_le_bytes());
        b.extend_from_slice(&raw_size.to_le_bytes());
        if compression != 0 {
            b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        }
        b.extend_from_slice(params);
        b.extend_from_slice(data);
        let crc = crc32(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    fn file(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut f = b"GCDE".to_vec();
        f.extend_from_slice(&1_u32.to_le_bytes());
        f.extend_from_slice(&1_u16.to_le_bytes());
        for b in blocks {
            f.extend_from_slice(b);
        }
        f
    }

    #[test]
    fn a_file_of_plain_and_deflated_blocks_decodes() {
        let meta = b"Producer=test\n";
        let deflated = miniz_oxide::deflate::compress_to_vec_zlib(b"G1 X2\nG1 Y3\n", 6);
        let f = file(&[
            block(0, 0, &[0, 0], meta.len() as u32, meta),
            block(1, 0, &[0, 0], 6, b"G28\nM8"),
            block(1, 1, &[0, 0], 12, &deflated),
        ]);
        assert_eq!(decode_gcode(&f).expect("decodes"), b"G28\nM8G1 X2\nG1 Y3\n");
        let reader = BgcodeReader::new(&f).expect("header");
        assert_eq!(
            reader.metadata(BlockType::FileMetadata).expect("metadata"),
            vec![("Producer".to_owned(), "test".to_owned())]
        );
    }

    #[test]
    fn damage_is_an_error_naming_the_block() {
        let good = file(&[block(1, 0, &[0, 0], 4, b"G28\n")]);
        let mut bad = good.clone();
        bad[22] ^= 1;
        assert_eq!(
            decode_gcode(&bad),
            Err(BgcodeError::Block {
                offset: 10,
                problem: BlockProblem::Checksum {
                    stored: u32::from_le_bytes(good[24..28].try_into().expect("4 bytes")),
                    computed: crc32(&bad[10..24]),
                },
            })
        );
        assert!(matches!(
            decode_gcode(&good[..good.len() - 1]),
            Err(BgcodeError::Block {
                offset: 10,
                problem: BlockProblem::Truncated
            })
        ));
        assert_eq!(decode_gcode(b"G1 X1\n"), Err(BgcodeError::NotBgcode));
        let mut v2 = good.clone();
        v2[4] = 2;
        assert_eq!(decode_gcode(&v2), Err(BgcodeError::Version(2)));
        let unknown = file(&[block(9, 0, &[0, 0], 0, b"")]);
        assert!(matches!(
            decode_gcode(&unknown),
            Err(BgcodeError::Block {
                problem: BlockProblem::Type(9),
                ..
            })
        ));
    }
}
