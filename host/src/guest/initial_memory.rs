//! How a plugin's documents get their initial linear memory: copied into each instance,
//! or mapped copy-on-write from one image shared by all of them. The choice is made per
//! plugin version, from how many bytes its data segments set.
//!
//! Mapping is what large images need (a Python component sets about 18 MB, a JavaScript
//! one over 1 MB): each document then holds only the pages it writes. But a slot of the
//! instance pool keeps the image of the version it last held, so a hot reload that moves
//! a document to a new version replaces that mapping twice (two `mmap` calls, the page
//! tables of both torn down), which was the larger part of a migration's cost. A Rust
//! consumer sets a few kilobytes: copying them takes less than one of those calls, and
//! the pages a document touches are the same either way. Measured with the relay, 10,000
//! documents on one lane: the lane's CPU time for a hot reload fell by about a third, with
//! the same cold-open latency and the same memory per idle document.

use wasmparser::{Parser, Payload};

/// Plugins whose data segments set at most this many bytes have them copied into each
/// instance; larger ones are mapped. 64 KiB is 16 pages: copying them costs about what
/// the two `mmap` calls of an image swap cost, and keeps an idle document's memory
/// within the 64 KiB target even if it touches none of them.
pub const COPY_LIMIT: u64 = 64 * 1024;

/// How the instances of one plugin version get their initial memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySetup {
    /// The data segments are copied into each instance's memory.
    Copied,
    /// One copy-on-write image, mapped into each instance's memory.
    Mapped,
}

impl MemorySetup {
    /// The setup for a component of these bytes. A component that cannot be parsed gets
    /// [`MemorySetup::Mapped`], the default: compiling it reports what is wrong.
    pub fn for_component(component: &[u8]) -> MemorySetup {
        match data_bytes(component) {
            Ok(bytes) if bytes <= COPY_LIMIT => MemorySetup::Copied,
            _ => MemorySetup::Mapped,
        }
    }

    /// A short name, for logs and file names.
    pub fn name(self) -> &'static str {
        match self {
            MemorySetup::Copied => "copied",
            MemorySetup::Mapped => "mapped",
        }
    }
}

/// The bytes set by the data segments of every core module in `component` (nested
/// modules included).
pub fn data_bytes(component: &[u8]) -> Result<u64, wasmparser::BinaryReaderError> {
    let mut total = 0u64;
    for payload in Parser::new(0).parse_all(component) {
        if let Payload::DataSection(reader) = payload? {
            for data in reader {
                total += data?.data.len() as u64;
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len(), out);
        out.extend_from_slice(body);
    }

    /// A core module with one memory and one active data segment per entry of `lens`.
    fn module_with_data(lens: &[usize]) -> Vec<u8> {
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        section(5, &[1, 0x00, 4], &mut module); // one memory of 4 pages
        let mut data = Vec::new();
        leb(lens.len(), &mut data);
        for &len in lens {
            data.extend_from_slice(&[0x00, 0x41, 0x10, 0x0b]); // active, at i32.const 16
            leb(len, &mut data);
            data.resize(data.len() + len, b'x');
        }
        section(11, &data, &mut module);
        module
    }

    #[test]
    fn data_segments_are_counted() {
        assert_eq!(data_bytes(&module_with_data(&[100, 20])).unwrap(), 120);
        assert_eq!(data_bytes(&module_with_data(&[])).unwrap(), 0);
    }

    #[test]
    fn nested_modules_of_a_component_are_counted() {
        let mut component = b"\0asm\x0d\0\x01\0".to_vec();
        section(1, &module_with_data(&[4]), &mut component);
        section(1, &module_with_data(&[6]), &mut component);
        assert_eq!(data_bytes(&component).unwrap(), 10);
    }

    #[test]
    fn small_images_are_copied_large_ones_mapped() {
        assert_eq!(
            MemorySetup::for_component(&module_with_data(&[1000])),
            MemorySetup::Copied
        );
        assert_eq!(
            MemorySetup::for_component(&module_with_data(&[COPY_LIMIT as usize, 1])),
            MemorySetup::Mapped
        );
        assert_eq!(MemorySetup::for_component(b"not wasm"), MemorySetup::Mapped);
    }
}
