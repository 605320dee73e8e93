//! `wit-c`: what a C consumer needs besides clang, without installing `wit-bindgen-cli`
//! and `wasm-tools` (a 16-minute `cargo install` on CI).
//!
//! ```text
//! wit-c bindings WIT_DIR WORLD OUT_DIR   # = wit-bindgen c WIT_DIR --world WORLD --out-dir OUT_DIR
//! wit-c component CORE.wasm OUT.wasm     # = wasm-tools component new CORE.wasm
//!                                        #     --adapt wasi_snapshot_preview1=<reactor adapter> -o OUT.wasm
//! ```
//!
//! The adapter is the WASI preview1 reactor adapter of the wasmtime release the host uses,
//! shipped inside the `wasi-preview1-component-adapter-provider` crate (no download).

use std::path::Path;

use anyhow::{Context, bail};
use wit_bindgen_core::wit_parser::Resolve;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["bindings", wit, world, out] => bindings(Path::new(wit), world, Path::new(out)),
        ["component", core, out] => component(Path::new(core), Path::new(out)),
        _ => bail!(
            "usage:\n  wit-c bindings WIT_DIR WORLD OUT_DIR\n  wit-c component CORE.wasm OUT.wasm"
        ),
    }
}

/// Writes `{world}.h`, `{world}.c` and `{world}_component_type.o` into `out`.
fn bindings(wit: &Path, world: &str, out: &Path) -> anyhow::Result<()> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .with_context(|| format!("cannot read the WIT in {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some(world))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)?;
    std::fs::create_dir_all(out)?;
    for (name, contents) in files.iter() {
        let path = out.join(name);
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Turns a core module built by clang (with the component type embedded by the bindings'
/// object file) into a component, adapting its WASI preview1 imports to preview2.
fn component(core: &Path, out: &Path) -> anyhow::Result<()> {
    let module = std::fs::read(core).with_context(|| format!("cannot read {}", core.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)?
        .validate(true)
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .encode()
        .with_context(|| format!("cannot make a component of {}", core.display()))?;
    std::fs::write(out, component).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}
