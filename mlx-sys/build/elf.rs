//! Makes our cached `libmlx` locatable by absolute path from any binary linked against it.
//!
//! Cargo does not pass a library's `-rpath` link argument on to dependent crates, so a binary of
//! a crate that depends on `mlx-sys` (directly or not) would not find `libmlx` without
//! `LD_LIBRARY_PATH`. A shared library without a `DT_SONAME` is recorded in a binary's
//! `DT_NEEDED` under the path the linker was given; `link.rs` gives it the absolute path through
//! a one-line linker script. So, in our own cache only, the `DT_SONAME` entry of `libmlx.so` is
//! removed. Its `$ORIGIN`-relative RPATH (to the wheel's bundled BLAS) is untouched.
//!
//! On macOS the same is done with `install_name_tool -id <absolute path>`.

use crate::BuildResult;
use std::path::Path;

const DT_NULL: i64 = 0;
const DT_SONAME: i64 = 14;
const PT_DYNAMIC: u32 = 2;

pub fn make_self_locating(library: &Path) -> BuildResult<()> {
    if library.extension().is_some_and(|e| e == "dylib") {
        return crate::tools::run(
            std::process::Command::new("install_name_tool")
                .arg("-id")
                .arg(library)
                .arg(library),
            "setting libmlx's install name",
            "install_name_tool comes with the Xcode command line tools: `xcode-select --install`",
        )
        .map(|_| ());
    }
    let mut bytes =
        std::fs::read(library).map_err(|e| format!("cannot read {}: {e}", library.display()))?;
    if remove_soname(&mut bytes).map_err(|e| format!("{}: {e}", library.display()))? {
        std::fs::write(library, &bytes)
            .map_err(|e| format!("cannot write {}: {e}", library.display()))?;
    }
    Ok(())
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| "truncated ELF file".to_string())
}
fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| "truncated ELF file".to_string())
}
fn u64_at(b: &[u8], at: usize) -> Result<u64, String> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .ok_or_else(|| "truncated ELF file".to_string())
}

/// Removes the `DT_SONAME` entry of a 64-bit little-endian ELF shared object by moving the later
/// dynamic entries up one slot. Returns whether anything changed.
fn remove_soname(b: &mut [u8]) -> Result<bool, String> {
    if b.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let phoff = u64_at(b, 0x20)? as usize;
    let phentsize = u16_at(b, 0x36)? as usize;
    let phnum = u16_at(b, 0x38)? as usize;
    let dynamic = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|&ph| u32_at(b, ph) == Ok(PT_DYNAMIC))
        .ok_or("no PT_DYNAMIC segment")?;
    let start = u64_at(b, dynamic + 8)? as usize;
    let size = u64_at(b, dynamic + 32)? as usize;
    let entries = size / 16;
    let tag = |b: &[u8], i: usize| u64_at(b, start + i * 16).map(|t| t as i64);
    let Some(soname) = (0..entries).find(|&i| tag(b, i) == Ok(DT_SONAME)) else {
        return Ok(false);
    };
    let null = (soname..entries)
        .find(|&i| tag(b, i) == Ok(DT_NULL))
        .ok_or("dynamic section has no DT_NULL terminator")?;
    b.copy_within(
        start + (soname + 1) * 16..start + (null + 1) * 16,
        start + soname * 16,
    );
    b[start + null * 16..start + (null + 1) * 16].fill(0);
    Ok(true)
}
